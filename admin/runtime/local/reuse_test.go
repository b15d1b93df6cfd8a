package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/procsweep/proctest"
)

// TestScaleUpWhileOldInstanceStops scales 2 -> 1 with a caller that gives
// up waiting (the instance takes seconds to stop), then back to 2 at once.
// The new instance 2 must not share its working directory with the old
// one: when the old one is finally gone and its files freed, the new one
// keeps its working directory.
func TestScaleUpWhileOldInstanceStops(t *testing.T) {
	ctx := context.Background()
	r := newRuntime(t, &recorder{})
	const id = "deploy-reuse"
	spec := grepdSpec(id, 2)
	// The shell takes 1.5s to exit after SIGTERM (grepd itself stops at once).
	spec.Package.Run = `trap 'sleep 1.5; exit 0' TERM; ./grepd & wait`
	if err := r.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "2 healthy", func() bool { return status(t, r, id).Healthy == 2 })
	oldPID := inst(status(t, r, id), 2).PID

	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err := r.Scale(sctx, id, 1, "test")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("scale to 1 with a short deadline: %v", err)
	}
	if err := r.Scale(ctx, id, 2, "test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "2 healthy again", func() bool { return status(t, r, id).Healthy == 2 })
	eventually(t, "the old instance 2 gone", func() bool { return !proctest.Alive(oldPID) })
	bin := filepath.Join(r.cfg.Dir, id, "2", "grepd")
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("the running instance 2 lost its working dir: %v", err)
		}
	}
}

// TestCloseKillsEscapedProcesses: a process an instance started in a
// session of its own (a daemon) is not in the instance's process group;
// a clean Close must not leave it running (only a kill of the platform
// had the watchdog for it).
func TestCloseKillsEscapedProcesses(t *testing.T) {
	ctx := context.Background()
	r := newRuntime(t, &recorder{})
	const id = "deploy-escape"
	pidFile := filepath.Join(t.TempDir(), "pids")
	if err := os.Chmod(filepath.Dir(pidFile), 0o777); err != nil {
		t.Fatal(err)
	}
	spec := grepdSpec(id, 1)
	spec.Package.Run = "setsid sleep 301 & echo $! >> " + pidFile + "; exec ./grepd"
	if err := r.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	pids := proctest.ReadPids(t, pidFile, 1)
	eventually(t, "healthy", func() bool { return status(t, r, id).Healthy == 1 })
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		if proctest.Alive(p) {
			syscall.Kill(p, syscall.SIGKILL)
			t.Fatalf("the instance's setsid child %d outlived Close", p)
		}
	}
}

// TestCrashedInstanceHasNoAddr: between a crash and the restart the
// instance listens nowhere; its state must not show the dead address.
func TestCrashedInstanceHasNoAddr(t *testing.T) {
	r := newRuntime(t, nil)
	r.cfg.RestartBackoff = time.Minute // stays CRASHED while the test looks
	const id = "deploy-crashaddr"
	spec := grepdSpec(id, 1)
	spec.Package.Run = "./grepd & sleep 0.5; kill $!; exit 3"
	if err := r.Apply(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "crashed", func() bool { return inst(status(t, r, id), 1).State == runtime.StateCrashed })
	if in := inst(status(t, r, id), 1); in.Addr != "" || in.PID != 0 {
		t.Fatalf("crashed instance shows addr %q pid %d", in.Addr, in.PID)
	}
}

// TestScaleFlapWhileOldInstanceStops: 2 -> 1 -> 2 -> 1 -> 2 while the
// first instance 2 is still stopping; the instance 2 in between never
// started, and the last one must still wait for the first.
func TestScaleFlapWhileOldInstanceStops(t *testing.T) {
	ctx := context.Background()
	r := newRuntime(t, &recorder{})
	const id = "deploy-flap"
	spec := grepdSpec(id, 2)
	spec.Package.Run = `trap 'sleep 1.5; exit 0' TERM; ./grepd & wait`
	if err := r.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "2 healthy", func() bool { return status(t, r, id).Healthy == 2 })
	oldPID := inst(status(t, r, id), 2).PID
	for range 2 {
		sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		r.Scale(sctx, id, 1, "test")
		cancel()
		if err := r.Scale(ctx, id, 2, "test"); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "2 healthy again", func() bool { return status(t, r, id).Healthy == 2 })
	eventually(t, "the first instance 2 gone", func() bool { return !proctest.Alive(oldPID) })
	bin := filepath.Join(r.cfg.Dir, id, "2", "grepd")
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("the running instance 2 lost its working dir: %v", err)
		}
	}
}
