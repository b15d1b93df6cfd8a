package procsweep

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary a dorad-like parent (TestMain): it
// starts a watchdog and a marked process tree, writes the tree's pids, and
// waits to be killed.
const helperEnv = "PROCSWEEP_TEST_HELPER"

func TestMain(m *testing.M) {
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

// readPids waits (bounded) until file holds want pids.
func readPids(t *testing.T, file string, want int) []int {
	t.Helper()
	var pids []int
	for deadline := time.Now().Add(30 * time.Second); len(pids) < want; {
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %d pids, want %d", file, len(pids), want)
		}
		time.Sleep(10 * time.Millisecond)
		b, _ := os.ReadFile(file)
		pids = pids[:0]
		for _, s := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(s); err == nil {
				pids = append(pids, p)
			}
		}
	}
	return pids
}

// waitGone polls /proc until none of pids runs; the bound catches a
// watchdog that never acts, it is not a timing assertion.
func waitGone(t *testing.T, pids []int) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; {
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
			t.Fatalf("processes %v outlived their parent's kill -9 by 60s", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	pids := readPids(t, pidFile, 4)
	for _, p := range pids {
		if !Alive(p) {
			t.Fatalf("tree process %d not running before the kill", p)
		}
	}
	if err := parent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	parent.Wait()
	waitGone(t, pids)
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
	if Alive(wpid) {
		t.Fatal("watchdog still runs after Close")
	}
	if !Alive(pids[0]) {
		t.Fatal("a disarmed watchdog killed a marked process")
	}
	if _, err := os.Stat(filepath.Join(dir, "death")); err == nil {
		t.Fatal("a disarmed watchdog ran its on-death command")
	}
}
