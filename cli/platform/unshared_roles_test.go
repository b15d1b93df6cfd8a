package platform

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/doraproject/dora/cli/platform/platformtest"
	"github.com/doraproject/dora/internal/agenttest"
)

// TestRolesWarnUnsharedOnce starts each production role on embedded
// backends (bolt store and queue, file:// objects, memory:// discovery and
// load): each says in exactly one line at start which of its backends
// cannot be shared with a second instance on another host.
func TestRolesWarnUnsharedOnce(t *testing.T) {
	dir := t.TempDir()
	oneLine := func(t *testing.T, role, logs string, want ...string) {
		t.Helper()
		var lines []string
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, "cannot be shared") {
				lines = append(lines, l)
			}
		}
		if len(lines) != 1 {
			t.Fatalf("%s: %d unshared-backend warnings, want 1:\n%s", role, len(lines), logs)
		}
		for _, w := range want {
			if !strings.Contains(lines[0], w) {
				t.Errorf("%s: the warning does not name %s: %s", role, w, lines[0])
			}
		}
	}
	t.Run("router", func(t *testing.T) {
		var buf agenttest.SyncBuffer
		r, err := StartRouter(context.Background(), RouterConfig{
			Listen:    "127.0.0.1:0",
			Store:     "bolt://" + filepath.Join(dir, "router.db"),
			Objects:   "file://" + filepath.Join(dir, "objects"),
			Discovery: "memory://",
			Load:      "memory://",
			Logger:    slog.New(slog.NewTextHandler(&buf, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		oneLine(t, "router", buf.String(), "--store=bolt://", "--objects=file://", "--discovery=memory://", "--load=memory://")
	})
	t.Run("worker", func(t *testing.T) {
		var buf agenttest.SyncBuffer
		w, err := StartWorker(context.Background(), WorkerConfig{
			Listen:    "127.0.0.1:0",
			Store:     "bolt://" + filepath.Join(dir, "worker.db"),
			Queue:     "bolt://" + filepath.Join(dir, "queue.db"),
			Objects:   "file://" + filepath.Join(dir, "objects"),
			Discovery: "memory://",
			Logger:    slog.New(slog.NewTextHandler(&buf, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		oneLine(t, "worker", buf.String(), "--store=bolt://", "--queue=bolt://", "--objects=file://", "--discovery=memory://")
	})
	t.Run("autoscaler", func(t *testing.T) {
		var buf agenttest.SyncBuffer
		a, err := StartAutoscaler(context.Background(), AutoscalerConfig{
			Listen:  "127.0.0.1:0",
			Store:   "bolt://" + filepath.Join(dir, "autoscaler.db"),
			Runtime: "nomad://127.0.0.1:1", // not called within the test
			Load:    "memory://",
			Logger:  slog.New(slog.NewTextHandler(&buf, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		a.Close()
		oneLine(t, "autoscaler", buf.String(), "--store=bolt://", "--load=memory://")
	})
	t.Run("admin", func(t *testing.T) {
		var buf agenttest.SyncBuffer
		adir := platformtest.ReachableTempDir(t)
		a, err := StartAdmin(context.Background(), AdminConfig{
			Listen:  "127.0.0.1:0",
			Store:   "bolt://" + filepath.Join(adir, "meta.db"),
			Runtime: "nomad://127.0.0.1:1", // no deployment: never called
			Objects: "file://" + filepath.Join(adir, "objects"),
			DataDir: adir,
			Logger:  slog.New(slog.NewTextHandler(&buf, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		a.Close()
		oneLine(t, "admin", buf.String(), "--store=bolt://", "--queue=bolt://", "--objects=file://")
	})
}
