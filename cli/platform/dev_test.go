package platform

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/admin"
)

func TestResolveRunAs(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	root := os.Geteuid() == 0
	tests := []struct {
		spec    string
		wantUid int // -1: nil (the platform's own user)
		wantErr bool
	}{
		{spec: RunAsSelf, wantUid: -1},
		{spec: "no-such-user-here", wantErr: true},
		{spec: "", wantUid: map[bool]int{true: 65534, false: -1}[root]},
		{spec: "65534", wantUid: 65534, wantErr: !root},
		{spec: "65534:65534", wantUid: 65534, wantErr: !root},
	}
	for _, tt := range tests {
		u, err := resolveRunAs(tt.spec, log)
		if tt.wantErr {
			if err == nil {
				t.Errorf("resolveRunAs(%q) = %v, want an error", tt.spec, u)
			}
			continue
		}
		if err != nil {
			t.Errorf("resolveRunAs(%q): %v", tt.spec, err)
			continue
		}
		got := -1
		if u != nil {
			got = int(u.Uid)
		}
		if got != tt.wantUid {
			t.Errorf("resolveRunAs(%q) = uid %d, want %d", tt.spec, got, tt.wantUid)
		}
	}
}

// TestDevDataDirModes starts the embedded platform as root and checks the
// data directory's modes and owners (docs/security.md), then that a data
// directory the run-as user cannot reach is refused with a clear error.
func TestDevDataDirModes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the run-as user is the platform's own when not root")
	}
	parent, err := os.MkdirTemp("", "dev-datadir-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	os.Chmod(parent, 0o711)
	data := filepath.Join(parent, "data")
	cfg := DevConfig{DataDir: data, AdminAddr: "127.0.0.1:0", RouterAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	d, err := StartDev(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	checkModes(t, data, dataDirModes(nil))

	// A data dir below a 0700 directory: nobody could not reach its builds.
	closed := t.TempDir()
	cfg.DataDir = filepath.Join(closed, "data")
	if d, err := StartDev(context.Background(), cfg); err == nil {
		d.Close()
		t.Fatal("started with a data dir the run-as user cannot reach")
	} else if !strings.Contains(err.Error(), "nobody") || !strings.Contains(err.Error(), "run-as") {
		t.Fatalf("error does not explain itself: %v", err)
	}
	cfg.RunAs = RunAsSelf
	d, err = StartDev(context.Background(), cfg)
	if err != nil {
		t.Fatalf("run-as self: %v", err)
	}
	d.Close()
}

// TestDevBuildsEveryRole: dorad dev is the four production roles on
// embedded backends: the worker's embedded router answers on its own
// port, the autoscaler scales (leads) with its gauges on the admin's
// /metrics, the admin runs its background work, and Close releases the bolt files so
// that the data directory opens again.
func TestDevBuildsEveryRole(t *testing.T) {
	data := t.TempDir()
	cfg := DevConfig{DataDir: data, AdminAddr: "127.0.0.1:0", RouterAddr: "127.0.0.1:0",
		RunAs: RunAsSelf, ContainerRuntime: "none", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	d, err := StartDev(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if d.WorkerURL == "" || d.WorkerURL == d.RouterURL || d.WorkerURL == d.AdminURL {
		t.Fatalf("worker URL %q (router %s, admin %s)", d.WorkerURL, d.RouterURL, d.AdminURL)
	}
	for _, u := range []string{d.RouterURL, d.WorkerURL} {
		if code, body := get(u + "/healthz"); code != http.StatusOK {
			t.Fatalf("%s/healthz: %d %s", u, code, body)
		}
		if _, body := get(u + "/metrics"); !strings.Contains(body, "dora_router_") {
			t.Fatalf("%s/metrics has no router figures:\n%s", u, body)
		}
	}
	// The upload and rs/rsf APIs answer on the admin's address before the
	// admin's own handler: their replies are inert there too.
	for _, req := range [][2]string{{http.MethodPost, "/"}, {http.MethodPost, "/stat/Yjpr"}} {
		r, err := http.NewRequest(req[0], d.AdminURL+req[1], strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 || resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Content-Security-Policy") != admin.InertCSP {
			t.Fatalf("%s %s: %d, nosniff %q, CSP %q", req[0], req[1], resp.StatusCode,
				resp.Header.Get("X-Content-Type-Options"), resp.Header.Get("Content-Security-Policy"))
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, metrics := get(d.AdminURL + "/metrics")
		missing := ""
		for _, want := range []string{"dora_autoscaler_leader 1", "dora_admin_leader 1"} {
			if !strings.Contains(metrics, want) {
				missing = want
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin /metrics lacks %q:\n%s", missing, metrics)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	select {
	case <-d.Done():
		t.Fatalf("a role failed: %v", d.Err())
	default:
	}
	d, err = StartDev(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start again on the same data dir: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	// A start that fails half-way (the router's port is taken) leaves
	// nothing open: the admin's port is free again.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminAddr := free.Addr().String()
	free.Close()
	cfg.AdminAddr, cfg.RouterAddr = adminAddr, taken.Addr().String()
	if d, err := StartDev(context.Background(), cfg); err == nil {
		d.Close()
		t.Fatal("started on a router port in use")
	}
	again, err := net.Listen("tcp", adminAddr)
	if err != nil {
		t.Fatalf("the failed start kept the admin's port: %v", err)
	}
	again.Close()
}

// TestDevEmptyAddrsListenOnLoopback: an empty admin or router address
// (admin-addr: "" in a config file, or a DevConfig left zero) listens on
// the default loopback addresses, never on every interface.
func TestDevEmptyAddrsListenOnLoopback(t *testing.T) {
	cfg := DevConfig{DataDir: t.TempDir(), RunAs: RunAsSelf, ContainerRuntime: "none",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	d, err := StartDev(context.Background(), cfg)
	if err != nil {
		// The default ports may be taken on this machine: the error then
		// names the loopback default it tried.
		if strings.Contains(err.Error(), "address already in use") &&
			(strings.Contains(err.Error(), DefaultAdminListen) || strings.Contains(err.Error(), DefaultRouterListen)) {
			return
		}
		t.Fatal(err)
	}
	defer d.Close()
	for _, u := range []string{d.AdminURL, d.RouterURL} {
		if !strings.HasPrefix(u, "http://127.0.0.1:") {
			t.Errorf("listener %s: want the loopback default", u)
		}
	}
}

// TestDevEmptyDataDirIsTheDefault: an empty data directory (data-dir: ""
// in a config file, a zero DevConfig) failed with "data dir: mkdir : no
// such file or directory"; it is now ./.dora, as for dorad admin.
func TestDevEmptyDataDirIsTheDefault(t *testing.T) {
	t.Chdir(t.TempDir())
	cfg := DevConfig{AdminAddr: "127.0.0.1:0", RouterAddr: "127.0.0.1:0", RunAs: RunAsSelf, ContainerRuntime: "none",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	d, err := StartDev(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := os.Stat(filepath.Join(".dora", "meta.db")); err != nil {
		t.Fatalf("no ./.dora/meta.db: %v", err)
	}
}
