package local

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRawStatOnlyOnLocalFS: the warm path's fstatat is a raw system call
// (which keeps the P and holds up a stop-the-world until it returns) only
// on file systems kept on local disks or in memory; a network or FUSE
// file system, whose stat may wait for a server indefinitely, and any
// type not known to be local get the ordinary call.
func TestRawStatOnlyOnLocalFS(t *testing.T) {
	for _, c := range []struct {
		name string
		typ  uint32
		want bool
	}{
		{"ext4", unix.EXT4_SUPER_MAGIC, true},
		{"xfs", unix.XFS_SUPER_MAGIC, true},
		{"btrfs", unix.BTRFS_SUPER_MAGIC, true},
		{"zfs", zfsSuperMagic, true},
		{"tmpfs", unix.TMPFS_MAGIC, true},
		{"overlay", unix.OVERLAYFS_SUPER_MAGIC, true},
		{"nfs", unix.NFS_SUPER_MAGIC, false},
		{"fuse", unix.FUSE_SUPER_MAGIC, false},
		{"cifs", unix.CIFS_SUPER_MAGIC, false},
		{"smb2", unix.SMB2_SUPER_MAGIC, false},
		{"ceph", unix.CEPH_SUPER_MAGIC, false},
		{"9p", unix.V9FS_MAGIC, false},
		{"procfs", unix.PROC_SUPER_MAGIC, false},
		{"unknown", 0x12345678, false},
	} {
		if got := localFS(c.typ); got != c.want {
			t.Errorf("localFS(%s) = %v, want %v", c.name, got, c.want)
		}
	}

	// On real descriptors: /proc is not a local store.
	proc, err := os.Open("/proc")
	if err != nil {
		t.Fatal(err)
	}
	defer proc.Close()
	if rawStatSafe(int(proc.Fd())) {
		t.Error("rawStatSafe on /proc: true")
	}

	// A Dir's kept bucket handle records the decision for its directory.
	d, root := newDir(t)
	put(t, d, "bkt", "k", "data")
	// The first read keeps it, the second revalidates it (opening the
	// handle).
	openMem(t, d, "bkt", "k", 0, -1)
	if _, _, mem := openMem(t, d, "bkt", "k", 0, -1); !mem {
		t.Fatal("second read not served from memory")
	}
	d.warm.bmu.RLock()
	b := d.warm.buckets["bkt"]
	d.warm.bmu.RUnlock()
	if b == nil || b.dir == nil {
		t.Fatal("no kept handle with a descriptor on bkt")
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(filepath.Join(root, "bkt"), &sfs); err != nil {
		t.Fatal(err)
	}
	if want := localFS(uint32(sfs.Type)); b.raw != want { //nolint:unconvert // varies by architecture
		t.Errorf("bucket on file system type %#x: raw %v, want %v", sfs.Type, b.raw, want)
	}

	// Both calls identify the same file, and fail alike on a missing one.
	for _, raw := range []bool{false, true} {
		id, regular, links, err := statAt(b.fd, "k", raw)
		fi, ferr := os.Lstat(filepath.Join(root, "bkt", "k"))
		want, _ := fileID(fi)
		if err != nil || ferr != nil || !regular || links != 1 || id != want {
			t.Errorf("statAt(raw %v): %+v %v %d links %v, want %+v (%v)", raw, id, regular, links, err, want, ferr)
		}
		if _, _, _, err := statAt(b.fd, "missing", raw); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("statAt(raw %v) of a missing file: %v", raw, err)
		}
	}
}
