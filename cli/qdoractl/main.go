// Command qdoractl is the Dora platform's command-line client; the commands
// live in package cmd so tests can run them in-process.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/doraproject/dora/cli/qdoractl/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := cmd.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
