//go:build unix

package rescache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDir takes the directory's lock file (flock, exclusive, not waiting):
// two caches on one directory would each bound only their own bytes and
// remove each other's files.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("rescache: lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("rescache: lock %s: %w", dir, err)
	}
	return f, nil
}

// unlockDir releases the lock (closing the file releases the flock).
func unlockDir(f *os.File) error { return f.Close() }
