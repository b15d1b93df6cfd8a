package local

import (
	"io/fs"

	"golang.org/x/sys/unix"
)

// statAtSupported: statAt works here.
const statAtSupported = true

// statAt identifies the file name (one path element) in the directory dirfd
// without following a symbolic link, as fileID would from its FileInfo,
// and reports whether it is a regular file.
func statAt(dirfd int, name string) (fileIdent, bool, error) {
	var st unix.Stat_t
	if err := fstatat(dirfd, name, &st); err != nil {
		return fileIdent{}, false, &fs.PathError{Op: "fstatat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fileIdent{}, false, nil
	}
	return fileIdent{dev: uint64(st.Dev), ino: uint64(st.Ino), size: int64(st.Size), mtime: st.Mtim.Nano()}, true, nil //nolint:unconvert // field types vary by architecture
}
