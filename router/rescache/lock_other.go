//go:build !unix

package rescache

import (
	"fmt"
	"os"
	"path/filepath"
)

// lockDir only creates the lock file where flock is missing: one cache per
// directory is then the operator's to ensure.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("rescache: lock %s: %w", dir, err)
	}
	return f, nil
}

func unlockDir(f *os.File) error { return f.Close() }
