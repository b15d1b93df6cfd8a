package procsweep

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/procsweep/proctest"
)

// helperEnv makes the test binary a dorad-like parent (TestMain): it
// starts a watchdog and a marked process tree, writes the tree's pids, and
// waits to be killed.
const helperEnv = "PROCSWEEP_TEST_HELPER"

func TestMain(m *testing.M) {
	// The main goroutine keeps the main thread: Go ends the thread of a
	// goroutine that returns locked, but wedges the main thread instead,
	// and TestSpawnerThreadOutlivesLockedGoroutines needs threads to end.
	runtime.LockOSThread()
	if spec := os.Getenv(helperEnv); spec != "" {
		runHelper(spec)
	}
	os.Exit(m.Run())
}

// runHelper is the parent: spec is "owner|pidfile|ondeath-file".
func runHelper(spec string) {
	f := strings.Split(spec, "|")
	owner, pidFile, deathFile := f[0], f[1], f[2]
	if _, err := Watch(owner, "/bin/sh", "-c", "echo swept > "+deathFile); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	script := `sleep 300 | sleep 301 & echo $! >> PIDS; (sleep 302 & echo $! >> PIDS) ; setsid sleep 303 & echo $! >> PIDS; echo $$ >> PIDS; wait`
	cmd := exec.Command("/bin/sh", "-c", strings.ReplaceAll(script, "PIDS", pidFile))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), Env(owner)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	select {} // until killed
}

// TestWatchdogKillsTreeWhenParentKilled: a dorad-like parent (this test
// binary, re-executed) starts a watchdog and a marked tree (a pipeline,
// an orphaned background job, a setsid escape); kill -9 of the parent
// takes the whole tree down without anything else running, then the
// on-death command runs.
func TestWatchdogKillsTreeWhenParentKilled(t *testing.T) {
	dir := t.TempDir()
	owner := Owner("test", dir)
	pidFile, deathFile := filepath.Join(dir, "pids"), filepath.Join(dir, "death")
	parent := exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), helperEnv+"="+owner+"|"+pidFile+"|"+deathFile)
	parent.Stderr = os.Stderr
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	pids := proctest.ReadPids(t, pidFile, 4)
	for _, p := range pids {
		if !proctest.Alive(p) {
			t.Fatalf("tree process %d not running before the kill", p)
		}
	}
	if err := parent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	parent.Wait()
	proctest.WaitGone(t, "processes of the killed parent", pids)
	for deadline := time.Now().Add(60 * time.Second); ; {
		if b, _ := os.ReadFile(deathFile); strings.TrimSpace(string(b)) == "swept" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the on-death command never ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWatchdogCloseDisarms: after Close (a clean shutdown) the watchdog is
// gone and a marked process is left alone.
func TestWatchdogCloseDisarms(t *testing.T) {
	dir := t.TempDir()
	owner := Owner("test", dir)
	w, err := Watch(owner, "/bin/sh", "-c", "echo ran > "+filepath.Join(dir, "death"))
	if err != nil {
		t.Fatal(err)
	}
	_, pids := startTree(t, []string{"PATH=" + os.Getenv("PATH"), Env(owner)}, `sleep 300 & echo $! >> PIDS; wait`, 1)
	wpid := w.Pid()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if proctest.Alive(wpid) {
		t.Fatal("watchdog still runs after Close")
	}
	if !proctest.Alive(pids[0]) {
		t.Fatal("a disarmed watchdog killed a marked process")
	}
	if _, err := os.Stat(filepath.Join(dir, "death")); err == nil {
		t.Fatal("a disarmed watchdog ran its on-death command")
	}
}
