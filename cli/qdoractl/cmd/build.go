package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
)

// ErrBuildFailed is returned by `build` when the build ends FAILED.
var ErrBuildFailed = errors.New("build failed")

func (a *app) buildCmd() *cobra.Command {
	var dir string
	var noWait bool
	c := &cobra.Command{
		Use:   "build <ufop> [-dir <dir>] [--no-wait]",
		Short: "Upload a program package (a directory with ufop.yaml) and build a new version",
		Long: `build packs the directory (default: the current one; .git is skipped) as
tar.gz, uploads it and streams the build's log as it runs (with --json the log
goes to stderr), then prints the build's status and exits 1 when the build
failed. On a terminal a spinner shows the build is alive. A successful
build N makes the image <ufop>.vN; it does not switch the running version:
run "qdoractl ufopver <ufop> -c N" for that.`,
		Example: `  qdoractl build grepd
  qdoractl build grepd -dir ./examples/grepd
  qdoractl build grepd --no-wait`,
		Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			ufop := args[0]
			// The client would say a missing directory "has no ufop.yaml".
			if st, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("build %s: directory %s does not exist", ufop, dir)
			} else if err == nil && !st.IsDir() {
				return fmt.Errorf("build %s: %s is not a directory (-dir names the program package's directory, the one holding ufop.yaml)", ufop, dir)
			}
			b, err := cl.Build(cmd.Context(), ufop, dir)
			if err != nil {
				return err
			}
			if !a.jsonOut {
				fmt.Fprintf(a.stdout, "Build %s #%d started (image %s)\n", ufop, b.Number, b.Image)
			}
			if noWait {
				return a.show(b, func() error {
					fmt.Fprintf(a.stdout, "Run `qdoractl imageinfo %s` to follow it\n", ufop)
					return nil
				})
			}
			b, err = a.followBuild(cmd.Context(), cl, b)
			if err != nil {
				return err
			}
			if a.jsonOut {
				if err := a.printJSON(b); err != nil {
					return err
				}
			}
			if b.Status != dora.BuildSuccess {
				msg := b.Error
				if msg == "" {
					msg = b.Status
				}
				return fmt.Errorf("%s #%d: %s; see `qdoractl buildlog %s -v %d`: %w", ufop, b.Number, msg, ufop, b.Number, ErrBuildFailed)
			}
			if !a.jsonOut {
				fmt.Fprintf(a.stdout, "Build success\nUfop: %s\nVersion: %d\nImage: %s\nRun `qdoractl ufopver %s -c %d` to switch to it\n",
					ufop, b.Number, b.Image, ufop, b.Number)
			}
			return nil
		}),
	}
	c.Flags().StringVar(&dir, "dir", ".", "directory holding ufop.yaml")
	c.Flags().BoolVar(&noWait, "no-wait", false, "return once the upload is accepted")
	return c
}

func (a *app) imageinfoCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "imageinfo <ufop>",
		Short:   "List a ufop's builds (versions, images, statuses)",
		Example: `  qdoractl imageinfo grepd`,
		Args:    cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			bs, err := cl.Builds(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.show(bs, func() error {
				rows := make([][]string, 0, len(bs))
				for _, b := range bs {
					rows = append(rows, []string{strconv.Itoa(b.Number), b.Image, b.Status, orDash(b.Base),
						fmtTime(b.Created), fmtTime(b.Finished), orDash(b.Error)})
				}
				return a.table([]string{"Version", "Image", "Status", "Base", "Created", "Finished", "Error"}, rows)
			})
		}),
	}
}

func (a *app) buildlogCmd() *cobra.Command {
	var n int
	var follow bool
	c := &cobra.Command{
		Use:   "buildlog <ufop> -v <version>",
		Short: "Print a build's log (the latest build without -v)",
		Example: `  qdoractl buildlog grepd -v 1
  qdoractl buildlog grepd
  qdoractl buildlog grepd -f`,
		Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			ufop := args[0]
			if n <= 0 {
				bs, err := cl.Builds(cmd.Context(), ufop)
				if err != nil {
					return err
				}
				if len(bs) == 0 {
					return fmt.Errorf("%s has no build yet", ufop)
				}
				for _, b := range bs {
					n = max(n, b.Number)
				}
			}
			if follow {
				return a.copyFollowed(cmd.Context(), func(ctx context.Context) (io.ReadCloser, error) {
					return cl.FollowBuildLog(ctx, ufop, n)
				})
			}
			rc, err := cl.BuildLog(cmd.Context(), ufop, n)
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = io.Copy(a.stdout, rc)
			return err
		}),
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing the log while the build runs")
	c.Flags().IntVarP(&n, "version", "v", 0, "build number")
	return c
}

func (a *app) ufopverCmd() *cobra.Command {
	var n int
	var protocol string
	c := &cobra.Command{
		Use:   "ufopver <ufop> -c <version>",
		Short: "Switch the running version to build N (blue/green)",
		Example: `  qdoractl ufopver grepd -c 1
  qdoractl ufopver wordcount -c 2 --protocol ufop`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if n <= 0 {
				return usagef("-c <version>: a build number is needed")
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			// --protocol only shapes the release the switch creates: an
			// existing release v<n> keeps its own, so say so rather than
			// ignore the flag silently.
			existing := ""
			if protocol != "" {
				existing = a.releaseProtocol(cmd.Context(), cl, args[0], fmt.Sprintf("v%d", n))
			}
			u, err := cl.SetVersion(cmd.Context(), args[0], n, protocol)
			if err != nil {
				return err
			}
			if existing != "" && existing != protocol {
				fmt.Fprintf(a.stderr, "warning: --protocol %s was not applied: release v%d of %s already exists and keeps its protocol, %s "+
					"(a release's protocol is set when it is created)\n"+
					"To run as %s, make a new release: build again (qdoractl build %s) and run qdoractl ufopver %s -c <new build> --protocol %s, "+
					"or give image %s.v%d a new verstr with protocol: %s in a dora.yaml (qdoractl release --config <dir>)\n",
					protocol, n, args[0], existing, protocol, args[0], args[0], protocol, args[0], n, protocol)
			}
			return a.show(u, func() error {
				fmt.Fprintf(a.stdout, "Ufop %s version switched to %s\n", u.Name, u.ActiveVersion)
				if u.PreviousVersion != "" {
					fmt.Fprintf(a.stdout, "%s keeps serving until %s has a healthy instance\n", u.PreviousVersion, u.ActiveVersion)
				}
				return nil
			})
		},
	}
	c.Flags().IntVarP(&n, "current", "c", 0, "build number to switch to")
	c.Flags().StringVar(&protocol, "protocol", "", "instance protocol of a new release: dora (POST /handler) or ufop (POST /uop); default: ufop.yaml's protocol, else ufop")
	return c
}

// releaseProtocol is the protocol of release version of ufop, "" when it
// does not exist or cannot be read (the warning it feeds is best effort).
func (a *app) releaseProtocol(ctx context.Context, cl *client.Client, ufop, version string) string {
	rs, err := cl.Releases(ctx, ufop)
	if err != nil {
		return ""
	}
	for _, r := range rs.Releases {
		if r.Version == version {
			return protocolName(r.Protocol)
		}
	}
	return ""
}

// protocolName is a release's protocol as shown: an unset one is dora.
func protocolName(p dora.Protocol) string {
	if p == "" {
		return string(dora.ProtocolDora)
	}
	return string(p)
}

// followBuild streams build b's log to the user while it runs (stdout, or
// stderr with --json so stdout stays one JSON document), with a spinner
// on a terminal, and returns the build once it has ended. A server that
// cannot follow, or a stream cut early, falls back to polling.
func (a *app) followBuild(ctx context.Context, cl *client.Client, b dora.Build) (dora.Build, error) {
	out := a.stdout
	if a.jsonOut {
		out = a.stderr
	}
	var sp *spinner
	if !a.jsonOut && isTerminal(a.stderr) {
		sp = startSpinner(a.stderr, fmt.Sprintf("building %s #%d", b.Ufop, b.Number))
		out = sp.Writer(out)
		defer func() {
			if sp != nil {
				sp.Stop()
			}
		}()
	}
	if rc, err := cl.FollowBuildLog(ctx, b.Ufop, b.Number); err == nil {
		_, err = io.Copy(out, rc)
		rc.Close()
		if ctx.Err() != nil {
			return b, fmt.Errorf("stopped following build %s #%d (it goes on; see `qdoractl imageinfo %s`): %w", b.Ufop, b.Number, b.Ufop, ctx.Err())
		}
	}
	last := b.Status
	b, err := cl.WaitBuild(ctx, b.Ufop, b.Number, a.pollInterval, func(nb dora.Build) { last = nb.Status })
	if err != nil {
		return b, err
	}
	if sp != nil {
		sp.Stop()
		sp = nil
	}
	if !a.jsonOut {
		fmt.Fprintf(a.stdout, "Status: %s\n", last)
	}
	return b, nil
}
