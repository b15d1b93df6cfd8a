package procsweep

import (
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/procsweep/proctest"
)

// TestSpawnerThreadOutlivesLockedGoroutines: a child with a parent-death
// signal started through a Spawner keeps running while goroutines that
// lock their thread come and go (each ends its thread), and dies when the
// Spawner is closed (its thread ends). Without the Spawner the same
// child, forked from a goroutine that then ends locked, dies at once,
// which shows what the Spawner prevents.
func TestSpawnerThreadOutlivesLockedGoroutines(t *testing.T) {
	start := func(f func(*exec.Cmd) error) int {
		cmd := exec.Command("sleep", "300")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := f(cmd); err != nil {
			t.Fatal(err)
		}
		go cmd.Wait()
		t.Cleanup(func() { cmd.Process.Kill() })
		return cmd.Process.Pid
	}
	endLocked := func(f func()) { // f on a thread that ends afterwards
		done := make(chan struct{})
		go func() { runtime.LockOSThread(); f(); close(done) }()
		<-done
	}

	// The hazard: forked from a thread that then ends.
	var bare int
	endLocked(func() { bare = start(func(c *exec.Cmd) error { return c.Start() }) })
	proctest.WaitGone(t, "a child whose forking thread ended", []int{bare})

	s := NewSpawner()
	var pid int
	endLocked(func() { pid = start(s.Start) })
	for range 20 {
		endLocked(func() {})
	}
	time.Sleep(100 * time.Millisecond) // a signal, if sent, is delivered by now
	if !proctest.Alive(pid) {
		t.Fatal("a child started through the Spawner died while dorad's goroutines ended their threads")
	}
	s.Close()
	proctest.WaitGone(t, "a child of a closed Spawner", []int{pid})
	if err := s.Start(exec.Command("true")); err != ErrSpawnerClosed {
		t.Fatalf("Start after Close: %v, want ErrSpawnerClosed", err)
	}
}
