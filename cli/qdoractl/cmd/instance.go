package cmd

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/internal/api"
)

// maxRange caps how many instances one -range may name.
const maxRange = 10000

// parseSelection turns -index i or -range a:b (1-based, inclusive) into a
// list of indexes; neither means all (nil).
func parseSelection(index int, rng string) ([]int, error) {
	if index != 0 && rng != "" {
		return nil, usagef("give -index or -range, not both")
	}
	if index < 0 {
		return nil, usagef("-index %d: instance indexes start at 1", index)
	}
	if index > 0 {
		return []int{index}, nil
	}
	if rng == "" {
		return nil, nil
	}
	as, bs, ok := strings.Cut(rng, ":")
	lo, err1 := strconv.Atoi(strings.TrimSpace(as))
	hi, err2 := strconv.Atoi(strings.TrimSpace(bs))
	if !ok || err1 != nil || err2 != nil {
		return nil, usagef("-range %q: want <start>:<end>, e.g. 1:5", rng)
	}
	if lo < 1 || hi < lo {
		return nil, usagef("-range %q: want 1 <= start <= end", rng)
	}
	if hi-lo+1 > maxRange {
		return nil, usagef("-range %q: at most %d instances", rng, maxRange)
	}
	out := make([]int, 0, hi-lo+1)
	for i := lo; i <= hi; i++ {
		out = append(out, i)
	}
	return out, nil
}

// selectionClient is how the commands acting on some instances start: the
// parsed -index/-range (usage errors come first), then the API client. An
// -index or -range given on the command line must name instances: "-index
// 0" or an empty "-range" is refused, not read as "all".
func (a *app) selectionClient(cmd *cobra.Command, index int, rng string) ([]int, *client.Client, error) {
	if cmd.Flags().Changed("index") && index < 1 {
		return nil, nil, usagef("-index %d: instance indexes start at 1 (leave out -index and -range for all)", index)
	}
	if cmd.Flags().Changed("range") && strings.TrimSpace(rng) == "" {
		return nil, nil, usagef("-range needs <start>:<end>, e.g. 1:5 (leave out -index and -range for all)")
	}
	sel, err := parseSelection(index, rng)
	if err != nil {
		return nil, nil, err
	}
	cl, err := a.client()
	if err != nil {
		return nil, nil, err
	}
	return sel, cl, nil
}

// selectionFlags adds -index, -range and --region to c.
func selectionFlags(c *cobra.Command, index *int, rng, region *string) {
	c.Flags().IntVar(index, "index", 0, "one instance, 1-based")
	c.Flags().StringVar(rng, "range", "", "instances <start>:<end>, 1-based, inclusive")
	c.Flags().StringVarP(region, "region", "r", "", "region (default: the platform's)")
}

func (a *app) instanceCmd(verb string) *cobra.Command {
	var index int
	var rng, region string
	c := &cobra.Command{
		Use:   verb + " <ufop> [-index <i> | -range <a:b>] [--region <r>]",
		Short: strings.ToUpper(verb[:1]) + verb[1:] + " instances of the active version (all without -index/-range)",
		Example: fmt.Sprintf(`  qdoractl %[1]s grepd -index 1
  qdoractl %[1]s grepd -range 1:5
  qdoractl %[1]s grepd`, verb),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sel, cl, err := a.selectionClient(cmd, index, rng)
			if err != nil {
				return err
			}
			if verb == "stop" {
				err = cl.StopInstances(cmd.Context(), args[0], region, sel)
			} else {
				err = cl.StartInstances(cmd.Context(), args[0], region, sel)
			}
			if err != nil {
				return err
			}
			which := "all instances"
			if len(sel) > 0 {
				which = "instance(s) " + describeSelection(index, rng)
			}
			fmt.Fprintf(a.stdout, "%s success: %s %s\n", strings.ToUpper(verb[:1])+verb[1:], args[0], which)
			return nil
		},
	}
	selectionFlags(c, &index, &rng, &region)
	return c
}

func describeSelection(index int, rng string) string {
	if index > 0 {
		return strconv.Itoa(index)
	}
	return rng
}

func (a *app) stateCmd() *cobra.Command {
	var index int
	var rng, region string
	var all bool
	c := &cobra.Command{
		Use:   "state <ufop> [-index <i> | -range <a:b>] [--region <r>]",
		Short: "Show the state of instances of the active version",
		Example: `  qdoractl state grepd
  qdoractl state grepd -index 1
  qdoractl state grepd -range 1:3 --region z0`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sel, cl, err := a.selectionClient(cmd, index, rng)
			if err != nil {
				return err
			}
			is, err := cl.Instances(cmd.Context(), args[0], region, all)
			if err != nil {
				return err
			}
			is = filterInstances(is, sel)
			return a.show(is, func() error {
				now := time.Now()
				rows := make([][]string, 0, len(is))
				for _, i := range is {
					rows = append(rows, instanceRow(i, now))
				}
				return a.table([]string{"Index", "Id", "State", "Healthy", "Pid", "Addr", "Restarts", "Uptime", "Message"}, rows)
			})
		},
	}
	selectionFlags(c, &index, &rng, &region)
	c.Flags().BoolVar(&all, "all", false, "instances of every deployment, not only the active version's")
	return c
}

func filterInstances(is []api.InstanceStatus, sel []int) []api.InstanceStatus {
	if sel == nil {
		return is
	}
	want := make(map[int]bool, len(sel))
	for _, i := range sel {
		want[i] = true
	}
	out := is[:0:0]
	for _, i := range is {
		if want[i.Index] {
			out = append(out, i)
		}
	}
	return out
}

func instanceRow(i api.InstanceStatus, now time.Time) []string {
	pid, uptime := "-", "-"
	if i.PID > 0 {
		pid = strconv.Itoa(i.PID)
	}
	if !i.Started.IsZero() && i.State == api.StateRunning {
		uptime = now.Sub(i.Started).Truncate(time.Second).String()
	}
	return []string{strconv.Itoa(i.Index), i.ID, i.State, strconv.FormatBool(i.Healthy), pid, orDash(i.Addr),
		strconv.Itoa(i.Restarts), uptime, i.Message}
}

func (a *app) logtailCmd() *cobra.Command {
	var index, tail int
	var typ, region string
	var follow bool
	c := &cobra.Command{
		Use:   "logtail <ufop> -index <i> [-type stdout|stderr] [-tail <n>] [-f]",
		Short: "Print the last lines of an instance's output (each line starts with its timestamp)",
		Long: `logtail prints the last lines of an instance's stdout or stderr. With -f it
keeps following: new lines print as the instance writes them, until Ctrl-C
(exit 0) or the instance goes away.`,
		Example: `  qdoractl logtail grepd -index 1 -type stdout -tail 200
  qdoractl logtail grepd -index 2 -type stderr
  qdoractl logtail grepd -index 1 -f`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if index < 1 {
				return usagef("-index <i> (1-based) is required")
			}
			if typ != "stdout" && typ != "stderr" {
				return usagef("-type must be stdout or stderr, not %q", typ)
			}
			if tail < 0 {
				return usagef("-tail must not be negative")
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			if !follow {
				rc, err := cl.InstanceLogs(cmd.Context(), args[0], index, region, typ, tail)
				if err != nil {
					return err
				}
				defer rc.Close()
				_, err = io.Copy(a.stdout, rc)
				return err
			}
			return a.copyFollowed(cmd.Context(), func(ctx context.Context) (io.ReadCloser, error) {
				return cl.FollowInstanceLogs(ctx, args[0], index, region, typ, tail)
			})
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines until Ctrl-C")
	c.Flags().IntVar(&index, "index", 0, "instance, 1-based")
	c.Flags().StringVar(&typ, "type", "stdout", "stdout or stderr")
	c.Flags().IntVar(&tail, "tail", 100, "number of lines")
	c.Flags().StringVarP(&region, "region", "r", "", "region (default: the platform's)")
	return c
}

// parseTimeArg reads --from/--to: RFC 3339, "2006-01-02 15:04:05" or
// "2006-01-02" in local time, or a duration meaning that long ago ("1h").
func parseTimeArg(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, usagef("time %q: want RFC 3339, \"2006-01-02 15:04:05\", a date, or a duration ago such as 1h", s)
}

func (a *app) logCmd() *cobra.Command {
	var q client.LogQuery
	var from, to string
	c := &cobra.Command{
		Use:   "log <ufop> <version> [--region r] [--instance i] [--from t] [--to t] [-k text]",
		Short: "Search the lines of a release's log files (log_file_paths of dora.yaml)",
		Example: `  qdoractl log grepd v1
  qdoractl log grepd v1 --instance 1 --from 1h -k error
  qdoractl log grepd v1 --from "2026-01-02 03:00:00" --to "2026-01-02 04:00:00"`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			now := time.Now()
			var err error
			if q.From, err = parseTimeArg(from, now); err != nil {
				return err
			}
			if q.To, err = parseTimeArg(to, now); err != nil {
				return err
			}
			if !q.From.IsZero() && !q.To.IsZero() && q.To.Before(q.From) {
				return usagef("--to is before --from")
			}
			if q.Instance < 0 {
				return usagef("--instance must be 1 or more")
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			q.Version = args[1]
			rc, err := cl.Logs(cmd.Context(), args[0], q)
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = io.Copy(a.stdout, rc)
			return err
		},
	}
	c.Flags().StringVarP(&q.Region, "region", "r", "", "region (default: the platform's)")
	c.Flags().IntVar(&q.Instance, "instance", 0, "only this instance (1-based)")
	c.Flags().StringVar(&from, "from", "", "lines at or after this time")
	c.Flags().StringVar(&to, "to", "", "lines before this time")
	c.Flags().StringVarP(&q.Keyword, "keyword", "k", "", "only lines containing this text")
	return c
}

// copyFollowed prints a followed stream until it ends or ctx ends (Ctrl-C:
// a clean end, exit 0, whatever the read was doing then).
func (a *app) copyFollowed(ctx context.Context, open func(context.Context) (io.ReadCloser, error)) error {
	rc, err := open(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer rc.Close()
	_, err = io.Copy(a.stdout, rc)
	if ctx.Err() != nil {
		return nil
	}
	return err
}
