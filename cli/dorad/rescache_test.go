package main

import (
	"testing"

	"github.com/doraproject/dora/router"
)

// TestRouterResultCacheFlags: --result-cache-bytes, --result-cache-dir and
// --result-cache-disk-bytes reach platform's RouterConfig (0 bytes meaning
// "no result cache"), and bad values are refused.
func TestRouterResultCacheFlags(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		mem, disk int64
		dir       string
		err       string
	}{
		{name: "defaults", mem: router.DefaultResultCacheBytes, disk: router.DefaultResultCacheDiskBytes},
		{name: "set", args: []string{"--result-cache-bytes", "1048576", "--result-cache-dir", "/var/cache/dora", "--result-cache-disk-bytes", "5000000"},
			mem: 1 << 20, dir: "/var/cache/dora", disk: 5_000_000},
		{name: "disabled", args: []string{"--result-cache-bytes", "0"}, mem: -1, disk: router.DefaultResultCacheDiskBytes},
		{name: "negative", args: []string{"--result-cache-bytes", "-5"}, err: "--result-cache-bytes -5 must not be negative"},
		{name: "no disk bytes", args: []string{"--result-cache-dir", "/x", "--result-cache-disk-bytes", "0"}, err: "--result-cache-disk-bytes 0 must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, ok := parseRouterFlags(t, tc.args, tc.err)
			if !ok {
				return
			}
			if cfg.ResultCacheBytes != tc.mem || cfg.ResultCacheDir != tc.dir || cfg.ResultCacheDiskBytes != tc.disk {
				t.Fatalf("ResultCacheBytes %d Dir %q DiskBytes %d, want %d %q %d",
					cfg.ResultCacheBytes, cfg.ResultCacheDir, cfg.ResultCacheDiskBytes, tc.mem, tc.dir, tc.disk)
			}
		})
	}
}
