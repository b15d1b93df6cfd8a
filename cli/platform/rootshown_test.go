package platform

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"github.com/doraproject/dora/cli/platform/platformtest"
)

// TestRootKeysShownAfterAFailedFirstStart: a first start that failed after
// generating the root keys (a port in use: the newcomer's first `dorad
// dev`) wrote them to root.credentials without printing them, and the next
// start, reading the file, printed nothing: the keys were never shown and
// no login hint appeared. A failed start now forgets keys it generated, so
// that the next start generates and shows them.
func TestRootKeysShownAfterAFailedFirstStart(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	t.Run("dev", func(t *testing.T) {
		cfg := DevConfig{DataDir: t.TempDir(), AdminAddr: "127.0.0.1:0", RouterAddr: taken.Addr().String(),
			RunAs: RunAsSelf, ContainerRuntime: "none", Logger: quiet}
		if d, err := StartDev(context.Background(), cfg); err == nil {
			d.Close()
			t.Fatal("started on a router port in use")
		}
		cfg.RouterAddr = "127.0.0.1:0"
		d, err := StartDev(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if !d.NewRoot {
			t.Fatal("the second start shows no root keys: the failed first start's were never shown")
		}
	})
	t.Run("admin", func(t *testing.T) {
		dir := platformtest.ReachableTempDir(t)
		cfg := AdminConfig{Listen: taken.Addr().String(), Store: "bolt://" + filepath.Join(dir, "meta.db"),
			Objects: "file://" + filepath.Join(dir, "objects"), DataDir: dir, RunAs: RunAsSelf, Logger: quiet}
		if a, err := StartAdmin(context.Background(), cfg); err == nil {
			a.Close()
			t.Fatal("started on a port in use")
		}
		cfg.Listen = "127.0.0.1:0"
		a, err := StartAdmin(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if !a.NewRoot {
			t.Fatal("the second start shows no root keys: the failed first start's were never shown")
		}
	})
}
