package cmd

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// completionTimeout bounds the API calls made to complete a word: a shell
// waiting on Tab must not hang on an unreachable endpoint.
const completionTimeout = 3 * time.Second

// Which commands complete which names (by the command's path without
// "qdoractl "). The names come from the API at Tab time.
var (
	ufopFirst    = []string{"build", "imageinfo", "buildlog", "ufopver", "deploy", "resize", "stop", "start", "state", "logtail", "log", "release", "unregister", "info", "apply", "unapply"}
	versionThen  = []string{"deploy", "log", "release"} // <ufop> <version>
	bucketFirst  = []string{"put", "ls", "stat", "get", "rm", "pfop", "bucket domain", "bucket rm"}
	buildNumFlag = map[string]string{"buildlog": "version", "ufopver": "current"}
)

// addCompletion wires dynamic completion of ufop, bucket, version, build
// number and region names into the tree.
func (a *app) addCompletion(root *cobra.Command) {
	byPath := map[string]*cobra.Command{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		byPath[strings.TrimPrefix(c.CommandPath(), root.Name()+" ")] = c
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	versions := map[string]bool{}
	for _, p := range versionThen {
		versions[p] = true
	}
	for _, p := range ufopFirst {
		c := byPath[p]
		if c == nil {
			continue
		}
		withVersion := versions[p]
		c.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			switch {
			case len(args) == 0:
				return a.complete(cmd, a.ufopNames)
			case len(args) == 1 && withVersion:
				ufop := args[0]
				return a.complete(cmd, func(ctx context.Context) ([]string, error) { return a.versionNames(ctx, ufop) })
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
	}
	for _, p := range bucketFirst {
		c := byPath[p]
		if c == nil {
			continue
		}
		isPut := p == "put"
		c.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			switch {
			case len(args) == 0:
				return a.complete(cmd, a.bucketNames)
			case isPut && len(args) == 2:
				return nil, cobra.ShellCompDirectiveDefault // the local file
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
	}
	for p, flag := range buildNumFlag {
		if c := byPath[p]; c != nil {
			_ = c.RegisterFlagCompletionFunc(flag, func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				if len(args) == 0 {
					return nil, cobra.ShellCompDirectiveNoFileComp
				}
				ufop := args[0]
				return a.complete(cmd, func(ctx context.Context) ([]string, error) { return a.buildNumbers(ctx, ufop) })
			})
		}
	}
	for _, c := range byPath {
		if c.Flags().Lookup("region") != nil {
			_ = c.RegisterFlagCompletionFunc("region", func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
				return a.complete(cmd, a.regionNames)
			})
		}
	}
}

// complete runs list against the API with the configured keys; any
// failure completes nothing rather than printing an error into the shell.
func (a *app) complete(cmd *cobra.Command, list func(ctx context.Context) ([]string, error)) ([]string, cobra.ShellCompDirective) {
	if err := a.loadConfig(cmd); err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	names, err := list(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

func (a *app) ufopNames(ctx context.Context) ([]string, error) {
	cl, err := a.client()
	if err != nil {
		return nil, err
	}
	us, err := cl.ListUfops(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(us))
	for _, u := range us {
		out = append(out, u.Name+"\t"+u.Desc)
	}
	return out, nil
}

func (a *app) bucketNames(ctx context.Context) ([]string, error) {
	cl, err := a.client()
	if err != nil {
		return nil, err
	}
	bs, err := cl.ListBuckets(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.Name)
	}
	return out, nil
}

func (a *app) versionNames(ctx context.Context, ufop string) ([]string, error) {
	cl, err := a.client()
	if err != nil {
		return nil, err
	}
	rs, err := cl.Releases(ctx, ufop)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rs.Releases))
	for _, r := range rs.Releases {
		out = append(out, r.Version+"\t"+r.Image)
	}
	return out, nil
}

func (a *app) buildNumbers(ctx context.Context, ufop string) ([]string, error) {
	cl, err := a.client()
	if err != nil {
		return nil, err
	}
	bs, err := cl.Builds(ctx, ufop)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		out = append(out, strconv.Itoa(b.Number)+"\t"+b.Status)
	}
	return out, nil
}

func (a *app) regionNames(ctx context.Context) ([]string, error) {
	cl, err := a.client()
	if err != nil {
		return nil, err
	}
	rs, err := cl.Regions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Name+"\t"+r.Desc)
	}
	return out, nil
}
