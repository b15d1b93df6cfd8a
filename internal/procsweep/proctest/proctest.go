// Package proctest holds the process helpers shared by the tests of
// internal/procsweep and of its users (admin/build, admin/runtime/local):
// is a pid running, wait for a helper to write the pids it started, wait
// for pids to be gone, a directory a process of another user can reach. The waits are bounded to catch a hang, never to
// assert on speed.
package proctest

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Bound is how long the waits wait before they fail the test.
const Bound = 60 * time.Second

// poll is the pause between checks.
const poll = 20 * time.Millisecond

// Alive reports whether pid runs (a zombie counts as gone).
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// ReadPids waits until file holds at least want pids (whitespace
// separated, as `echo $! >> file` writes them) and returns them.
func ReadPids(t testing.TB, file string, want int) []int {
	t.Helper()
	var pids []int
	for deadline := time.Now().Add(Bound); ; time.Sleep(poll) {
		b, _ := os.ReadFile(file)
		pids = pids[:0]
		for _, s := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(s); err == nil {
				pids = append(pids, p)
			}
		}
		if len(pids) >= want {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d pids after %v, want %d", file, len(pids), Bound, want)
		}
	}
}

// WaitGone waits until none of pids runs; past Bound it kills the ones
// left (not to leak them) and fails, naming what they are.
func WaitGone(t testing.TB, what string, pids []int) {
	t.Helper()
	for deadline := time.Now().Add(Bound); ; time.Sleep(poll) {
		var left []int
		for _, p := range pids {
			if Alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range left {
				syscall.Kill(p, syscall.SIGKILL)
			}
			t.Fatalf("%s %v still run %v later", what, left, Bound)
		}
	}
}

// ReachableDir is a temporary directory (removed when the test ends) that
// a process running as another user can traverse: t.TempDir's parent is
// 0700.
func ReachableDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dora-reachable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	return dir
}
