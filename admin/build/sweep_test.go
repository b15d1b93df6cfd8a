package build

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/procsweep"
	"github.com/doraproject/dora/internal/procsweep/proctest"
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
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := proctest.ReadPids(t, pidFile, 1)[0]
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	proctest.WaitGone(t, "the build line of the killed parent", []int{pid})
}

func TestRunLineChild(t *testing.T) {
	pidFile := os.Getenv(runLineChildEnv)
	if pidFile == "" {
		t.Skip("helper process of TestBuildLineDiesWithDorad")
	}
	_ = runLine(context.Background(), procsweep.NewSpawner().Start, t.TempDir(), os.Environ(), nil,
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
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pids := proctest.ReadPids(t, pidFile, 4)
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
	proctest.WaitGone(t, "processes of the killed dorad's build line", pids)
	// Bounded: it catches a watchdog that never acts, not a speed.
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
