package local

import (
	"io/fs"

	"golang.org/x/sys/unix"
)

// statAtSupported: statAt works here.
const statAtSupported = true

// statAt identifies the file name (one path element) in the directory dirfd
// without following a symbolic link, as fileID would from its FileInfo,
// and reports whether it is a regular file and how many names (hard
// links) it has. raw (see rawStatSafe) lets the call be a raw system call
// where one is implemented.
func statAt(dirfd int, name string, raw bool) (id fileIdent, regular bool, links uint64, err error) {
	var st unix.Stat_t
	if err := fstatat(dirfd, name, &st, raw); err != nil {
		return fileIdent{}, false, 0, &fs.PathError{Op: "fstatat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fileIdent{}, false, 0, nil
	}
	return fileIdent{dev: uint64(st.Dev), ino: uint64(st.Ino), size: int64(st.Size), mtime: st.Mtim.Nano()}, true, uint64(st.Nlink), nil //nolint:unconvert // field types vary by architecture
}

// rawStatSafe reports whether the directory dirfd is on a file system
// whose metadata this machine holds (a local disk or memory), where a
// stat may be issued as a raw system call.
//
// A raw call keeps its goroutine's P and cannot be retaken by the
// runtime, and a stop-the-world (every GC cycle has two) waits until it
// returns. On a local file system the worst is one disk read for an inode
// the kernel evicted, the same as a page fault anywhere in the process. On
// NFS, SMB, FUSE (a SeaweedFS or s3fs mount), Ceph or 9p a stat may wait
// for a server, on a hard NFS mount for as long as the server is gone: a
// raw call would then stop the whole router at the next GC instead of
// one request. Unknown types count as remote.
func rawStatSafe(dirfd int) bool {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(dirfd, &sfs); err != nil {
		return false
	}
	return localFS(uint32(sfs.Type)) //nolint:unconvert // int64, int32 or uint32 by architecture
}

// zfsSuperMagic is ZFS on Linux's statfs f_type (not in x/sys/unix).
const zfsSuperMagic = 0x2fc12fc1

// localFS reports whether statfs type t is a file system kept on local
// disks or in memory.
func localFS(t uint32) bool {
	switch t {
	case unix.EXT4_SUPER_MAGIC, // ext2, ext3, ext4
		unix.XFS_SUPER_MAGIC,
		unix.BTRFS_SUPER_MAGIC,
		unix.F2FS_SUPER_MAGIC,
		unix.BCACHEFS_SUPER_MAGIC,
		zfsSuperMagic,
		unix.TMPFS_MAGIC,
		unix.RAMFS_MAGIC,
		// A container's root: its layers are local directories.
		unix.OVERLAYFS_SUPER_MAGIC:
		return true
	}
	return false
}
