package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"
)

// TestConfigValuesChecked: a DORA_* variable or a config file value the
// flag's type cannot read (a duration without a unit, a size with one, a
// bool spelled "yes", a map where a string goes) is refused as a usage
// error naming where it came from, as the same value given as a flag is,
// instead of reading as zero: DORA_HOLD_TIMEOUT=30 held nothing,
// DORA_RESULT_CACHE_BYTES=1GiB disabled the cache, a limits: map in the
// file set no limit. Values the type reads, from either source, still work.
func TestConfigValuesChecked(t *testing.T) {
	for _, c := range []struct {
		name    string
		cmd     string
		env     map[string]string
		file    string // config file content
		wantErr string // empty: accepted
	}{
		{name: "env duration without unit", cmd: "router", env: map[string]string{"DORA_HOLD_TIMEOUT": "30"}, wantErr: `DORA_HOLD_TIMEOUT="30"`},
		{name: "env duration word", cmd: "worker", env: map[string]string{"DORA_GRACE": "forever"}, wantErr: `DORA_GRACE="forever"`},
		{name: "env size with unit", cmd: "router", env: map[string]string{"DORA_RESULT_CACHE_BYTES": "1GiB"}, wantErr: `DORA_RESULT_CACHE_BYTES="1GiB"`},
		{name: "env bool yes", cmd: "router", env: map[string]string{"DORA_ALLOW_PRIVATE_MIRROR": "yes"}, wantErr: `DORA_ALLOW_PRIVATE_MIRROR="yes"`},
		{name: "env int word", cmd: "worker", env: map[string]string{"DORA_CONCURRENCY": "eight"}, wantErr: `DORA_CONCURRENCY="eight"`},
		{name: "file duration without unit", cmd: "autoscaler", file: "interval: 5\n", wantErr: "interval: 5"},
		{name: "file int word", cmd: "router", file: "max-held: many\n", wantErr: "max-held: many"},
		{name: "file map for a string", cmd: "worker", file: "limits:\n  video: 2\n", wantErr: "limits"},
		{name: "file list for a string", cmd: "router", file: "store: [a, b]\n", wantErr: "store"},
		{name: "env good", cmd: "router", env: map[string]string{"DORA_HOLD_TIMEOUT": "45s", "DORA_RESULT_CACHE_BYTES": "1048576", "DORA_ALLOW_PRIVATE_MIRROR": "true"}},
		{name: "file good", cmd: "router", file: "hold-timeout: 45s\nmax-held: 7\nresult-cache-bytes: 1073741824\nallow-private-mirror: true\ntrusted-proxies: [10.0.0.1, 10.0.0.0/8]\nregion: 1\n"},
		{name: "file zero duration", cmd: "worker", file: "grace: 0\nlimits: a=1,b=2\n"},
		{name: "json numbers", cmd: "router", file: `{"max-held": 7, "result-cache-bytes": 1073741824, "gc-floor": 0}`},
		{name: "file regions maps", cmd: "admin", file: "regions:\n  - name: z0\n    nomad_region: global\n  - z1\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for k, val := range c.env {
				t.Setenv(k, val)
			}
			v := viper.New()
			root := newRootCommand()
			var cmd = root
			for _, sub := range root.Commands() {
				if sub.Name() == c.cmd {
					cmd = sub
				}
			}
			var args []string
			if c.file != "" {
				name := "dorad.yaml"
				if strings.HasPrefix(c.file, "{") {
					name = "dorad.json"
				}
				args = append(args, "--config", writeFile(t, t.TempDir(), name, c.file))
			}
			if err := cmd.ParseFlags(args); err != nil {
				t.Fatal(err)
			}
			err := loadConfig(v, cmd)
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ue usageError
			if err == nil || !strings.Contains(err.Error(), c.wantErr) || !errors.As(err, &ue) {
				t.Fatalf("loadConfig = %v, want a usage error with %q", err, c.wantErr)
			}
		})
	}
	// The values read are the ones given.
	t.Setenv("DORA_HOLD_TIMEOUT", "45s")
	cfg, ok := parseRouterFlags(t, nil, "")
	if ok && cfg.HoldTimeout != 45*time.Second {
		t.Fatalf("DORA_HOLD_TIMEOUT=45s read as %v", cfg.HoldTimeout)
	}
}
