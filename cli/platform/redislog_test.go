package platform

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/agenttest"
)

// TestWorkerRedisQueueMessagesGoToItsLogger: a worker on a redis:// queue
// (and no load store) left go-redis's own messages on its default logger:
// during a Redis outage unstructured lines ("redis: 2026/... connection
// pool: failed to dial") flooded stderr, past --log-format json and
// --log-level. They now go to the role's logger, as the load store's do.
func TestWorkerRedisQueueMessagesGoToItsLogger(t *testing.T) {
	dir := t.TempDir()
	var buf agenttest.SyncBuffer
	w, err := StartWorker(context.Background(), WorkerConfig{
		Listen:  "127.0.0.1:0",
		Store:   "bolt://" + filepath.Join(dir, "meta.db"),
		Queue:   "redis://127.0.0.1:1/0", // nothing listens there
		Objects: "file://" + filepath.Join(dir, "objects"),
		Logger:  slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(buf.String(), "component=redis-client") {
		if time.Now().After(deadline) {
			t.Fatalf("no go-redis message in the worker's log:\n%s", buf.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
