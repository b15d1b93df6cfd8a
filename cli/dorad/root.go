package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/doraproject/dora/cli/buildinfo"
)

// newRootCommand builds the dorad command tree. Settings come from flags,
// then DORA_* environment variables, then the config file (--config).
func newRootCommand() *cobra.Command {
	v := viper.New()
	root := &cobra.Command{
		Use:           "dorad",
		Short:         "Dora servers: the embedded platform and the production roles",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return loadConfig(v, cmd)
		},
	}
	root.PersistentFlags().String("config", "", "config file (yaml, toml or json) with the same keys as the flags")
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().String("log-format", "text", "log format: text or json")
	root.AddCommand(newDevCommand(v))
	root.AddCommand(newAdminCommand(v))
	root.AddCommand(newRouterCommand(v))
	root.AddCommand(newAutoscalerCommand(v))
	root.AddCommand(newWorkerCommand(v))
	root.AddCommand(newVersionCommand())
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	return root
}

// usageError marks errors in how dorad was called (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// Exit codes of dorad.
const (
	exitOK    = 0
	exitError = 1 // a server failed to start or failed while running
	exitUsage = 2 // unknown command, flag or config key
)

// exitCode maps an Execute error to the process's exit code.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ue usageError
	msg := err.Error()
	if errors.As(err, &ue) || strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") ||
		strings.HasPrefix(msg, "unknown shorthand flag") || strings.Contains(msg, "accepts 0 arg(s)") {
		return exitUsage
	}
	return exitError
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print dorad's version (stamped at build time) and the Go toolchain it was built with",
		Args:  cobra.NoArgs,
		// version reads no config.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "dorad %s\n", buildinfo.Read())
			return err
		},
	}
}

// extraConfigKeys are config file keys that are no flag: structured
// settings (flavors) and the root keys (also DORA_ROOT_AK/SK).
var extraConfigKeys = []string{"flavors", "root_ak", "root_sk", "root-ak", "root-sk"}

// checkConfigKeys refuses a config file key that no dorad command knows: a
// typo ("data_dri") would otherwise start the server on defaults.
func checkConfigKeys(root *cobra.Command, path string) error {
	known := map[string]bool{}
	for _, k := range extraConfigKeys {
		known[k] = true
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		add := func(f *pflag.Flag) { known[f.Name] = true }
		c.LocalFlags().VisitAll(add)
		c.PersistentFlags().VisitAll(add)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	fv := viper.New()
	fv.SetConfigFile(path)
	if err := fv.ReadInConfig(); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	var unknown []string
	seen := map[string]bool{}
	for _, k := range fv.AllKeys() {
		top, _, _ := strings.Cut(k, ".")
		if !known[top] && !seen[top] {
			seen[top] = true
			unknown = append(unknown, top)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return usageError{fmt.Errorf("config file %s: unknown key(s) %s (keys are the flags' names, e.g. data-dir)", path, strings.Join(unknown, ", "))}
	}
	return nil
}

// loadConfig binds the command's flags to viper with DORA_ env names
// (--data-dir → DORA_DATA_DIR) and reads the config file when given.
func loadConfig(v *viper.Viper, cmd *cobra.Command) error {
	v.SetEnvPrefix("DORA")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	var bindErr error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if err := v.BindPFlag(f.Name, f); err != nil && bindErr == nil {
			bindErr = err
		}
	})
	if bindErr != nil {
		return bindErr
	}
	if path := v.GetString("config"); path != "" {
		if err := checkConfigKeys(cmd.Root(), path); err != nil {
			return err
		}
		v.SetConfigFile(path)
		if err := v.ReadInConfig(); err != nil {
			return fmt.Errorf("config file %s: %w", path, err)
		}
	}
	return checkValues(v, cmd)
}

// checkValues refuses a DORA_* variable or a config file value that the
// flag's type cannot read, as pflag refuses it on the command line: viper
// reads it as zero without a word (DORA_HOLD_TIMEOUT=30, a duration
// without a unit, would hold nothing; a map where a string goes is "").
func checkValues(v *viper.Viper, cmd *cobra.Command) error {
	var bad error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if bad != nil || f.Changed {
			return
		}
		env := "DORA_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		raw, source := any(nil), ""
		if s := os.Getenv(env); s != "" {
			raw, source = s, env
		} else if v.InConfig(f.Name) {
			raw, source = v.Get(f.Name), "config file "+v.ConfigFileUsed()+": "+f.Name
		} else {
			return
		}
		if err := checkValue(f.Value.Type(), raw); err != nil {
			if s, ok := raw.(string); ok && source == env {
				bad = usageError{fmt.Errorf("%s=%q: %w", env, s, err)}
			} else {
				bad = usageError{fmt.Errorf("%s: %v: %w", source, raw, err)}
			}
		}
	})
	return bad
}

// checkValue reports whether raw (a string from the environment, or what
// the config file holds) reads as a value of the pflag type typ.
func checkValue(typ string, raw any) error {
	var s string
	switch x := raw.(type) {
	case map[string]any, map[any]any:
		return fmt.Errorf("want a %s, not a map", typ)
	case []any:
		if typ == "stringSlice" {
			return nil // a list; its items are read where it is used
		}
		return fmt.Errorf("want a %s, not a list", typ)
	case float64: // JSON numbers
		if x == math.Trunc(x) && math.Abs(x) < 1<<63 {
			s = strconv.FormatInt(int64(x), 10)
		} else {
			s = strconv.FormatFloat(x, 'g', -1, 64)
		}
	default:
		s = fmt.Sprint(raw)
	}
	var err error
	switch typ {
	case "duration":
		if _, err = time.ParseDuration(s); err != nil {
			return fmt.Errorf("want a duration with a unit, e.g. 30s or 2m: %w", err)
		}
	case "bool":
		_, err = strconv.ParseBool(s)
	case "int", "int64":
		_, err = strconv.ParseInt(s, 0, 64)
	case "uint64":
		_, err = strconv.ParseUint(s, 0, 64)
	}
	if err != nil {
		return fmt.Errorf("want a %s: %w", typ, err)
	}
	return nil
}

// newLogger builds the process logger from --log-level and --log-format.
func newLogger(v *viper.Viper) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(v.GetString("log-level"))); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch v.GetString("log-format") {
	case "text", "":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, not %q", v.GetString("log-format"))
}
