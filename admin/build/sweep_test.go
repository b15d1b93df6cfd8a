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
