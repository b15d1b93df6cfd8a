package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"testing"

	"github.com/spf13/viper"
)

// TestRouterCommand runs `dorad router` on embedded backends: it serves
// /healthz and /metrics and stops cleanly on cancellation.
func TestRouterCommand(t *testing.T) {
	dir := t.TempDir()
	r := startDorad(t, "router", "--addr", "127.0.0.1:0", // the alias nomad-jobs uses
		"--store", "bolt://"+filepath.Join(dir, "meta.db"),
		"--objects", "file://"+filepath.Join(dir, "objects"))
	url := r.waitURL(t)
	if body := waitOK(t, url+"/healthz"); !strings.Contains(body, "ok") {
		t.Fatalf("/healthz = %q", body)
	}
	metrics := waitOK(t, url+"/metrics")
	for _, m := range []string{"dora_router_requests_total", "go_goroutines"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("router stopped with %v", err)
	}
}

// TestConfigSources checks that a setting comes from the flag, else from
// DORA_* env, else from the config file, with precise errors naming the URL.
func TestConfigSources(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "dorad.yaml")
	if err := os.WriteFile(cfg, []byte("store: ftp://from-file\nobjects: file://"+filepath.Join(dir, "objects")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := runDorad(t, "router", "--listen", "127.0.0.1:0", "--config", cfg)
	if err == nil || !strings.Contains(err.Error(), `unknown scheme "ftp"`) {
		t.Fatalf("config file store: %v", err)
	}
	t.Setenv("DORA_STORE", "etcd://from-env")
	err = runDorad(t, "router", "--listen", "127.0.0.1:0", "--config", cfg)
	if err == nil || !strings.Contains(err.Error(), `unknown scheme "etcd"`) {
		t.Fatalf("env store: %v", err)
	}
	err = runDorad(t, "router", "--listen", "127.0.0.1:0", "--config", cfg, "--store", "zk://from-flag")
	if err == nil || !strings.Contains(err.Error(), `unknown scheme "zk"`) {
		t.Fatalf("flag store: %v", err)
	}
	t.Setenv("DORA_STORE", "")
	t.Setenv("DORA_LOAD", "redis://")
	err = runDorad(t, "router", "--listen", "127.0.0.1:0", "--store", "bolt://"+filepath.Join(dir, "m.db"), "--objects", "file://"+dir)
	if err == nil || !strings.Contains(err.Error(), "load URL") || !strings.Contains(err.Error(), "missing host") {
		t.Fatalf("env load: %v", err)
	}
}

// TestRouterGCFloor: `dorad router` raises the GC percent while its heap is
// small (--gc-floor, on by default), puts Go's default back when it stops,
// and leaves the percent alone with --gc-floor 0.
func TestRouterGCFloor(t *testing.T) {
	t.Setenv("GOGC", "") // restored at the end; an operator's GOGC turns the floor off
	os.Unsetenv("GOGC")
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	dir := t.TempDir()
	for _, c := range []struct {
		floor  string
		raised bool
	}{{"", true}, {"0", false}} {
		args := []string{"router", "--listen", "127.0.0.1:0",
			"--store", "bolt://" + filepath.Join(dir, "meta.db"),
			"--objects", "file://" + filepath.Join(dir, "objects")}
		if c.floor != "" {
			args = append(args, "--gc-floor", c.floor)
		}
		r := startDorad(t, args...)
		waitOK(t, r.waitURL(t)+"/healthz")
		if p := gcPercent(); (p > 100) != c.raised {
			t.Errorf("--gc-floor %q: GC percent %d while serving, want raised above 100: %v", c.floor, p, c.raised)
		}
		if err := r.stop(t); err != nil {
			t.Fatalf("router stopped with %v", err)
		}
		if p := gcPercent(); p != 100 {
			t.Errorf("--gc-floor %q: GC percent %d after the router stopped, want Go's default 100", c.floor, p)
		}
	}
}

func gcPercent() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func TestTrustedProxiesFlag(t *testing.T) {
	cfg, ok := parseRouterFlags(t, []string{"--trusted-proxies", "10.0.0.0/8,192.168.1.7", "--trusted-proxies", "::ffff:172.16.0.1,fd00::1/64"}, "")
	if !ok {
		t.Fatal("refused")
	}
	var got []string
	for _, p := range cfg.TrustedProxies {
		got = append(got, p.String())
	}
	want := "10.0.0.0/8 192.168.1.7/32 172.16.0.1/32 fd00::/64"
	if strings.Join(got, " ") != want {
		t.Fatalf("TrustedProxies %v, want %s", got, want)
	}
	if cfg, _ := parseRouterFlags(t, nil, ""); len(cfg.TrustedProxies) != 0 {
		t.Fatalf("default TrustedProxies %v, want none", cfg.TrustedProxies)
	}
	parseRouterFlags(t, []string{"--trusted-proxies", "10.0.0.0/33"}, `--trusted-proxies: "10.0.0.0/33" is not an address or a CIDR prefix`)
	parseRouterFlags(t, []string{"--trusted-proxies", "proxy.internal"}, `--trusted-proxies: "proxy.internal" is not an address or a CIDR prefix`)
}

// TestListsFromEnvSplitOnCommas: DORA_TRUSTED_PROXIES and DORA_STATS_FROM
// written as the flags take them (comma-separated) were read as one item,
// since viper splits an environment list on spaces only: the router
// refused "10.0.0.1,10.0.0.0/8" as one bad address and the admin scraped
// one URL made of two. Commas and spaces now both separate items.
func TestListsFromEnvSplitOnCommas(t *testing.T) {
	t.Setenv("DORA_TRUSTED_PROXIES", "10.0.0.1,10.0.0.0/8 192.168.0.0/16")
	cfg, ok := parseRouterFlags(t, nil, "")
	if !ok {
		t.Fatal("refused")
	}
	var got []string
	for _, p := range cfg.TrustedProxies {
		got = append(got, p.String())
	}
	if want := "10.0.0.1/32 10.0.0.0/8 192.168.0.0/16"; strings.Join(got, " ") != want {
		t.Fatalf("TrustedProxies from DORA_TRUSTED_PROXIES = %v, want %s", got, want)
	}
	t.Setenv("DORA_STATS_FROM", "http://r1:8080/metrics,http://r2:8080/metrics")
	v := viper.New()
	cmd := newAdminCommand(v)
	if err := cmd.ParseFlags(nil); err != nil {
		t.Fatal(err)
	}
	if err := loadConfig(v, cmd); err != nil {
		t.Fatal(err)
	}
	if got := stringList(v, "stats-from"); len(got) != 2 || got[1] != "http://r2:8080/metrics" {
		t.Fatalf("stats-from from DORA_STATS_FROM = %q, want two URLs", got)
	}
}
