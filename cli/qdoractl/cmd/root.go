// Package cmd is qdoractl's command tree: every command of the Dora quick
// start and of the older qufopctl guide, as a client of the admin API
// (admin/client). It is a package of its own so that end-to-end tests can run
// qdoractl's code in-process: Run(ctx, args, stdin, stdout, stderr).
package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
	"gopkg.in/yaml.v3"

	"github.com/doraproject/dora/admin/client"
)

// DefaultEndpoint is the admin API qdoractl talks to when nothing says otherwise.
const DefaultEndpoint = "http://127.0.0.1:8090"

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1 // the command failed (API error, I/O error)
	ExitUsage = 2 // bad flags or arguments
)

// Config keys in ~/.qdoractl/config.yaml and their environment variables.
const (
	keyEndpoint = "endpoint"
	keyAK       = "ak"
	keySK       = "sk"
)

// ErrNotLoggedIn is returned by commands that need keys when none are set.
var ErrNotLoggedIn = errors.New("not logged in: run `qdoractl login -u <access key> -p <secret key>` or set DORA_AK and DORA_SK")

// usageError marks errors in how the command was called (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// app is the state shared by the commands of one root command.
type app struct {
	v          *viper.Viper
	stdout     io.Writer
	stderr     io.Writer
	jsonOut    bool
	configPath string
	// newClient builds the API client; tests may replace it.
	newClient func(endpoint, ak, sk string) *client.Client
	// pollInterval paces the waits (build).
	pollInterval time.Duration
	// badConfig is why the config file could not be parsed, for a
	// command that replaces the file (login) and so runs without it.
	badConfig error
}

// replacesConfig is the annotation of a command that writes a whole new
// config file (login): a config file that cannot be parsed does not stop
// it.
const replacesConfig = "qdoractl/replaces-config"

// NewRootCommand returns qdoractl's command tree writing to stdout and
// stderr. Run it with Run (which also accepts the seeds' single-dash long
// flags) or with cobra's Execute after NormalizeArgs.
func NewRootCommand(stdout, stderr io.Writer) *cobra.Command {
	a := &app{v: viper.New(), stdout: stdout, stderr: stderr, newClient: client.New, pollInterval: time.Second}
	root := &cobra.Command{
		Use:   "qdoractl",
		Short: "qdoractl manages ufops, buckets and deployments of a Dora platform",
		Long: `qdoractl is the command-line client of a Dora platform's admin API.

It keeps its endpoint and keys in ~/.qdoractl/config.yaml (written by
"qdoractl login"); DORA_API, DORA_AK and DORA_SK override the file and --api
overrides everything. Single-dash long flags of the older qufopctl
("-num 3", "-index 1", "-mode 1") are accepted.`,
		Example: `  qdoractl login -u <access key> -p <secret key> --api http://127.0.0.1:8090
  qdoractl register grepd -m private -d 'it is a test!'
  qdoractl build grepd -dir ./grepd
  qdoractl ufopver grepd -c 1
  qdoractl resize grepd -num 1`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return a.loadConfig(cmd)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.String("api", "", "admin API endpoint (default "+DefaultEndpoint+"; env DORA_API)")
	pf.BoolVar(&a.jsonOut, "json", false, "print raw JSON instead of tables")
	pf.StringVar(&a.configPath, "config-file", "", "config file (default ~/.qdoractl/config.yaml; env QDORACTL_CONFIG)")
	pf.DurationVar(&a.pollInterval, "poll-interval", time.Second, "how often waits poll the API")
	_ = pf.MarkHidden("poll-interval")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })

	root.AddCommand(
		a.loginCmd(), a.logoutCmd(), a.whoamiCmd(),
		a.accountCmd(), a.regionCmd(), a.flavorCmd(),
		a.bucketCmd(), a.putCmd(), a.lsCmd(), a.statCmd(), a.getCmd(), a.rmCmd(),
		a.registerCmd(), a.modeCmd(), a.unregisterCmd(), a.infoCmd(), a.listCmd(), a.applyCmd(), a.unapplyCmd(),
		a.buildCmd(), a.imageinfoCmd(), a.buildlogCmd(), a.ufopverCmd(),
		a.pushCmd(), a.imageCmd(), a.releaseCmd(),
		a.pfopCmd(), a.prefopCmd(),
		a.deployCmd(), a.resizeCmd(),
		a.instanceCmd("stop"), a.instanceCmd("start"), a.stateCmd(), a.logtailCmd(), a.logCmd(),
		a.versionCmd(),
	)
	for _, c := range root.Commands() {
		wrapArgs(c)
	}
	refuseUnknownSubcommands(root)
	a.addCompletion(root)
	return root
}

// refuseUnknownSubcommands makes every command group (a command with
// subcommands and no action of its own) fail with a usage error (exit 2)
// and a suggestion on an unknown subcommand ("bucket lst"), where cobra
// would print help and exit 0. Without arguments a group prints its help.
func refuseUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !c.HasSubCommands() || c.Run != nil || c.RunE != nil || !c.HasParent() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	if c.SuggestionsMinimumDistance <= 0 {
		c.SuggestionsMinimumDistance = 2
	}
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
		}
		return usageError{errors.New(msg)}
	}
}

// wrapArgs marks positional-argument errors as usage errors, recursively.
func wrapArgs(c *cobra.Command) {
	if c.Args != nil {
		orig := c.Args
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := orig(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		wrapArgs(sub)
	}
}

// Run runs qdoractl with args (without the program name) and returns the
// process exit code; errors are printed to stderr with the API's message
// and request id.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := NewRootCommand(stdout, stderr)
	root.SetIn(stdin)
	root.SetArgs(NormalizeArgs(root, args))
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	err = tidyAuthRefusal(err)
	code := ExitError
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag") {
		code = ExitUsage
	}
	if jsonRequested(root, args) {
		writeJSONError(stderr, err, code)
		return code
	}
	fmt.Fprintf(stderr, "qdoractl: %v\n", err)
	if code == ExitUsage {
		fmt.Fprintln(stderr, "Run 'qdoractl --help' for usage.")
	}
	return code
}

// tidyAuthRefusal rewrites the message of a 401 the admin API gave a
// signature it could not verify: the server chains its layers' prefixes
// ("bad signature: unauthorized: bad token: signature mismatch (...)"),
// which reads as three errors; the user gets one sentence instead.
func tidyAuthRefusal(err error) error {
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != 401 {
		return err
	}
	msg := ae.Message
	for _, p := range []string{"bad signature: ", "unauthorized: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	if msg == ae.Message {
		return err
	}
	if strings.HasPrefix(msg, "bad token: signature mismatch") {
		msg = "the platform refused the keys: the access key is unknown or disabled, or the secret key is wrong"
	} else {
		msg = "the platform refused the request's signature: " + msg
	}
	before := ae.Error()
	ae.Message = msg
	// The wrappers (login to <endpoint>: ...) hold the old text.
	return retold{err, strings.Replace(err.Error(), before, ae.Error(), 1)}
}

// retold is an error told in other words; it unwraps to the original.
type retold struct {
	err error
	msg string
}

func (e retold) Error() string { return e.msg }
func (e retold) Unwrap() error { return e.err }

// jsonRequested reports whether --json was given, parsed or (when parsing
// failed before reaching it) present among the arguments.
func jsonRequested(root *cobra.Command, args []string) bool {
	if f := root.PersistentFlags().Lookup("json"); f != nil && f.Changed && f.Value.String() == "true" {
		return true
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "--json" || a == "--json=true" || a == "-json" {
			return true
		}
	}
	return false
}

// JSONError is how an error is printed with --json (on stderr, one line,
// so that stdout carries nothing but results): the message, the exit code
// and, for an API error, its HTTP status and request id.
type JSONError struct {
	Error  string `json:"error"`
	Code   int    `json:"code"`
	Status int    `json:"status,omitempty"`
	Reqid  string `json:"reqid,omitempty"`
}

func writeJSONError(w io.Writer, err error, code int) {
	je := JSONError{Error: err.Error(), Code: code}
	var ae *client.APIError
	if errors.As(err, &ae) {
		je.Error, je.Status, je.Reqid = ae.Message, ae.Status, ae.Reqid
	}
	b, _ := json.Marshal(je)
	fmt.Fprintf(w, "%s\n", b)
}

// defaultConfigPath is ~/.qdoractl/config.yaml.
func defaultConfigPath() (string, error) {
	if p := os.Getenv("QDORACTL_CONFIG"); p != "" {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find home directory: %w", err)
	}
	return filepath.Join(home, ".qdoractl", "config.yaml"), nil
}

// loadConfig reads the config file (absent is fine) and binds env and flags.
func (a *app) loadConfig(cmd *cobra.Command) error {
	if a.configPath == "" {
		p, err := defaultConfigPath()
		if err != nil {
			return err
		}
		a.configPath = p
	}
	a.v.SetConfigFile(a.configPath)
	a.v.SetConfigType("yaml")
	if err := a.v.ReadInConfig(); err != nil && !errors.Is(err, os.ErrNotExist) {
		var nf viper.ConfigFileNotFoundError
		var pe viper.ConfigParseError
		switch {
		case errors.As(err, &nf):
		case errors.As(err, &pe) && cmd.Annotations[replacesConfig] != "":
			a.badConfig = err // nothing of it was read: env, flags, defaults
		default:
			return fmt.Errorf("read %s: %w", a.configPath, err)
		}
	}
	a.v.SetDefault(keyEndpoint, DefaultEndpoint)
	_ = a.v.BindEnv(keyEndpoint, "DORA_API")
	_ = a.v.BindEnv(keyAK, "DORA_AK")
	_ = a.v.BindEnv(keySK, "DORA_SK")
	if f := cmd.Flags().Lookup("api"); f != nil {
		_ = a.v.BindPFlag(keyEndpoint, f)
	}
	return nil
}

func (a *app) endpoint() string { return a.v.GetString(keyEndpoint) }

// client returns an API client with the configured keys, or ErrNotLoggedIn.
func (a *app) client() (*client.Client, error) {
	ak, sk := a.v.GetString(keyAK), a.v.GetString(keySK)
	if ak == "" || sk == "" {
		return nil, ErrNotLoggedIn
	}
	c := a.newClient(a.endpoint(), ak, sk)
	if c.Endpoint() == "" {
		return nil, fmt.Errorf("endpoint %q: %w", a.endpoint(), client.ErrBadEndpoint)
	}
	return c, nil
}

// withClient is a command's RunE for commands that need the admin API
// first thing: it opens the client (failing with ErrNotLoggedIn or a bad
// endpoint before run is called) and passes it to run.
func (a *app) withClient(run func(cmd *cobra.Command, args []string, cl *client.Client) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		cl, err := a.client()
		if err != nil {
			return err
		}
		return run(cmd, args, cl)
	}
}

// fileConfig is the config file's content.
type fileConfig struct {
	Endpoint string `yaml:"endpoint,omitempty"`
	AK       string `yaml:"ak,omitempty"`
	SK       string `yaml:"sk,omitempty"`
}

// saveConfig writes the config file with mode 0600 in a 0700 directory,
// atomically. A config file that is a symlink stays one: its target is
// replaced, keeping its mode.
func (a *app) saveConfig(fc fileConfig) error {
	dir := filepath.Dir(a.configPath)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	if filepath.Base(dir) == ".qdoractl" {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("save config: %w", err)
		}
	}
	b, err := yaml.Marshal(fc)
	if err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	path, err := linkTarget(a.configPath)
	if err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	mode := os.FileMode(0o600)
	if path != a.configPath {
		if st, err := os.Stat(path); err == nil {
			mode = st.Mode().Perm()
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.yaml")
	if err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("save config: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("save config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save config: %w", err)
	}
	return nil
}

// maxLinks bounds the symlinks linkTarget follows (a loop).
const maxLinks = 40

// linkTarget follows path while it is a symlink and returns the file it
// ends at, which may not exist yet (a dangling link); path itself when it
// is not a link or does not exist.
func linkTarget(path string) (string, error) {
	for range maxLinks {
		st, err := os.Lstat(path)
		if errors.Is(err, os.ErrNotExist) {
			return path, nil
		}
		if err != nil {
			return "", err
		}
		if st.Mode()&os.ModeSymlink == 0 {
			return path, nil
		}
		to, err := os.Readlink(path)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(to) {
			// relative to the link's directory as the system resolves
			// it: "../x" in a symlinked directory leaves its target
			dir, err := filepath.EvalSymlinks(filepath.Dir(path))
			if err != nil {
				return "", err
			}
			to = filepath.Join(dir, to)
		}
		path = to
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", path)
}

// readFileConfig reads the config file only (no env, no flags).
func (a *app) readFileConfig() (fileConfig, error) {
	var fc fileConfig
	b, err := os.ReadFile(a.configPath)
	if errors.Is(err, os.ErrNotExist) {
		return fc, nil
	}
	if err != nil {
		return fc, fmt.Errorf("read %s: %w", a.configPath, err)
	}
	if err := yaml.Unmarshal(b, &fc); err != nil {
		return fc, fmt.Errorf("read %s: %w", a.configPath, err)
	}
	return fc, nil
}

// printJSON writes v as indented JSON.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes rows aligned in columns.
func (a *app) table(header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// show prints v as JSON when --json, else calls text.
func (a *app) show(v any, text func() error) error {
	if a.jsonOut {
		return a.printJSON(v)
	}
	return text()
}

// fmtTime renders a time as the seeds do ("2016-11-28 20:19:05"), local.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
