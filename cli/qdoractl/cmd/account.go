package cmd

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
)

func (a *app) accountCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "account",
		Short: "Manage accounts (root only)",
		Example: `  qdoractl account create alice --limit 5
  qdoractl account list
  qdoractl account disable 1366779853`,
	}
	var limit int
	create := &cobra.Command{
		Use:     "create <name>",
		Short:   "Create an account and print its keys",
		Example: `  qdoractl account create alice --limit 5`,
		Args:    cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			acct, err := cl.CreateAccount(cmd.Context(), args[0], limit)
			if err != nil {
				return err
			}
			return a.show(acct, func() error {
				fmt.Fprintf(a.stdout, "Id: %s\nName: %s\nAccess key: %s\nSecret key: %s\nInstance limit: %d\n",
					acct.ID, acct.Name, acct.AccessKey, acct.SecretKey, acct.Limit())
				return nil
			})
		}),
	}
	create.Flags().IntVar(&limit, "limit", 0, "instances per ufop (0: the platform default)")
	list := &cobra.Command{
		Use:     "list",
		Short:   "List accounts",
		Example: `  qdoractl account list`,
		Args:    cobra.NoArgs,
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			as, err := cl.ListAccounts(cmd.Context())
			if err != nil {
				return err
			}
			return a.show(as, func() error {
				rows := make([][]string, 0, len(as))
				for _, ac := range as {
					rows = append(rows, []string{ac.ID, orDash(ac.Name), ac.AccessKey, strconv.FormatBool(ac.Root),
						strconv.FormatBool(ac.Disabled), strconv.Itoa(ac.Limit()), fmtTime(ac.Created)})
				}
				return a.table([]string{"Id", "Name", "AccessKey", "Root", "Disabled", "InstanceLimit", "Created"}, rows)
			})
		}),
	}
	disable := &cobra.Command{
		Use:     "disable <id>",
		Short:   "Disable an account: its keys stop working",
		Example: `  qdoractl account disable 1366779853`,
		Args:    cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			acct, err := cl.DisableAccount(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.show(acct, func() error {
				fmt.Fprintf(a.stdout, "Account %s disabled\n", acct.ID)
				return nil
			})
		}),
	}
	c.AddCommand(create, list, disable)
	return c
}

func (a *app) regionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "region",
		Short:   "List the regions deployments can run in",
		Example: `  qdoractl region`,
		Args:    cobra.NoArgs,
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			rs, err := cl.Regions(cmd.Context())
			if err != nil {
				return err
			}
			return a.show(rs, func() error {
				rows := make([][]string, 0, len(rs))
				for _, r := range rs {
					rows = append(rows, []string{r.Name, r.Desc})
				}
				return a.table([]string{"Name", "Desc"}, rows)
			})
		}),
	}
}

func (a *app) flavorCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "flavor",
		Short:   "List the instance sizes a release can ask for",
		Example: `  qdoractl flavor`,
		Args:    cobra.NoArgs,
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			fs, err := cl.Flavors(cmd.Context())
			if err != nil {
				return err
			}
			return a.show(fs, func() error {
				return a.table([]string{"Name", "CPU(MHz)", "Memory(MiB)", "Desc"}, flavorRows(fs))
			})
		}),
	}
}

func flavorRows(fs []dora.Flavor) [][]string {
	rows := make([][]string, 0, len(fs))
	for _, f := range fs {
		rows = append(rows, []string{f.Name, strconv.Itoa(f.CPU), strconv.Itoa(f.MemoryMB), f.Desc})
	}
	return rows
}
