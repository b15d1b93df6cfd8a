//go:build !linux

package local

import "errors"

// statAtSupported: no descriptor fast path here (warm.stat goes through
// os.Root).
const statAtSupported = false

func statAt(int, string, bool) (fileIdent, bool, uint64, error) {
	return fileIdent{}, false, 0, errors.ErrUnsupported
}

func rawStatSafe(int) bool { return false }
