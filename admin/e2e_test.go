package admin

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/admin/runtime/local"
)

// TestPackageEndToEnd builds examples/grepd through the API with the real
// builder, switches to it, resizes to one instance on the real local
// runtime, waits (through Run) for RUNNING and calls the instance.
func TestPackageEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go program")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("the go tool is needed on PATH to build examples/grepd")
	}
	var rt *local.Runtime
	e := newEnv(t, func(c *Config) {
		var err error
		rt, err = local.New(local.Config{Dir: filepath.Join(t.TempDir(), "instances"), HealthInterval: 100 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rt.Close() })
		c.Runtime = rt
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	alice := e.user("alice", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	var pkgBuf bytes.Buffer
	if err := client.WriteTarGz(ctx, &pkgBuf, filepath.Join("..", "examples", "grepd")); err != nil {
		t.Fatal(err)
	}
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", pkgBuf.String()}, nil)
	if b := e.waitBuild(alice, "grepd", 1); b.Status != dora.BuildSuccess {
		r := e.req(alice, "GET", "/v1/ufops/grepd/builds/1/log", nil)
		t.Fatalf("build = %+v\n%s", b, r.Body)
	}
	e.must(http.StatusOK, alice, "POST", "/v1/ufops/grepd/version", map[string]any{"build": 1}, nil)
	var d dora.Deployment
	e.must(http.StatusOK, alice, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 1}, &d)

	deadline := time.Now().Add(60 * time.Second)
	var info DeploymentInfo
	for {
		e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/deployments/"+d.ID, nil, &info)
		if info.Status == dora.DeployRunning && len(info.Instances) == 1 && info.Instances[0].Healthy {
			break
		}
		if info.Status == dora.DeployFailed || time.Now().After(deadline) {
			t.Fatalf("deployment never ran: %+v", info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var insts []runtime.InstanceStatus
	e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/instances", nil, &insts)
	if len(insts) != 1 || insts[0].Addr == "" {
		t.Fatalf("instances = %+v", insts)
	}
	res, err := http.Post("http://"+insts[0].Addr+"/handler?cmd=grepd/foo", "text/plain", strings.NewReader("a foo\nbar\nfood\n"))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(out), "a foo") || strings.Contains(string(out), "bar") {
		t.Fatalf("grepd replied %d %q", res.StatusCode, out)
	}
	// Stop and start through the API.
	e.must(http.StatusNoContent, alice, "POST", "/v1/ufops/grepd/instances/stop", map[string]any{}, nil)
	e.must(http.StatusNoContent, alice, "POST", "/v1/ufops/grepd/instances/start", map[string]any{}, nil)
	e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/instances/1/logs", nil, nil)
}
