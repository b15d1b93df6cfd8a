package main

import (
	"strings"
	"testing"
)

// TestMaxImageJobsFlag: --max-image-jobs reaches platform's RouterConfig
// (0 leaving the router's default), and a negative value is refused by
// every command that runs built-in steps before anything starts.
func TestMaxImageJobsFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{{nil, 0}, {[]string{"--max-image-jobs", "3"}, 3}} {
		cfg, ok := parseRouterFlags(t, tc.args, "")
		if ok && cfg.MaxImageJobs != tc.want {
			t.Errorf("%v: MaxImageJobs %d, want %d", tc.args, cfg.MaxImageJobs, tc.want)
		}
	}
	parseRouterFlags(t, []string{"--max-image-jobs", "-1"}, "--max-image-jobs -1 must not be negative")
	for _, args := range [][]string{{"worker"}, {"dev", "--data-dir", t.TempDir()}} {
		cmd := args[0]
		err := runDorad(t, append(args, "--max-image-jobs", "-2")...)
		if err == nil || !strings.Contains(err.Error(), "--max-image-jobs -2 must not be negative") {
			t.Errorf("dorad %s --max-image-jobs -2: %v", cmd, err)
		}
	}
}
