//go:build unix

package local

import (
	"io/fs"
	"syscall"
)

// fileID identifies the file fi describes: device, inode, size and
// modification time.
func fileID(fi fs.FileInfo) (fileIdent, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileIdent{}, false
	}
	return fileIdent{dev: uint64(st.Dev), ino: uint64(st.Ino), size: fi.Size(), mtime: fi.ModTime().UnixNano()}, true //nolint:unconvert // Dev's type varies by platform
}
