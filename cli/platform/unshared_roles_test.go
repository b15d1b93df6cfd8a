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
	ctx := context.Background()
	type role interface{ Close() error }
	for _, c := range []struct {
		name  string
		start func(t *testing.T, log *slog.Logger) (role, error)
		want  []string
	}{
		{"router", func(t *testing.T, log *slog.Logger) (role, error) {
			return StartRouter(ctx, RouterConfig{
				Listen:    "127.0.0.1:0",
				Store:     "bolt://" + filepath.Join(dir, "router.db"),
				Objects:   "file://" + filepath.Join(dir, "objects"),
				Discovery: "memory://",
				Load:      "memory://",
				Logger:    log,
			})
		}, []string{"--store=bolt://", "--objects=file://", "--discovery=memory://", "--load=memory://"}},
		{"worker", func(t *testing.T, log *slog.Logger) (role, error) {
			return StartWorker(ctx, WorkerConfig{
				Listen:    "127.0.0.1:0",
				Store:     "bolt://" + filepath.Join(dir, "worker.db"),
				Queue:     "bolt://" + filepath.Join(dir, "queue.db"),
				Objects:   "file://" + filepath.Join(dir, "objects"),
				Discovery: "memory://",
				Logger:    log,
			})
		}, []string{"--store=bolt://", "--queue=bolt://", "--objects=file://", "--discovery=memory://"}},
		{"autoscaler", func(t *testing.T, log *slog.Logger) (role, error) {
			return StartAutoscaler(ctx, AutoscalerConfig{
				Listen:  "127.0.0.1:0",
				Store:   "bolt://" + filepath.Join(dir, "autoscaler.db"),
				Runtime: "nomad://127.0.0.1:1", // not called within the test
				Load:    "memory://",
				Logger:  log,
			})
		}, []string{"--store=bolt://", "--load=memory://"}},
		{"admin", func(t *testing.T, log *slog.Logger) (role, error) {
			adir := platformtest.ReachableTempDir(t)
			return StartAdmin(ctx, AdminConfig{
				Listen:  "127.0.0.1:0",
				Store:   "bolt://" + filepath.Join(adir, "meta.db"),
				Runtime: "nomad://127.0.0.1:1", // no deployment: never called
				Objects: "file://" + filepath.Join(adir, "objects"),
				DataDir: adir,
				Logger:  log,
			})
		}, []string{"--store=bolt://", "--queue=bolt://", "--objects=file://"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf agenttest.SyncBuffer
			r, err := c.start(t, slog.New(slog.NewTextHandler(&buf, nil)))
			if err != nil {
				t.Fatal(err)
			}
			r.Close()
			oneLine(t, c.name, buf.String(), c.want...)
		})
	}
}
