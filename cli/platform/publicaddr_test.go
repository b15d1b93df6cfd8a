package platform

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/doraproject/dora/cli/platform/platformtest"
	"github.com/doraproject/dora/internal/agenttest"
)

// TestWildcardListenWithoutPublicAddrWarns: a router or worker listening
// on every interface without a public address handed instances one-shot
// input URLs at 0.0.0.0 (or [::]), which an instance on another host
// dials as itself: pipelines with large inputs failed with nothing said at
// start. The start now says so, naming --public-addr; with a public
// address, or on loopback, it says nothing.
func TestWildcardListenWithoutPublicAddrWarns(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	type role interface{ Close() error }
	startRouter := func(log *slog.Logger, listen, public string) (role, error) {
		return StartRouter(ctx, RouterConfig{Listen: listen, PublicAddr: public,
			Store: "bolt://" + filepath.Join(dir, "router.db"), Objects: "file://" + filepath.Join(dir, "objects"), Logger: log})
	}
	startWorker := func(log *slog.Logger, listen, public string) (role, error) {
		return StartWorker(ctx, WorkerConfig{Listen: listen, PublicAddr: public,
			Store: "bolt://" + filepath.Join(dir, "worker.db"), Queue: "bolt://" + filepath.Join(dir, "queue.db"),
			Objects: "file://" + filepath.Join(dir, "objects"), Logger: log})
	}
	for _, c := range []struct {
		name           string
		start          func(*slog.Logger, string, string) (role, error)
		listen, public string
		warn           bool
	}{
		{"router wildcard", startRouter, "0.0.0.0:0", "", true},
		{"router wildcard with public addr", startRouter, "0.0.0.0:0", "10.0.0.7:8080", false},
		{"router loopback", startRouter, "127.0.0.1:0", "", false},
		{"worker wildcard", startWorker, ":0", "", true},
		{"worker wildcard with public addr", startWorker, ":0", "10.0.0.8:8092", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf agenttest.SyncBuffer
			r, err := c.start(slog.New(slog.NewTextHandler(&buf, nil)), c.listen, c.public)
			if err != nil {
				t.Fatal(err)
			}
			r.Close()
			warned := strings.Contains(buf.String(), "--public-addr")
			if warned != c.warn {
				t.Fatalf("warned about --public-addr: %v, want %v; logs:\n%s", warned, c.warn, buf.String())
			}
		})
	}
}

// TestNomadAdminWithoutPublicURLWarns: an admin driving Nomad without a
// public URL handed Nomad clients artifact URLs and image references at
// its loopback address, which a client on another host cannot reach:
// deployments failed there with nothing said at start. The start now
// says so, naming --public-url; with one, or the local runtime, it says
// nothing.
func TestNomadAdminWithoutPublicURLWarns(t *testing.T) {
	for _, c := range []struct {
		name, runtime, public string
		warn                  bool
	}{
		{"nomad without public url", "nomad://127.0.0.1:1", "", true},
		{"nomad with public url", "nomad://127.0.0.1:1", "http://10.0.0.5:8090", false},
		{"local runtime", "local://", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := platformtest.ReachableTempDir(t)
			var buf agenttest.SyncBuffer
			a, err := StartAdmin(context.Background(), AdminConfig{
				Listen:    "127.0.0.1:0",
				Store:     "bolt://" + filepath.Join(dir, "meta.db"),
				Runtime:   c.runtime,
				Objects:   "file://" + filepath.Join(dir, "objects"),
				DataDir:   dir,
				PublicURL: c.public,
				RunAs:     RunAsSelf,
				Logger:    slog.New(slog.NewTextHandler(&buf, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			a.Close()
			if warned := strings.Contains(buf.String(), "--public-url"); warned != c.warn {
				t.Fatalf("warned about --public-url: %v, want %v; logs:\n%s", warned, c.warn, buf.String())
			}
		})
	}
}

// TestBadPublicAddrRefused: a public address that is not host:port (a URL,
// a missing or bad port) was taken as is, and every one-shot input URL
// built on it ("http://http://10.0.0.7:8080/...") failed the pipelines
// whose inputs go by URL; the router and the worker now refuse it at start.
func TestBadPublicAddrRefused(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	for _, addr := range []string{"http://10.0.0.7:8080", "10.0.0.7:8080/", "10.0.0.7", "10.0.0.7:http", ":8080", "10.0.0.7:70000"} {
		r, err := StartRouter(ctx, RouterConfig{Listen: "127.0.0.1:0", PublicAddr: addr,
			Store: "bolt://" + filepath.Join(dir, "router.db"), Objects: "file://" + filepath.Join(dir, "objects")})
		if err == nil {
			r.Close()
		}
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "public") {
			t.Errorf("StartRouter with PublicAddr %q = %v, want ErrConfig naming it", addr, err)
		}
		w, err := StartWorker(ctx, WorkerConfig{Listen: "127.0.0.1:0", PublicAddr: addr,
			Store: "bolt://" + filepath.Join(dir, "worker.db"), Queue: "bolt://" + filepath.Join(dir, "queue.db"),
			Objects: "file://" + filepath.Join(dir, "objects")})
		if err == nil {
			w.Close()
		}
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "public") {
			t.Errorf("StartWorker with PublicAddr %q = %v, want ErrConfig naming it", addr, err)
		}
	}
}

// TestBadRouterHostRefused: an admin's --router-host given as a URL
// ("http://router:8080") was answered to the SDKs as the download host and
// linked from the console as "http://http://router:8080"; it is refused.
func TestBadRouterHostRefused(t *testing.T) {
	for _, host := range []string{"http://router.example:8080", "router.example:8080/", "router.example:0"} {
		dir := platformtest.ReachableTempDir(t)
		a, err := StartAdmin(context.Background(), AdminConfig{
			Listen: "127.0.0.1:0", Store: "bolt://" + filepath.Join(dir, "meta.db"),
			Objects: "file://" + filepath.Join(dir, "objects"), DataDir: dir, RunAs: RunAsSelf, RouterHost: host,
		})
		if err == nil {
			a.Close()
		}
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "router host") {
			t.Errorf("StartAdmin with RouterHost %q = %v, want ErrConfig naming it", host, err)
		}
	}
}
