//go:build linux && !amd64

package local

import "golang.org/x/sys/unix"

// fstatat is fstatat(2) without following a symbolic link (no raw
// variant on this architecture: raw is ignored).
func fstatat(dirfd int, name string, st *unix.Stat_t, _ bool) error {
	return unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
}
