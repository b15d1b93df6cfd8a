package local

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/doraproject/dora/internal/procsweep"
	"github.com/doraproject/dora/internal/procsweep/proctest"
)

// Instance working directories left by a process that died are removed
// when a Runtime starts; logs stay.
func TestNewSweepsLeftoverWorkingDirs(t *testing.T) {
	dir := t.TempDir()
	work := filepath.Join(dir, "dep1", "0")
	logf := filepath.Join(dir, "dep1", "logs", "0.stdout")
	for _, p := range []string{filepath.Join(work, "sub", "file"), logf} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("leftover working dir still there: %v", err)
	}
	if _, err := os.Stat(logf); err != nil {
		t.Errorf("log removed: %v", err)
	}
}

// Processes an earlier runtime on the same directory left running (an
// instance's background child, or one that left its session, after dorad
// was killed) are killed when a Runtime starts; others are left alone.
func TestNewKillsStaleInstanceProcesses(t *testing.T) {
	dir := t.TempDir()
	start := func(owner string) int {
		t.Helper()
		pidFile := filepath.Join(t.TempDir(), "pid")
		cmd := exec.Command("/bin/sh", "-c", "setsid sleep 300 & echo $! > "+pidFile+"; wait")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), procsweep.Env(owner)}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go cmd.Wait()
		var pid int
		eventually(t, "the stale process to start", func() bool {
			b, _ := os.ReadFile(pidFile)
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			return pid > 0
		})
		t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL); cmd.Process.Kill() })
		return pid
	}
	stale := start(procsweep.Owner("local", dir))
	other := start(procsweep.Owner("local", t.TempDir()))
	r, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if proctest.Alive(stale) {
		t.Fatal("a stale instance process of this directory still runs")
	}
	if !proctest.Alive(other) {
		t.Fatal("another directory's process was killed")
	}
}
