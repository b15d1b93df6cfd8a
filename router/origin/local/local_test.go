package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora/router/origin"
)

// Expected etags computed independently with python3 from the algorithm:
// size <= 4 MiB: urlsafe_b64(b'\x16' + sha1(data)); else
// urlsafe_b64(b'\x96' + sha1(b”.join(sha1(block) for each 4 MiB block))).
func TestETag(t *testing.T) {
	pattern := make([]byte, 9<<20)
	for i := range pattern {
		pattern[i] = byte(i % 251)
	}
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "Fto5o-5ea0sNMlW_75VgGJCv2AcJ"},
		{"hello", []byte("hello"), "Fqr0xh3cxeii2r7eDztILNmuqUNN"},
		{"one block exactly", bytes.Repeat([]byte("a"), 4<<20), "FuwQ-vpd56Izwiom1JHzCIdrQa4_"},
		{"one block plus one", bytes.Repeat([]byte("a"), 4<<20+1), "lieGn00gWdbfwEIHaUpzu4drHeun"},
		{"three blocks", pattern, "lv4Ew6JqZ47UmtoHTb4ntxxH-h5H"},
	}
	for _, tt := range tests {
		// iotest-style small reads exercise block boundaries inside writes.
		got, n, err := ETag(io.MultiReader(bytes.NewReader(tt.data[:len(tt.data)/3]), bytes.NewReader(tt.data[len(tt.data)/3:])))
		if err != nil || got != tt.want || n != int64(len(tt.data)) {
			t.Errorf("%s: ETag = %q, %d, %v; want %q", tt.name, got, n, err, tt.want)
		}
	}
}

func newDir(t *testing.T) (*Dir, string) {
	t.Helper()
	root := t.TempDir()
	d, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, root
}

func put(t *testing.T, d *Dir, bucket, key, data string) origin.Object {
	t.Helper()
	obj, err := d.Put(context.Background(), bucket, key, strings.NewReader(data), origin.PutOptions{})
	if err != nil {
		t.Fatalf("Put(%s, %q): %v", bucket, key, err)
	}
	return obj
}

func read(t *testing.T, d *Dir, bucket, key string, off, n int64) (string, origin.Object) {
	t.Helper()
	rc, obj, err := d.Open(context.Background(), bucket, key, off, n)
	if err != nil {
		t.Fatalf("Open(%s, %q): %v", bucket, key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), obj
}

func TestSymlinksCannotEscape(t *testing.T) {
	d, root := newDir(t)
	ctx := context.Background()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	put(t, d, "victim", "private", "other bucket")
	put(t, d, "bkt", "seed", "x")
	links := map[string]string{
		"out":        outside,                           // absolute, out of the tree
		"rel":        "../../" + filepath.Base(outside), // relative, out of the tree
		"peer":       "../victim",                       // into another bucket
		"secretfile": filepath.Join(outside, "secret"),
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, "bkt", name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, key := range []string{"out/secret", "rel/secret", "peer/private", "secretfile"} {
		if rc, _, err := d.Open(ctx, "bkt", key, 0, -1); err == nil {
			b, _ := io.ReadAll(rc)
			rc.Close()
			t.Errorf("Open(%q) escaped the bucket and read %q", key, b)
		}
	}
	for _, key := range []string{"out/planted", "rel/planted", "peer/planted"} {
		if _, err := d.Put(ctx, "bkt", key, strings.NewReader("evil"), origin.PutOptions{}); err == nil {
			t.Errorf("Put(%q) succeeded through a symlink", key)
		}
	}
	for _, p := range []string{filepath.Join(outside, "planted"), filepath.Join(root, "victim", "planted")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s was written through a symlink", p)
		}
	}
	objs, err := d.List(ctx, "bkt", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Key != "seed" {
		t.Errorf("List followed symlinks: %+v", objs)
	}
}

func TestDeleteAndPrefixConflicts(t *testing.T) {
	d, root := newDir(t)
	ctx := context.Background()
	put(t, d, "bkt", "a/b/c", "x")
	if _, err := d.Put(ctx, "bkt", "a", strings.NewReader("y"), origin.PutOptions{}); !errors.Is(err, origin.ErrExists) {
		t.Fatalf("Put over a prefix directory = %v, want ErrExists", err)
	}
	put(t, d, "bkt", "f", "x")
	if _, err := d.Put(ctx, "bkt", "f/g", strings.NewReader("y"), origin.PutOptions{}); !errors.Is(err, origin.ErrExists) {
		t.Fatalf("Put under an object = %v, want ErrExists", err)
	}
	if err := d.Delete(ctx, "bkt", "a/b"); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("Delete of a prefix directory = %v, want ErrNotFound", err)
	}
	if err := d.Delete(ctx, "bkt", "a/b/c"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, "bkt", "a/b/c"); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("Stat after Delete = %v", err)
	}
	if err := d.Delete(ctx, "bkt", "a/b/c"); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("second Delete = %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "bkt", "a")); !os.IsNotExist(err) {
		t.Fatalf("empty prefix directories not pruned: %v", err)
	}
	put(t, d, "bkt", "a", "now a key")
	if err := d.Delete(ctx, "none", "x"); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("Delete in missing bucket = %v", err)
	}
}

func TestFileWithoutSidecar(t *testing.T) {
	d, root := newDir(t)
	if err := os.MkdirAll(filepath.Join(root, "bkt", "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bkt", "dir", "h.txt"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, obj := read(t, d, "bkt", "dir/h.txt", 0, -1)
	if got != "hello" || obj.ETag != "Fqr0xh3cxeii2r7eDztILNmuqUNN" || obj.Size != 5 || !strings.HasPrefix(obj.MimeType, "text/plain") {
		t.Fatalf("hand-placed file: %q %+v", got, obj)
	}
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("boom")
	}
	k := min(len(p), f.n)
	f.n -= k
	return k, nil
}

func TestFailedPutLeavesNothing(t *testing.T) {
	d, root := newDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Put(ctx, "bkt", "k", strings.NewReader("x"), origin.PutOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with canceled ctx = %v", err)
	}
	if _, err := d.Put(context.Background(), "bkt", "k", &failingReader{n: 10000}, origin.PutOptions{}); err == nil {
		t.Fatal("Put from a failing reader succeeded")
	}
	if _, err := d.Stat(context.Background(), "bkt", "k"); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("failed Put left an object: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Join(root, tmpDir))
	if len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

// TestSidecarCacheFollowsTheFile: cached metadata is only used for the
// data file it was read for: an overwrite of the same size, a file
// replaced by hand (no sidecar of its own) and a delete all show through.
func TestSidecarCacheFollowsTheFile(t *testing.T) {
	d, root := newDir(t)
	first := put(t, d, "bkt", "k.txt", "aaaa")
	if _, obj := read(t, d, "bkt", "k.txt", 0, -1); obj.ETag != first.ETag {
		t.Fatalf("first read: %+v", obj)
	}
	if _, obj := read(t, d, "bkt", "k.txt", 0, -1); obj.ETag != first.ETag { // from the cache
		t.Fatalf("cached read: %+v", obj)
	}
	second := put(t, d, "bkt", "k.txt", "bbbb")
	if got, obj := read(t, d, "bkt", "k.txt", 0, -1); got != "bbbb" || obj.ETag != second.ETag || obj.ETag == first.ETag {
		t.Fatalf("after an overwrite of the same size: %q %+v", got, obj)
	}
	// Replaced behind the origin's back by a file of another size: its
	// sidecar no longer fits, the metadata is computed.
	tmp := filepath.Join(root, "bkt", "new")
	if err := os.WriteFile(tmp, []byte("ccccc"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(root, "bkt", "k.txt")); err != nil {
		t.Fatal(err)
	}
	want, _, err := ETag(strings.NewReader("ccccc"))
	if err != nil {
		t.Fatal(err)
	}
	if got, obj := read(t, d, "bkt", "k.txt", 0, -1); got != "ccccc" || obj.ETag != want || obj.Size != 5 {
		t.Fatalf("a replaced file: %q %+v, want etag %s", got, obj, want)
	}
	if err := d.Delete(context.Background(), "bkt", "k.txt"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Open(context.Background(), "bkt", "k.txt", 0, -1); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

// TestSidecarOfOtherBytesNotTrusted: two processes' Puts of one key can
// interleave their renames (data 1, data 2, sidecar 2, sidecar 1) and leave
// the second's data beside the first's sidecar, of the same size here (a
// fixed-size result such as a hash) and not older than the data. The old
// etag must not describe the new bytes, neither in a process that never
// read the object nor in one that kept the first sidecar; once a sidecar
// for the data is in place, its metadata (a MIME type of its own) is
// served.
func TestSidecarOfOtherBytesNotTrusted(t *testing.T) {
	d, root := newDir(t)
	// The second Put's data, written before the first Put's sidecar.
	tmp := filepath.Join(root, tmpDir, "second")
	if err := os.WriteFile(tmp, []byte("bbbb"), 0o644); err != nil {
		t.Fatal(err)
	}
	first := put(t, d, "bkt", "h.txt", "aaaa")
	if _, obj := read(t, d, "bkt", "h.txt", 0, -1); obj.ETag != first.ETag { // d keeps the sidecar
		t.Fatalf("first read: %+v", obj)
	}
	if err := os.Rename(tmp, filepath.Join(root, "bkt", "h.txt")); err != nil {
		t.Fatal(err)
	}
	want, _, err := ETag(strings.NewReader("bbbb"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	dirs := map[string]*Dir{"the process that kept the first sidecar": d, "a fresh process": other}
	for name, dir := range dirs {
		for range 2 { // computed, then from the cache
			if got, obj := read(t, dir, "bkt", "h.txt", 0, -1); got != "bbbb" || obj.ETag != want {
				t.Errorf("%s: %q %+v, want etag %s", name, got, obj, want)
			}
		}
	}

	// The data's own sidecar is renamed into place (in the same clock
	// tick, maybe: a new file all the same).
	fi, err := os.Stat(filepath.Join(root, "bkt", "h.txt"))
	if err != nil {
		t.Fatal(err)
	}
	scb, err := json.Marshal(sidecar{Size: 4, ETag: want, MimeType: "application/x-other", Modified: time.Now().UTC(),
		DataMtime: fi.ModTime().UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, scb, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(root, metaDir, "bkt", "h.txt")); err != nil {
		t.Fatal(err)
	}
	for name, dir := range dirs {
		if got, obj := read(t, dir, "bkt", "h.txt", 0, -1); got != "bbbb" || obj.ETag != want || obj.MimeType != "application/x-other" {
			t.Errorf("%s, once its sidecar is in place: %q %+v", name, got, obj)
		}
	}
}

// TestPutSidecarDescribesItsFile: the sidecar a Put writes names its data
// file, also after a copy of the tree that keeps modification times (new
// inodes), and no longer once the file is replaced by another of the same
// size written in the same instant's clock tick.
func TestPutSidecarDescribesItsFile(t *testing.T) {
	d, root := newDir(t)
	put(t, d, "bkt", "k", "aaaa")
	describes := func(dir string) bool {
		t.Helper()
		other, err := New(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		sc, scf, ok := other.readSidecar("bkt", "k")
		if !ok || sc.DataMtime == 0 {
			t.Fatalf("sidecar %+v, %v: no data file named", sc, ok)
		}
		fi, err := os.Stat(filepath.Join(dir, "bkt", "k"))
		if err != nil {
			t.Fatal(err)
		}
		return sc.describes(fi, scf.written)
	}
	if !describes(root) {
		t.Fatal("a Put's sidecar does not describe its own data file")
	}
	// A copy keeping the times (cp -a): new inodes, the same times.
	cp := t.TempDir()
	for _, rel := range []string{"bkt/k", metaDir + "/bkt/k"} {
		fi, err := os.Stat(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(cp, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(dst, fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
	if !describes(cp) {
		t.Fatal("after a copy that keeps times, the sidecar no longer describes its data file")
	}
	// Replaced by hand with other bytes of the same size, its time
	// truncated to the file system's tick: not the file the sidecar names.
	if err := os.WriteFile(filepath.Join(root, "bkt", "k"), []byte("bbbb"), 0o600); err != nil {
		t.Fatal(err)
	}
	if describes(root) {
		t.Fatal("the sidecar describes a file written after it")
	}
}

// TestFIFOsDoNotHang: a FIFO where an object's data file or its sidecar
// should be is no object (or no sidecar), at once: an open for reading
// would wait for a writer for ever.
func TestFIFOsDoNotHang(t *testing.T) {
	d, root := newDir(t)
	put(t, d, "bkt", "meta", "aaaa")
	if err := syscall.Mkfifo(filepath.Join(root, metaDir, "bkt", "meta.new"), 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	if err := os.Rename(filepath.Join(root, metaDir, "bkt", "meta.new"), filepath.Join(root, metaDir, "bkt", "meta")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "bkt", "data"), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if got, obj := read(t, d, "bkt", "meta", 0, -1); got != "aaaa" || obj.Size != 4 {
			t.Errorf("object whose sidecar is a FIFO: %q %+v", got, obj)
		}
		if _, _, err := d.Open(context.Background(), "bkt", "data", 0, -1); !errors.Is(err, origin.ErrNotFound) {
			t.Errorf("a FIFO as data file: %v, want ErrNotFound", err)
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("an open of a FIFO hangs")
	}
}

// A valid key with a path segment longer than a file name may be (255
// bytes here) names no object: Stat and Open say not found (so a bucket's
// mirror is asked) and a listing under it is empty, where they failed
// with "file name too long"; a Put of it is a bad key for this store.
func TestSegmentTooLongForTheFileSystem(t *testing.T) {
	d, _ := newDir(t)
	ctx := context.Background()
	put(t, d, "bkt", "a", "x")
	long := strings.Repeat("n", 300)
	for _, k := range []string{long, long + "/b", "a2/" + long} {
		if _, err := d.Stat(ctx, "bkt", k); !errors.Is(err, origin.ErrNotFound) {
			t.Errorf("Stat(%.12s…) = %v, want ErrNotFound", k, err)
		}
		if _, _, err := d.Open(ctx, "bkt", k, 0, -1); !errors.Is(err, origin.ErrNotFound) {
			t.Errorf("Open(%.12s…) = %v, want ErrNotFound", k, err)
		}
		if err := d.Delete(ctx, "bkt", k); !errors.Is(err, origin.ErrNotFound) {
			t.Errorf("Delete(%.12s…) = %v, want ErrNotFound", k, err)
		}
		if _, err := d.Put(ctx, "bkt", k, strings.NewReader("x"), origin.PutOptions{}); !errors.Is(err, origin.ErrBadKey) {
			t.Errorf("Put(%.12s…) = %v, want ErrBadKey", k, err)
		}
	}
	if keys, err := d.Keys(ctx, "bkt", long+"/"); err != nil || len(keys) != 0 {
		t.Errorf("Keys under a too long segment = %q, %v", keys, err)
	}
	if got, _ := read(t, d, "bkt", "a", 0, -1); got != "x" {
		t.Errorf("a = %q", got)
	}
	// The refused Put left no directory behind to block a key.
	put(t, d, "bkt", "a2", "y")
}
