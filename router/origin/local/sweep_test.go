package local

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Temporary files of interrupted uploads are removed when a Dir opens;
// one still locked by a live writer (another process on the same
// directory) is left alone.
func TestNewSweepsOrphanTempFiles(t *testing.T) {
	root := t.TempDir()
	if _, err := New(root); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(root, tmpDir, "orphan")
	if err := os.WriteFile(orphan, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(root, tmpDir, "live")
	f, err := os.Create(live)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	d, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("orphan temp file still there: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("a locked (live) temp file was removed: %v", err)
	}
}
