package procsweep

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/doraproject/dora/internal/procsweep/proctest"
)

// startTree starts `sh -c` with env and waits for the pids its script
// writes (one a line) to pidFile.
func startTree(t *testing.T, env []string, script string, want int) (*exec.Cmd, []int) {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "pids")
	cmd := exec.Command("/bin/sh", "-c", strings.ReplaceAll(script, "PIDS", pidFile))
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pids := proctest.ReadPids(t, pidFile, want)
	t.Cleanup(func() {
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		cmd.Wait()
	})
	return cmd, pids
}

// TestSweepKillsMarkedTree: a compound command's children, a background
// grandchild and one that left the session are all killed by the sweep of
// their owner; another owner's and unmarked processes are not.
func TestSweepKillsMarkedTree(t *testing.T) {
	owner := Owner("test", t.TempDir())
	other := Owner("test", t.TempDir())
	base := []string{"PATH=" + os.Getenv("PATH")}
	script := `sleep 300 | sleep 301 & echo $! >> PIDS; (sleep 302 &) ; setsid sleep 303 & echo $! >> PIDS; echo $$ >> PIDS; wait`
	_, ours := startTree(t, append(base, Env(owner)), script, 3)
	_, theirs := startTree(t, append(base, Env(other)), script, 3)
	_, plain := startTree(t, base, script, 3)
	// The (sleep 302 &) grandchild is found by its marker only.
	n, err := Sweep(owner)
	if err != nil {
		t.Fatal(err)
	}
	if n < 5 { // sh, both pipeline members, the orphaned and the setsid sleep
		t.Fatalf("swept %d processes, want at least 5", n)
	}
	for _, p := range ours {
		if proctest.Alive(p) {
			t.Fatalf("process %d of the swept owner still runs", p)
		}
	}
	for _, p := range append(theirs, plain...) {
		if !proctest.Alive(p) {
			t.Fatalf("process %d of another owner (or none) was killed", p)
		}
	}
	if n, err := Sweep(owner); err != nil || n != 0 {
		t.Fatalf("second sweep: %d %v, want nothing left", n, err)
	}
}

func TestOwner(t *testing.T) {
	if Owner("build", "/a") == Owner("build", "/b") || Owner("build", "/a") == Owner("local", "/a") {
		t.Fatal("owners of different kinds or directories collide")
	}
	if Owner("build", "/a/../a") != Owner("build", "/a") {
		t.Fatal("the same directory spelled twice gives two owners")
	}
}
