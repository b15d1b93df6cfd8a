package local

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// fstatat is fstatat(2) without following a symbolic link, issued as a
// raw system call when raw is set (the directory is on a local file
// system, see rawStatSafe): statAt runs on every request for a warm object, whose
// directory entry and inode the kernel has just served (the object was
// opened to be cached), so the call returns in microseconds. An ordinary
// call marks the goroutine's P as in a system call, and the first such
// call after the process was idle wakes the runtime's system monitor into
// its 20 µs polling cycle for the next millisecond; on the request path
// that cost more CPU than the stat itself (see internal/rawio, which does
// the same for socket reads and writes).
func fstatat(dirfd int, name string, st *unix.Stat_t, raw bool) error {
	if !raw {
		return unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
	}
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	if _, _, e := unix.RawSyscall6(unix.SYS_NEWFSTATAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(st)), unix.AT_SYMLINK_NOFOLLOW, 0, 0); e != 0 {
		return e
	}
	return nil
}
