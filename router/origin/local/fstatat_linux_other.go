//go:build linux && !amd64

package local

import "golang.org/x/sys/unix"

// fstatat is fstatat(2) without following a symbolic link.
func fstatat(dirfd int, name string, st *unix.Stat_t) error {
	return unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
}
