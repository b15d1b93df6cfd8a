package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
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
	return root
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
		v.SetConfigFile(path)
		if err := v.ReadInConfig(); err != nil {
			return fmt.Errorf("config file %s: %w", path, err)
		}
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
