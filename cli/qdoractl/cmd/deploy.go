package cmd

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
)

func deploymentRow(d dora.Deployment) []string {
	return []string{d.Version, strconv.Itoa(d.Expect), d.Region, fmtTime(d.Created), d.ID, d.Status, d.Message}
}

var deploymentHeader = []string{"Version", "Expect", "Region", "Created", "Id", "Status", "Message"}

func (a *app) deployCmd() *cobra.Command {
	var req client.DeployRequest
	var id string
	var all, events bool
	c := &cobra.Command{
		Use:   "deploy <ufop> <version> --region <r> --expect <n> [--max <m>] | deploy <ufop> --id <id> | --all | --events --id <id>",
		Short: "Run a release in a region, or show deployments",
		Long: `deploy <ufop> <version> -r <region> -e <n> runs the release with at least n
instances (the autoscaler may add more, up to --max). Deploying a version that
already runs in the region changes its floor and ceiling. The first deployed
version becomes the active one; --activate switches to this version
blue/green.`,
		Example: `  qdoractl deploy doraufoptest v1 --region z0 --expect 2
  qdoractl deploy doraufoptest v2 -r z0 -e 1 --max 4 --activate
  qdoractl deploy doraufoptest --id deploy-aeff0dc6-b5de-11e6-88be-6c92bf2f06d8
  qdoractl deploy doraufoptest --all
  qdoractl deploy doraufoptest --events --id deploy-aeff0dc6-b5de-11e6-88be-6c92bf2f06d8`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ufop := args[0]
			if len(args) == 2 {
				if id != "" || all || events {
					return usagef("give either <version> with --expect, or --id/--all/--events")
				}
				if !cmd.Flags().Changed("expect") {
					return usagef("--expect <number> is required to deploy %s %s", ufop, args[1])
				}
				if req.Expect < 0 || req.Max < 0 {
					return usagef("--expect and --max must not be negative")
				}
				return a.deploy(cmd, ufop, args[1], req)
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			switch {
			case events:
				if id == "" {
					return usagef("--events needs --id <deployment id>")
				}
				es, err := cl.DeploymentEvents(cmd.Context(), ufop, id)
				if err != nil {
					return err
				}
				return a.show(es, func() error {
					rows := make([][]string, 0, len(es))
					for _, e := range es {
						rows = append(rows, []string{fmtTime(e.Time), strconv.Itoa(e.From), strconv.Itoa(e.To), e.Reason})
					}
					return a.table([]string{"Time", "From", "To", "Reason"}, rows)
				})
			case id != "":
				d, err := cl.Deployment(cmd.Context(), ufop, id)
				if err != nil {
					return err
				}
				return a.show(d, func() error {
					if err := a.table(deploymentHeader, [][]string{deploymentRow(d.Deployment)}); err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "Instances: %d desired, floor %d, ceiling %d\n", d.Desired, d.Expect, d.Max)
					if d.Autoscale != nil {
						fmt.Fprintf(a.stdout, "Autoscale: %s\n", policyText(*d.Autoscale))
					}
					return nil
				})
			case all:
				ds, err := cl.Deployments(cmd.Context(), ufop)
				if err != nil {
					return err
				}
				return a.show(ds, func() error {
					rows := make([][]string, 0, len(ds))
					for _, d := range ds {
						rows = append(rows, deploymentRow(d))
					}
					return a.table(deploymentHeader, rows)
				})
			}
			return usagef("give <version> --region <r> --expect <n>, --id <id>, --all or --events --id <id>")
		},
	}
	f := c.Flags()
	f.StringVarP(&req.Region, "region", "r", "", "region (qdoractl region lists them)")
	f.IntVarP(&req.Expect, "expect", "e", 0, "instance floor")
	f.IntVar(&req.Max, "max", 0, "instance ceiling for the autoscaler (default: 5, or your per-ufop instance limit if less, but at least --expect; recomputed when redeploying without --max)")
	f.Float64Var(&req.Target, "target", 0, "in-flight requests per instance the autoscaler aims at (default 10)")
	f.BoolVar(&req.Activate, "activate", false, "make this version the active one (blue/green)")
	f.StringVarP(&id, "id", "i", "", "show the deployment with this id")
	f.BoolVar(&all, "all", false, "list every deployment of the ufop")
	f.BoolVar(&events, "events", false, "with --id: list the deployment's scaling events")
	return c
}

func (a *app) deploy(cmd *cobra.Command, ufop, version string, req client.DeployRequest) error {
	cl, err := a.client()
	if err != nil {
		return err
	}
	req.Version = version
	d, err := cl.Deploy(cmd.Context(), ufop, req)
	if err != nil {
		return err
	}
	return a.show(d, func() error {
		fmt.Fprintf(a.stdout, "Deploy success\n")
		// The seed's text (the quick start's deploy), "you" included.
		fmt.Fprintf(a.stdout, "Please run `qdoractl deploy %s --id %s` to view you deploy\n", ufop, d.ID)
		fmt.Fprintf(a.stdout, "Please run `qdoractl release %s %s -d` to view you release\n", ufop, version)
		return nil
	})
}

func (a *app) resizeCmd() *cobra.Command {
	var num int
	var region string
	c := &cobra.Command{
		Use:   "resize <ufop> -num <n> [--region <r>]",
		Short: "Set the number of instances of the active version",
		Long: `resize <ufop> -num <n> sets the floor and the desired instance count of the
active version's deployment in the region to n, raising its ceiling to n if it
is lower. Without a deployment there it creates one, whose ceiling is 5, or
your per-ufop instance limit if less, but at least n (as deploy without --max).`,
		Example: `  qdoractl resize grepd -num 1
  qdoractl resize grepd --num 3 --region z0`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("num") {
				return usagef("-num <n> is required")
			}
			if num < 0 {
				return usagef("-num must not be negative")
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			d, err := cl.Resize(cmd.Context(), args[0], num, region)
			if err != nil {
				return err
			}
			return a.show(d, func() error {
				fmt.Fprintf(a.stdout, "Resize success: %s %s in %s expects %d instance(s)\nPlease run `qdoractl deploy %s --id %s` to view the deployment\n",
					args[0], d.Version, d.Region, d.Expect, args[0], d.ID)
				return nil
			})
		},
	}
	c.Flags().IntVar(&num, "num", 0, "instance floor and desired count (the ceiling rises to it if lower)")
	c.Flags().StringVarP(&region, "region", "r", "", "region (default: the platform's)")
	return c
}

// policyText renders the policy in force on one line.
func policyText(p dora.AutoscalePolicy) string {
	return fmt.Sprintf("target %g in flight per instance, stable window %v, panic window %v (threshold %g), "+
		"scale up ×%g / down ÷%g per step, cooldown up %v / down %v, every %v",
		p.Target, p.StableWindow, p.PanicWindow, p.PanicThreshold, p.MaxScaleUpRate, p.MaxScaleDownRate,
		p.ScaleUpCooldown, p.ScaleDownCooldown, p.EvaluationInterval)
}
