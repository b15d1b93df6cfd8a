// Command dorad runs Dora's servers: `dorad dev` runs the whole platform in one
// process on embedded backends; the production roles run one part each.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "dorad:", err)
		os.Exit(1)
	}
}
