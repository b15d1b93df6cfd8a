// Command dorad runs Dora's servers: `dorad dev` runs the whole platform in one
// process on embedded backends; the production roles run one part each.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/doraproject/dora/cli/platform"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs dorad with args and returns its exit code: 0 after a clean stop
// (Ctrl-C included), 2 for a usage error (unknown command, flag or config
// key), 1 when a server failed.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := withRunAsHint(root.Execute())
	if err != nil {
		fmt.Fprintln(stderr, "dorad:", err)
	}
	return exitCode(err)
}

// withRunAsHint adds to the refusal of a data directory the run-as user
// cannot reach (a checkout under a 0700 home such as /root, run as root)
// the way out the README gives for a single-user machine: --run-as self.
func withRunAsHint(err error) error {
	if err == nil || !errors.Is(err, platform.ErrConfig) || !strings.Contains(err.Error(), "cannot reach") ||
		!strings.Contains(err.Error(), "(run-as)") {
		return err
	}
	return fmt.Errorf("%w; or, on a single-user machine, run user code as dorad's own user: --run-as %s "+
		"(make run RUN_ARGS=\"--run-as %s\"), which gives it dorad's privileges (docs/security.md)",
		err, platform.RunAsSelf, platform.RunAsSelf)
}
