package cmd

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
)

func (a *app) registerCmd() *cobra.Command {
	var desc, mode string
	c := &cobra.Command{
		Use:     "register <ufop> [-d <description>] [-m public|protected|private]",
		Aliases: []string{"reg"},
		Short:   "Register a ufop name (5-20 characters of a-z 0-9 - _)",
		Long: `register creates a ufop owned by you. The mode says whose buckets may use it:
public (0, root only), protected (1, accounts that "apply") or private (2, the
default: only your buckets). The older spelling "reg <ufop> -mode 1 -desc ..." works too.`,
		Example: `  qdoractl register doraufoptest -m private -d 'it is a test!'
  qdoractl reg grepd -mode 1 -desc "demo ufop"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := dora.ParseMode(mode)
			if err != nil {
				return usageError{err}
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			u, err := cl.RegisterUfop(cmd.Context(), args[0], desc, m)
			if err != nil {
				return err
			}
			return a.show(u, func() error {
				fmt.Fprintf(a.stdout, "Register success\nUfop: %s\nMode: %s\nDesc: %s\n", u.Name, strings.ToUpper(u.Mode.String()), u.Desc)
				return nil
			})
		},
	}
	c.Flags().StringVarP(&desc, "description", "d", "", "description")
	c.Flags().StringVar(&desc, "desc", "", "description (qufopctl spelling)")
	c.Flags().StringVarP(&mode, "mode", "m", "private", "access mode: public|protected|private or 0|1|2")
	return c
}

func (a *app) modeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "mode <ufop> <public|protected|private|0|1|2>",
		Short: "Change a ufop's access mode after register",
		Long: `mode changes whose buckets may use the ufop: public (0, root only), protected
(1, accounts that "apply") or private (2, only your buckets). The router applies
the new mode to the next request.`,
		Example: `  qdoractl mode grepd protected
  qdoractl mode grepd 2`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := dora.ParseMode(args[1])
			if err != nil {
				return usageError{err}
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			u, err := cl.SetUfopMode(cmd.Context(), args[0], m)
			if err != nil {
				return err
			}
			return a.show(u, func() error {
				fmt.Fprintf(a.stdout, "Ufop %s access mode: %s\n", u.Name, strings.ToUpper(u.Mode.String()))
				return nil
			})
		},
	}
}

func (a *app) unregisterCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "unregister <ufop>",
		Short:   "Remove a ufop: stops its deployments, drops its releases and builds",
		Example: `  qdoractl unregister grepd`,
		Args:    cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			if err := cl.DeleteUfop(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Unregister success: %s\n", args[0])
			return nil
		}),
	}
}

// infoVersion is a version as qufopctl info prints it: a build's "v3" is
// "3" (seed 001 shows "Version: 1"); any other verstr is printed as is.
func infoVersion(v string) string {
	if n, ok := strings.CutPrefix(v, "v"); ok && n != "" && strings.Trim(n, "0123456789") == "" {
		return n
	}
	return v
}

// printInfo writes the qufopctl info layout.
func (a *app) printInfo(u client.UfopInfo) {
	created := "-"
	if !u.Created.IsZero() {
		created = u.Created.Local().Format("2006-01-02 15:04:05 -0700 MST")
	}
	fmt.Fprintf(a.stdout, "Ufop name: %s\nOwner: %s\nVersion: %s\nAccess mode: %s\nDescription: %s\nCreate time: %s\nInstance num: %d\nMax instanceNum: %d\nFlavor: %s\nAccess list: %s\n",
		u.Name, u.Owner, orDash(infoVersion(u.ActiveVersion)), strings.ToUpper(u.Mode.String()), u.Desc, created,
		u.InstanceNum, u.MaxInstanceNum, orDash(u.Flavor), strings.Join(u.AccessList, " "))
	if u.PreviousVersion != "" {
		fmt.Fprintf(a.stdout, "Previous version: %s\n", u.PreviousVersion)
	}
	if u.Autoscale != nil {
		fmt.Fprintf(a.stdout, "Autoscale: %s\n", policyText(*u.Autoscale))
	}
}

func (a *app) infoCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "info <ufop>",
		Short:   "Show a ufop (owner, active version, mode, instances, access list)",
		Example: `  qdoractl info grepd`,
		Args:    cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			u, err := cl.GetUfop(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.show(u, func() error { a.printInfo(u); return nil })
		}),
	}
}

func (a *app) listCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List your ufops and the ones you may use",
		Example: `  qdoractl list`,
		Args:    cobra.NoArgs,
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			us, err := cl.ListUfops(cmd.Context())
			if err != nil {
				return err
			}
			return a.show(us, func() error {
				rows := make([][]string, 0, len(us))
				for _, u := range us {
					rows = append(rows, []string{u.Name, u.Owner, strings.ToUpper(u.Mode.String()), orDash(u.ActiveVersion),
						strconv.Itoa(u.InstanceNum), u.Desc})
				}
				return a.table([]string{"Name", "Owner", "Mode", "Version", "Instances", "Desc"}, rows)
			})
		}),
	}
}

func (a *app) applyCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "apply <ufop>",
		Short:   "Add a protected ufop to the ones your buckets may use",
		Example: `  qdoractl apply grepd`,
		Args:    cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			acct, err := cl.ApplyUfop(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.show(acct, func() error {
				fmt.Fprintf(a.stdout, "Apply success: %s\nApplied: %s\n", args[0], strings.Join(acct.Applied, " "))
				return nil
			})
		}),
	}
}

func (a *app) unapplyCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "unapply <ufop>",
		Short:   "Remove a ufop from the ones your buckets may use",
		Example: `  qdoractl unapply grepd`,
		Args:    cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, args []string, cl *client.Client) error {
			acct, err := cl.UnapplyUfop(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.show(acct, func() error {
				fmt.Fprintf(a.stdout, "Unapply success: %s\nApplied: %s\n", args[0], orDash(strings.Join(acct.Applied, " ")))
				return nil
			})
		}),
	}
}
