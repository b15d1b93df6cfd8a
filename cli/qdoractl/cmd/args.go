package cmd

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// NormalizeArgs rewrites the older qufopctl's single-dash long flags
// ("-num 3", "-index=1", "-mode 1") to double-dash so that pflag does not
// read them as clusters of shorthands. A token is rewritten only when the
// name after the dash is longer than one letter and is the long name of a
// flag somewhere in root's command tree; everything after "--" is left
// alone. A flag value that happens to spell a long flag ("-k -num") must be
// written attached ("-k=-num").
func NormalizeArgs(root *cobra.Command, args []string) []string {
	names := longFlagNames(root)
	out := make([]string, 0, len(args))
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if len(name) > 1 && names[name] {
				a = "-" + a
			}
		}
		out = append(out, a)
	}
	return out
}

// longFlagNames collects the long names of every flag of every command.
func longFlagNames(root *cobra.Command) map[string]bool {
	names := map[string]bool{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		add := func(f *pflag.Flag) { names[f.Name] = true }
		c.LocalFlags().VisitAll(add)
		c.PersistentFlags().VisitAll(add)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	names["help"] = true
	return names
}
