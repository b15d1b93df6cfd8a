// Command dorad runs Dora's servers: `dorad dev` runs the whole platform in one
// process on embedded backends; the production roles run one part each.
package main

import (
	"fmt"
	"io"
	"os"
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
	err := root.Execute()
	if err != nil {
		fmt.Fprintln(stderr, "dorad:", err)
	}
	return exitCode(err)
}
