package build

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/procsweep"
)

// Working directories of builds interrupted by a crash are removed when a
// Builder starts; finished results stay.
func TestNewSweepsHalfBuilds(t *testing.T) {
	root := t.TempDir()
	half := []string{"result.tmp-123", "home.tmp-456", "resource.tmp-789"}
	for _, n := range append(half, "result") {
		if err := os.MkdirAll(filepath.Join(root, "grepd", "1", n, "sub"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := NewWithConfig(Config{Root: root}); err != nil {
		t.Fatal(err)
	}
	for _, n := range half {
		if _, err := os.Stat(filepath.Join(root, "grepd", "1", n)); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", n, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "grepd", "1", "result", "sub")); err != nil {
		t.Errorf("a finished result was removed: %v", err)
	}
}

const runLineChildEnv = "DORA_BUILD_RUNLINE_CHILD"

// A build line dies with the process running it: the child test process
// runs a line (a long sleep), is killed with SIGKILL, and the line's
// process is gone soon after instead of being re-parented and left running.
func TestBuildLineDiesWithDorad(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command(os.Args[0], "-test.run=^TestRunLineChild$")
	cmd.Env = append(os.Environ(), runLineChildEnv+"="+pidFile)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	for deadline := time.Now().Add(30 * time.Second); pid == 0; {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the line never started")
		}
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if !alive(pid) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("build line %d still running after its parent was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func TestRunLineChild(t *testing.T) {
	pidFile := os.Getenv(runLineChildEnv)
	if pidFile == "" {
		t.Skip("helper process of TestBuildLineDiesWithDorad")
	}
	_ = runLine(context.Background(), t.TempDir(), os.Environ(), nil,
		"echo $$ > "+pidFile+"; exec sleep 300", os.Stderr)
}

const compoundChildEnv = "DORA_BUILD_COMPOUND_CHILD"

// A compound build line's whole tree dies with its dorad: the child test
// process (a dorad) builds with a line running a job and a pipeline in the
// background and a process that leaves the session (setsid), and is killed
// with SIGKILL. Nothing else runs after that, yet every process of the
// line goes (the shell by its parent-death signal, the rest by the
// Builder's watchdog) and so does the half build's working directory.
func TestCompoundBuildLineDiesWithDorad(t *testing.T) {
	root := t.TempDir()
	pidFile := filepath.Join(t.TempDir(), "pids")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCompoundLineChild$")
	cmd.Env = append(os.Environ(), compoundChildEnv+"="+root+"|"+pidFile)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pids []int
	for deadline := time.Now().Add(60 * time.Second); len(pids) < 4; {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the line wrote %d pids, want 4", len(pids))
		}
		time.Sleep(20 * time.Millisecond)
		b, _ := os.ReadFile(pidFile)
		pids = pids[:0]
		for _, f := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(f); err == nil {
				pids = append(pids, p)
			}
		}
	}
	t.Cleanup(func() {
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
		procsweep.Sweep(procsweep.Owner("build", root)) // also the pipeline's first end
	})
	half, _ := filepath.Glob(filepath.Join(root, "testufop", "1", "*.tmp-*"))
	if len(half) == 0 {
		t.Fatal("no working directory of the running build")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	// Bounded polls: they catch a watchdog that never acts, not a speed.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var left []int
		for _, p := range pids {
			if alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes %v of the killed dorad's build line still run 60s later", left)
		}
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		left, _ := filepath.Glob(filepath.Join(root, "testufop", "1", "*.tmp-*"))
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("half build directories %v still there 60s after the kill", left)
		}
	}
}

func TestCompoundLineChild(t *testing.T) {
	v := os.Getenv(compoundChildEnv)
	if v == "" {
		t.Skip("helper process of TestCompoundBuildLineDiesWithDorad")
	}
	root, pidFile, _ := strings.Cut(v, "|")
	b, err := NewWithConfig(Config{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	unpackScript(t, b, 1, "sleep 300 & echo $! >> "+pidFile+"; sleep 301 | sleep 303 & echo $! >> "+pidFile+"; "+
		"setsid sleep 302 & echo $! >> "+pidFile+"; echo $$ >> "+pidFile+"; wait")
	_ = b.Build(context.Background(), "testufop", 1, "", os.Stderr)
}
