package cmd

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/doraproject/dora/cli/buildinfo"
)

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print qdoractl's version (stamped at build time) and the Go toolchain it was built with",
		Example: `  qdoractl version
  qdoractl version --json`,
		Args: cobra.NoArgs,
		// version needs no config nor keys.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, args []string) error {
			in := buildinfo.Read()
			return a.show(in, func() error {
				_, err := fmt.Fprintf(a.stdout, "qdoractl %s\n", in)
				return err
			})
		},
	}
}
