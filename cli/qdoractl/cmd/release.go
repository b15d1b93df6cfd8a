package cmd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/internal/api"
)

// maxDoraYAML caps the size of a dora.yaml.
const maxDoraYAML = 1 << 20

// ErrBadConfig wraps every problem of a dora.yaml.
var ErrBadConfig = errors.New("bad dora.yaml")

// doraYAMLTemplate is what `release --mkconfig` writes: the seed's example
// with the fields explained.
const doraYAMLTemplate = `---
# Release configuration, read by "qdoractl release --config <dir>".
ufopname: doraufoptest    # required: the ufop this release belongs to
verstr: v1                # required: the release's version
image: ufopdemo:v1        # required: an image listed by "qdoractl image" (pushed, or <ufop>.v<N> from a build)
desc: a demo
flavor: C1M1              # required: a flavor listed by "qdoractl flavor"
health_check:
  path: "/health"         # GET path answering 200 when healthy; remove health_check for a TCP check
  timeout: 3              # seconds between checks
log_file_paths: []        # files or directories whose lines "qdoractl log" searches
# env:
#   global:
#     - key: NAME
#       value: value
`

func (a *app) imageCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "image",
		Short:   "List your images: pushed OCI images and successful builds",
		Example: `  qdoractl image`,
		Args:    cobra.NoArgs,
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			is, err := cl.Images(cmd.Context())
			if err != nil {
				return err
			}
			return a.show(is, func() error {
				rows := make([][]string, 0, len(is))
				for _, i := range is {
					rows = append(rows, []string{i.Name, fmtTime(i.Created), i.Kind})
				}
				return a.table([]string{"Name", "Ctime", "Kind"}, rows)
			})
		}),
	}
}

func (a *app) releaseCmd() *cobra.Command {
	var mkconfig, config string
	var detail, force bool
	c := &cobra.Command{
		Use:   "release (--mkconfig <dir> | --config <dir> | <ufop> [version] -d)",
		Short: "Write a dora.yaml template, create a release from it, or show a ufop's releases",
		Long: `release --mkconfig <dir> writes a dora.yaml template into dir.
release --config <dir> creates the release described by <dir>/dora.yaml
(unknown fields are errors). release <ufop> -d shows the ufop's mode, its
releases and its deployments.`,
		Example: `  qdoractl release --mkconfig .
  qdoractl release --config .
  qdoractl release doraufoptest -d
  qdoractl release doraufoptest v1 -d`,
		Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case mkconfig != "" && config != "":
				return usagef("--mkconfig and --config exclude each other")
			case mkconfig != "":
				if len(args) > 0 {
					return usagef("--mkconfig takes no ufop argument")
				}
				return a.mkconfig(mkconfig, force)
			case config != "":
				if len(args) > 0 {
					return usagef("--config takes no ufop argument")
				}
				return a.releaseFromConfig(cmd, config)
			case len(args) == 0:
				return usagef("give --mkconfig <dir>, --config <dir> or <ufop> -d")
			}
			version := ""
			if len(args) == 2 {
				version = args[1]
			}
			return a.showReleases(cmd, args[0], version)
		},
	}
	c.Flags().StringVar(&mkconfig, "mkconfig", "", "write a dora.yaml template into this directory")
	c.Flags().StringVar(&config, "config", "", "create the release described by this directory's dora.yaml")
	c.Flags().BoolVarP(&detail, "detail", "d", false, "show the releases and deployments in detail")
	c.Flags().BoolVar(&force, "force", false, "with --mkconfig: overwrite an existing dora.yaml")
	return c
}

func (a *app) mkconfig(dir string, force bool) error {
	p := filepath.Join(dir, "dora.yaml")
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(p, flags, 0o644)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists (use --force to overwrite it)", p)
	}
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, doraYAMLTemplate); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "Wrote %s: edit it, then run `qdoractl release --config %s`\n", p, dir)
	return nil
}

var unknownFieldRE = regexp.MustCompile(`field (\S+) not found in type \S+`)

// ReadDoraYAML reads and strictly parses a dora.yaml (path to the file or
// to its directory): unknown fields are errors naming them, and the
// required fields must be set. Every problem is reported at once.
func ReadDoraYAML(path string) (client.ReleaseConfig, error) {
	var cfg client.ReleaseConfig
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "dora.yaml")
	}
	f, err := os.Open(path)
	if err != nil {
		return cfg, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxDoraYAML+1))
	if err != nil {
		return cfg, fmt.Errorf("%w: read %s: %w", ErrBadConfig, path, err)
	}
	if len(b) > maxDoraYAML {
		return cfg, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadConfig, path, maxDoraYAML)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return cfg, fmt.Errorf("%w: %s is empty", ErrBadConfig, path)
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			msgs := make([]string, len(te.Errors))
			for i, m := range te.Errors {
				msgs[i] = unknownFieldRE.ReplaceAllString(m, "unknown field $1")
			}
			return cfg, fmt.Errorf("%w: %s: %s", ErrBadConfig, path, strings.Join(msgs, "; "))
		}
		return cfg, fmt.Errorf("%w: %s: %w", ErrBadConfig, path, err)
	}
	var missing []string
	for _, f := range []struct{ name, val string }{
		{"ufopname", cfg.UfopName}, {"verstr", cfg.VerStr}, {"image", cfg.Image}, {"flavor", cfg.Flavor},
	} {
		if strings.TrimSpace(f.val) == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return cfg, fmt.Errorf("%w: %s: required field(s) missing: %s", ErrBadConfig, path, strings.Join(missing, ", "))
	}
	if cfg.LogFilePaths == nil {
		cfg.LogFilePaths = []string{}
	}
	// "desc: |" ends the text with a line break YAML adds, not the
	// user; the server takes one line.
	cfg.Desc = strings.TrimRight(cfg.Desc, "\r\n")
	if t := cfg.Timeouts; t != nil {
		t.Connect, t.FirstByte, t.Idle = seconds(t.Connect), seconds(t.FirstByte), seconds(t.Idle)
	}
	if c := cfg.Cache; c != nil {
		c.TTL = seconds(c.TTL)
	}
	return cfg, nil
}

// seconds turns a bare number of seconds ("30") into a duration string
// ("30s"); anything else is left for the server to judge.
func seconds(d api.Duration) api.Duration {
	s := strings.TrimSpace(string(d))
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return api.Duration(s + "s")
	}
	return api.Duration(s)
}

func (a *app) releaseFromConfig(cmd *cobra.Command, dir string) error {
	cfg, err := ReadDoraYAML(dir)
	if err != nil {
		return usageError{err}
	}
	cl, err := a.client()
	if err != nil {
		return err
	}
	r, err := cl.CreateRelease(cmd.Context(), cfg)
	if err != nil {
		return err
	}
	return a.show(r, func() error {
		fmt.Fprintf(a.stdout, "Build success\nUfop: %s\nVersion: %s\nImage: %s\nFlavor: %s\nDesc: %s\n",
			r.Ufop, r.Version, r.Image, r.Flavor, r.Desc)
		fmt.Fprintf(a.stdout, "You can also see the release via run `qdoractl release %s -d`\n", r.Ufop)
		return nil
	})
}

func (a *app) showReleases(cmd *cobra.Command, ufop, version string) error {
	cl, err := a.client()
	if err != nil {
		return err
	}
	rs, err := cl.Releases(cmd.Context(), ufop)
	if err != nil {
		return err
	}
	if version != "" {
		kept := rs.Releases[:0]
		for _, r := range rs.Releases {
			if r.Version == version {
				kept = append(kept, r)
			}
		}
		rs.Releases = kept
		deps := rs.Deployments[:0]
		for _, d := range rs.Deployments {
			if d.Version == version {
				deps = append(deps, d)
			}
		}
		rs.Deployments = deps
		if len(rs.Releases) == 0 {
			return fmt.Errorf("%s has no release %s", ufop, version)
		}
	}
	return a.show(rs, func() error {
		fmt.Fprintf(a.stdout, "Mode: %s\nReleases:\n", strings.ToUpper(rs.Mode))
		rows := make([][]string, 0, len(rs.Releases))
		for _, r := range rs.Releases {
			paths := "[" + strings.Join(r.LogFilePaths, " ") + "]"
			rows = append(rows, []string{r.Version, r.Image, r.Flavor, orDash(r.Desc), orDash(r.HealthCheck.Path),
				strconv.Itoa(r.HealthCheck.Timeout), paths, protocolName(r.Protocol)})
		}
		// The seeds' columns, in their order; Protocol is ours, last.
		if err := a.table([]string{"Version", "Image", "Flavor", "Desc", "Health Check Path", "Health Check Timeout", "LogFilePaths", "Protocol"}, rows); err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, "Deploys:")
		rows = rows[:0]
		for _, d := range rs.Deployments {
			rows = append(rows, []string{d.Version, d.Region, strconv.Itoa(d.Expect), strconv.Itoa(d.Desired),
				strconv.Itoa(d.Max), d.Status, d.ID})
		}
		return a.table([]string{"Version", "Region", "Expect", "Actual", "Max", "Status", "Id"}, rows)
	})
}
