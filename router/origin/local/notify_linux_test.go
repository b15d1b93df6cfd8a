package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/doraproject/dora/router/origin"
)

// blessed reports whether bucket/key is kept and served without a stat.
func blessed(d *Dir, bucket, key string) bool {
	d.warm.hmu.RLock()
	defer d.warm.hmu.RUnlock()
	h := d.warm.hot[objectName{bucket, key}]
	return h != nil && h.blessed.Load()
}

// warmUp opens bucket/key until it is served without a stat: the first
// Open keeps it, the second opens the bucket's directory handle (and
// watches it), the third's stat through that handle blesses it; an event
// of the object's own creation still queued costs one more round.
func warmUp(t *testing.T, d *Dir, bucket, key string) {
	t.Helper()
	for range 6 {
		openMem(t, d, bucket, key, 0, -1)
		if blessed(d, bucket, key) {
			return
		}
	}
	t.Fatalf("%s/%s: not served from the watch after six reads", bucket, key)
}

// placeByHand writes data to root/bucket/key directly: an object with no
// sidecar, whose metadata the origin computes.
func placeByHand(t *testing.T, root, bucket, key, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, bucket), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, bucket, key), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// editKeepingTime writes b at the start of the file p in place and puts
// its modification time back: an edit no stat can tell (the same inode,
// size and time).
func editKeepingTime(t *testing.T, p, b string) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(b), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
}

// TestWatchedNeverStale: an object served without a stat (its directory
// watched) is dropped by every change made behind the origin's back, and
// the next Open, right after the change returned, sees it: a file renamed
// over it, an edit in place of the same size within the same clock tick,
// a truncate, a remove, and the bucket's directory replaced.
func TestWatchedNeverStale(t *testing.T) {
	d, root := newDir(t)
	p := filepath.Join(root, "bkt", "k")
	// Placed by hand (no sidecar), as every change below is made: an
	// object beside a sidecar of other bytes is never kept.
	placeByHand(t, root, "bkt", "k", "aaaa")
	warmUp(t, d, "bkt", "k")
	if got, _, mem := openMem(t, d, "bkt", "k", 0, -1); got != "aaaa" || !mem {
		t.Fatalf("watched read: %q from memory %v", got, mem)
	}

	renameOver(t, filepath.Join(root, "bkt"), filepath.Base(p), "bbbb")
	if got, _, _ := openMem(t, d, "bkt", "k", 0, -1); got != "bbbb" {
		t.Fatalf("after a rename over it: %q", got)
	}

	// In place, same size, the modification time put back: no stat could
	// tell; the event does.
	warmUp(t, d, "bkt", "k")
	editKeepingTime(t, p, "cc")
	if got, _, _ := openMem(t, d, "bkt", "k", 0, -1); got != "ccbb" {
		t.Fatalf("after an edit in place: %q", got)
	}

	warmUp(t, d, "bkt", "k")
	if err := os.Truncate(p, 1); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := openMem(t, d, "bkt", "k", 0, -1); got != "c" {
		t.Fatalf("after a truncate: %q", got)
	}

	warmUp(t, d, "bkt", "k")
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Open(context.Background(), "bkt", "k", 0, -1); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("after a remove: %v", err)
	}

	// The directory renamed away with the file still in it, a new one in
	// its place: the old handle's stat would still match.
	placeByHand(t, root, "bkt", "x", "dddd")
	warmUp(t, d, "bkt", "x")
	replaceBucketDir(t, root, "bkt", "x", "eeee")
	if got, _, _ := openMem(t, d, "bkt", "x", 0, -1); got != "eeee" {
		t.Fatalf("after the bucket directory was replaced: %q", got)
	}
	warmUp(t, d, "bkt", "x") // the new directory is watched in turn
	if err := os.WriteFile(filepath.Join(root, "bkt", "x"), []byte("ffff"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := openMem(t, d, "bkt", "x", 0, -1); got != "ffff" {
		t.Fatalf("an edit in the new bucket directory: %q", got)
	}
}

// TestWatchedNoStaleAfterWrite: readers never get a version older than
// the last one whose rename had returned when their Open began, while
// another goroutine renames new versions over the object as fast as it
// can (what the drain's draining flag and the FIONREAD before every
// watched read are for).
func TestWatchedNoStaleAfterWrite(t *testing.T) {
	d, root := newDir(t)
	put(t, d, "bkt", "v", fmt.Sprintf("%08d", 0))
	warmUp(t, d, "bkt", "v")
	var committed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tmp := filepath.Join(root, "bkt", "v.tmp")
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := os.WriteFile(tmp, fmt.Appendf(nil, "%08d", i), 0o600); err != nil {
				t.Error(err)
				return
			}
			if err := os.Rename(tmp, filepath.Join(root, "bkt", "v")); err != nil {
				t.Error(err)
				return
			}
			committed.Store(i)
		}
	}()
	var reads, watched atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c := committed.Load()
				if blessed(d, "bkt", "v") {
					watched.Add(1)
				}
				rc, _, err := d.Open(context.Background(), "bkt", "v", 0, -1)
				if err != nil {
					// The name is never missing: a rename replaces it at once.
					t.Errorf("open: %v", err)
					return
				}
				b, err := io.ReadAll(rc)
				rc.Close()
				if err != nil {
					t.Error(err)
					return
				}
				v, err := strconv.ParseInt(string(b), 10, 64)
				if err != nil {
					t.Errorf("read %q: %v", b, err)
					return
				}
				if v < c {
					t.Errorf("read version %d after version %d was in place", v, c)
					return
				}
				reads.Add(1)
			}
		}()
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	if committed.Load() < 10 || reads.Load() < 100 {
		t.Fatalf("too little ran to tell: %d versions written, %d reads", committed.Load(), reads.Load())
	}
	if watched.Load() == 0 {
		t.Fatalf("no read found the object watched (%d reads): the test did not exercise the watch", reads.Load())
	}
	t.Logf("%d versions, %d reads, %d of them with the object watched", committed.Load(), reads.Load(), watched.Load())
}

// TestWatchOverflowDropsAll: an overflowed event queue (events lost)
// drops every kept object; an event for a watch already removed drops
// nothing.
func TestWatchOverflowDropsAll(t *testing.T) {
	d, _ := newDir(t)
	for _, k := range []string{"a", "b"} {
		put(t, d, "bkt", k, "data")
		warmUp(t, d, "bkt", k)
	}
	ev := func(wd int32, mask uint32) []byte {
		e := unix.InotifyEvent{Wd: wd, Mask: mask}
		return unsafe.Slice((*byte)(unsafe.Pointer(&e)), unix.SizeofInotifyEvent)
	}
	d.warm.watch.mu.Lock()
	d.warm.watch.apply(&d.warm, ev(1<<30, unix.IN_MODIFY))
	d.warm.watch.mu.Unlock()
	if !blessed(d, "bkt", "a") || !blessed(d, "bkt", "b") {
		t.Fatal("an event of an unknown watch dropped objects")
	}
	d.warm.watch.mu.Lock()
	d.warm.watch.apply(&d.warm, ev(-1, unix.IN_Q_OVERFLOW))
	d.warm.watch.mu.Unlock()
	if n := d.warm.hotBytes(); n != 0 || blessed(d, "bkt", "a") {
		t.Fatalf("after an overflow: %d bytes kept", n)
	}
	warmUp(t, d, "bkt", "a")
}

// TestUnwatchedRevalidates: with no watch (inotify unavailable) nothing
// is served without a stat, and an edit in place is still seen.
func TestUnwatchedRevalidates(t *testing.T) {
	d, root := newDir(t)
	d.warm.watch.close()
	put(t, d, "bkt", "k", "aaaa")
	for range 3 {
		openMem(t, d, "bkt", "k", 0, -1)
	}
	if blessed(d, "bkt", "k") {
		t.Fatal("an object was trusted with no watch")
	}
	time.Sleep(10 * time.Millisecond) // a distinct mtime even on coarse clocks
	if err := os.WriteFile(filepath.Join(root, "bkt", "k"), []byte("bbbb"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := openMem(t, d, "bkt", "k", 0, -1); got != "bbbb" {
		t.Fatalf("after an edit in place: %q", got)
	}
}

// kernelWatches counts the watches the kernel holds on d's inotify
// descriptor.
func kernelWatches(t *testing.T, d *Dir) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", d.warm.watch.fd))
	if err != nil {
		t.Skipf("no fdinfo: %v", err)
	}
	return strings.Count(string(b), "inotify wd:")
}

// TestMovedBucketWatchReleased: the watch on a bucket directory moved
// away is released once its handle is forgotten (no watch leaked for
// as long as the moved directory lives), and a change in the moved
// directory drops nothing of the bucket now at its name.
func TestMovedBucketWatchReleased(t *testing.T) {
	d, root := newDir(t)
	placeByHand(t, root, "bkt", "x", "dddd")
	warmUp(t, d, "bkt", "x")
	old := filepath.Join(root, "old-bkt")
	if err := os.Rename(filepath.Join(root, "bkt"), old); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "bkt"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bkt", "x"), []byte("eeee"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := openMem(t, d, "bkt", "x", 0, -1); got != "eeee" {
		t.Fatalf("after the bucket directory was replaced: %q", got)
	}
	warmUp(t, d, "bkt", "x")
	if n := kernelWatches(t, d); n != 1 {
		t.Errorf("%d watches in the kernel, want 1 (the moved directory's is leaked)", n)
	}
	d.warm.watch.mu.Lock()
	n := len(d.warm.watch.byWD)
	d.warm.watch.mu.Unlock()
	if n != 1 {
		t.Errorf("%d watched directories, want 1", n)
	}
	if err := os.WriteFile(filepath.Join(old, "x"), []byte("zzzz"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _, mem := openMem(t, d, "bkt", "x", 0, -1); got != "eeee" || !mem || !blessed(d, "bkt", "x") {
		t.Errorf("after a write in the moved directory: %q, from memory %v, blessed %v", got, mem, blessed(d, "bkt", "x"))
	}
}

// TestHardLinkedObjectRevalidated: an object file with another name
// outside the bucket's directory (a hard link) is changed through that
// name with no event in the watched directory (inotify reports a change
// to the parent of the name it went through): it is never served
// without a stat, so the next Open sees the change, as before the watch.
func TestHardLinkedObjectRevalidated(t *testing.T) {
	d, root := newDir(t)
	put(t, d, "bkt", "k", "aaaa")
	other := filepath.Join(t.TempDir(), "k")
	if err := os.Link(filepath.Join(root, "bkt", "k"), other); err != nil {
		t.Skipf("no hard link: %v", err)
	}
	for range 4 {
		openMem(t, d, "bkt", "k", 0, -1)
	}
	if blessed(d, "bkt", "k") {
		t.Error("a file with two links is served without a stat")
	}
	time.Sleep(10 * time.Millisecond) // a distinct mtime even on coarse clocks
	if err := os.WriteFile(other, []byte("bbbb"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := openMem(t, d, "bkt", "k", 0, -1); got != "bbbb" {
		t.Fatalf("after an edit through the other link: %q", got)
	}
}

// TestKeepAfterDrainNotStale: a cold Open reads the object's bytes, an
// edit in place that no stat can tell (same size, the modification time
// put back) lands, and another Open takes its event in, all before the
// first Open keeps what it read: what it kept must not then be blessed
// (served with no stat) by a stat that matches.
func TestKeepAfterDrainNotStale(t *testing.T) {
	d, root := newDir(t)
	p := filepath.Join(root, "bkt", "k")
	put(t, d, "bkt", "k", "aaaa")
	warmUp(t, d, "bkt", "k") // the bucket's directory is watched
	d.warm.drop("bkt", "k")

	f, obj, _, err := d.openLocked("bkt", "k")
	if err != nil {
		t.Fatal(err)
	}
	h, since := d.warm.readHot(f, obj)
	f.Close()
	if h == nil || string(h.data) != "aaaa" {
		t.Fatalf("read %v", h)
	}

	editKeepingTime(t, p, "cc")
	if !d.warm.watch.pending() {
		t.Fatal("no event queued for the edit")
	}
	d.warm.watch.drain(&d.warm) // another Open's lookup
	d.warm.insert(h, since)

	for range 3 {
		if got, _, _ := openMem(t, d, "bkt", "k", 0, -1); got != "ccaa" {
			t.Fatalf("after an edit in place taken in before the keep: %q", got)
		}
	}
}

// TestCasefoldedBucketNotWatched: in a case-insensitive directory (ext4,
// f2fs or tmpfs casefolding) a key may name a file whose entry is spelt
// otherwise, and an event names the entry, not the key: such a directory
// is not watched, its objects are revalidated with a stat per Open.
// Skipped where no directory can be made case-insensitive.
func TestCasefoldedBucketNotWatched(t *testing.T) {
	d, root := newDir(t)
	dir := filepath.Join(root, "bkt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err == nil {
		err = unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags|fsCasefoldFL))
	}
	f.Close()
	if err != nil {
		t.Skipf("no case-insensitive directory here: %v", err)
	}
	put(t, d, "bkt", "k", "aaaa")
	for range 4 {
		if got, _, _ := openMem(t, d, "bkt", "K", 0, -1); got != "aaaa" {
			t.Fatalf("K: %q", got)
		}
	}
	if blessed(d, "bkt", "K") {
		t.Error("an object of a case-insensitive directory is served without a stat")
	}
	renameOver(t, dir, "k", "bbbb")
	if got, _, _ := openMem(t, d, "bkt", "K", 0, -1); got != "bbbb" {
		t.Fatalf("K after a rename over k: %q", got)
	}
}

// TestForgottenBucketEventsApplied: events queued for a bucket directory
// whose handle is then forgotten (its watch removed) are still applied:
// an edit in place that no stat tells, made just before the forget, is
// seen by the next Open through the reopened handle.
func TestForgottenBucketEventsApplied(t *testing.T) {
	d, root := newDir(t)
	p := filepath.Join(root, "bkt", "k")
	put(t, d, "bkt", "k", "aaaa")
	warmUp(t, d, "bkt", "k")
	editKeepingTime(t, p, "cc")
	// Another Open, its lookup's drain done just before the edit, found
	// some object of the bucket missing.
	d.warm.forgetBucket("bkt")
	for range 3 {
		if got, _, _ := openMem(t, d, "bkt", "k", 0, -1); got != "ccaa" {
			t.Fatalf("after an edit in place and the handle forgotten: %q", got)
		}
	}
}

// TestOtherSpellingNotBlessed: where another spelling of a key (its
// case swapped) names the same file, as in a case-insensitive directory
// that carries no flag saying so (a ZFS dataset with
// casesensitivity=insensitive, XFS ascii-ci), the object is never served
// without a stat: an event names the entry as it is spelt. The other
// spelling is made here with a bind mount of the file (skipped where
// mounts are not permitted).
func TestOtherSpellingNotBlessed(t *testing.T) {
	d, root := newDir(t)
	put(t, d, "bkt", "k", "aaaa")
	other := filepath.Join(root, "bkt", "K")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(filepath.Join(root, "bkt", "k"), other, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("no bind mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(other, unix.MNT_DETACH) })
	for range 4 {
		if got, _, _ := openMem(t, d, "bkt", "k", 0, -1); got != "aaaa" {
			t.Fatalf("k: %q", got)
		}
	}
	if blessed(d, "bkt", "k") {
		t.Error("an object another spelling of whose key names the same file is served without a stat")
	}
}
