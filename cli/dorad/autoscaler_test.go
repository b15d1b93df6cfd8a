package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestAutoscalerCommand runs `dorad autoscaler` on a bolt store (so without
// a lock: it leads at once) against a Nomad address nobody listens on (no
// deployment, so it is never called).
func TestAutoscalerCommand(t *testing.T) {
	dir := t.TempDir()
	r := startDorad(t, "autoscaler", "--listen", "127.0.0.1:0",
		"--store", "bolt://"+filepath.Join(dir, "meta.db"), "--runtime", "nomad://127.0.0.1:1")
	url := r.waitURL(t)
	if h := waitOK(t, url+"/healthz"); !strings.Contains(h, `"leader":true`) {
		t.Fatalf("/healthz = %s", h)
	}
	if m := waitOK(t, url+"/metrics"); !strings.Contains(m, "dora_autoscaler_leader 1") {
		t.Fatalf("/metrics lacks dora_autoscaler_leader 1")
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("autoscaler stopped with %v", err)
	}
}

func TestAutoscalerCommandErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--runtime is required"},
		{[]string{"--runtime", "local://"}, "needs nomad://"},
		{[]string{"--runtime", "nomad://127.0.0.1:4646/x"}, "takes no path"},
		{[]string{"--runtime", "nomad://127.0.0.1:4646?driver=docker"}, `driver "docker" must be raw_exec or exec`},
		{[]string{"--runtime", "nomad://127.0.0.1:4646", "--lock-ttl", "1s", "--store", "consul://127.0.0.1:1/dora"}, "TTL"},
	} {
		args := append([]string{"autoscaler", "--listen", "127.0.0.1:0", "--store", "bolt://" + filepath.Join(dir, "meta.db")}, c.args...)
		err := runDorad(t, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("dorad %v = %v, want an error with %q", c.args, err, c.want)
		}
	}
}

// TestAutoscalerCommandRefusesValuesItWouldIgnore: --interval 0 or
// negative and --lock-ttl 0 were replaced by the defaults without a word;
// they are refused, naming the flag.
func TestAutoscalerCommandRefusesValuesItWouldIgnore(t *testing.T) {
	dir := t.TempDir()
	for _, c := range [][]string{
		{"--interval", "0"},
		{"--interval", "-2s"},
		{"--lock-ttl", "0"},
	} {
		args := append([]string{"autoscaler", "--listen", "127.0.0.1:0", "--runtime", "nomad://127.0.0.1:4646",
			"--store", "bolt://" + filepath.Join(dir, "meta.db")}, c...)
		if err := runDorad(t, args...); err == nil || !strings.Contains(err.Error(), c[0]) {
			t.Errorf("dorad autoscaler %v = %v, want an error naming %s", c, err, c[0])
		}
	}
}
