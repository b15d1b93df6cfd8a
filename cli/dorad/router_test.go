package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
