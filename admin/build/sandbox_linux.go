package build

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
)

// maxTreeDepth bounds the directory depth ChownTree and SealTree descend.
const maxTreeDepth = 256

// ChownTree gives dir and everything below it to u. It never follows a
// symbolic link, also when user code still running as u swaps entries
// while it works: every step opens relative to its parent's descriptor with
// O_NOFOLLOW, so it can never reach outside dir.
func ChownTree(dir string, u *User) error { return ChownTreeContext(context.Background(), dir, u) }

// ChownTreeContext is ChownTree, stopping with ctx's error (between
// entries) once ctx is done.
func ChownTreeContext(ctx context.Context, dir string, u *User) error {
	if u == nil {
		return nil
	}
	return fixTree(ctx, dir, int(u.Uid), int(u.Gid), false, -1)
}

// SealTree gives dir and everything below it, which must all belong to u,
// back to the platform's user and removes group/other write and set-id
// bits, so user code (any process still running as u) can no longer change
// a finished build. An entry u does not own is an error: the build could
// only have hard-linked it there (a platform file, where hard links are
// not restricted), and sealing would publish it. Like ChownTree it never
// follows symbolic links.
func SealTree(dir string, u *User) error { return SealTreeContext(context.Background(), dir, u) }

// SealTreeContext is SealTree, stopping with ctx's error (between entries)
// once ctx is done; the tree is not sealed then.
func SealTreeContext(ctx context.Context, dir string, u *User) error {
	owner := -1
	if u != nil {
		owner = int(u.Uid)
	}
	return fixTree(ctx, dir, os.Getuid(), os.Getgid(), true, owner)
}

// ErrForeignFile is returned by SealTree for an entry the run-as user does
// not own.
var ErrForeignFile = errors.New("file not owned by the run-as user")

func fixTree(ctx context.Context, dir string, uid, gid int, seal bool, owner int) error {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	if err := fixFd(ctx, fd, dir, uid, gid, seal, owner, 0); err != nil {
		return err
	}
	return nil
}

// fixFd fixes the open file fd (closing it) and, for a directory, its
// entries.
func fixFd(ctx context.Context, fd int, name string, uid, gid int, seal bool, owner, depth int) error {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if err := ctx.Err(); err != nil {
		return err
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", name, err)
	}
	if owner >= 0 && int(st.Uid) != owner {
		return fmt.Errorf("%s: %w (uid %d)", name, ErrForeignFile, st.Uid)
	}
	if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		if depth >= maxTreeDepth {
			return fmt.Errorf("%s: deeper than %d directories", name, maxTreeDepth)
		}
		names, err := f.Readdirnames(-1)
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		for _, n := range names {
			if err := fixEntry(ctx, fd, name, n, uid, gid, seal, owner, depth); err != nil {
				return err
			}
		}
	}
	if err := syscall.Fchown(fd, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", name, err)
	}
	if seal {
		mode := st.Mode & 0o7777
		if clean := mode &^ (0o022 | syscall.S_ISUID | syscall.S_ISGID); clean != mode {
			if err := syscall.Fchmod(fd, clean); err != nil {
				return fmt.Errorf("chmod %s: %w", name, err)
			}
		}
	}
	return nil
}

func fixEntry(ctx context.Context, dirfd int, dirName, n string, uid, gid int, seal bool, owner, depth int) error {
	p := dirName + "/" + n
	fd, err := syscall.Openat(dirfd, n, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	switch {
	case err == nil:
		return fixFd(ctx, fd, p, uid, gid, seal, owner, depth+1)
	case errors.Is(err, syscall.ENOENT):
		return nil // removed meanwhile
	}
	// A symbolic link (ELOOP) or a socket (ENXIO): change the entry itself.
	if err := syscall.Fchownat(dirfd, n, uid, gid, _AT_SYMLINK_NOFOLLOW); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("chown %s: %w", p, err)
	}
	return nil
}

// _AT_SYMLINK_NOFOLLOW is AT_SYMLINK_NOFOLLOW from <fcntl.h>.
const _AT_SYMLINK_NOFOLLOW = 0x100
