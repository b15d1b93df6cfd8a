package local

import (
	"os"
	"path/filepath"
	"testing"
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
