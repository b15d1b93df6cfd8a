package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/router/origin"
)

// openMem opens bucket/key and reports whether it came from memory.
func openMem(t *testing.T, d *Dir, bucket, key string, off, n int64) (string, origin.Object, bool) {
	t.Helper()
	rc, obj, err := d.Open(context.Background(), bucket, key, off, n)
	if err != nil {
		t.Fatalf("open %s/%s: %v", bucket, key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	_, mem := rc.(*MemReader)
	return string(b), obj, mem
}

// renameOver writes data to a new file in dir and renames it over name,
// behind the origin's back (as an editor or a deploy script would).
func renameOver(t *testing.T, dir, name, data string) {
	t.Helper()
	tmp := filepath.Join(dir, "tmp")
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// replaceBucketDir renames root/bucket away (to old-<bucket>, its files
// still in it) and makes a new directory in its place holding key with
// data, behind the origin's back.
func replaceBucketDir(t *testing.T, root, bucket, key, data string) {
	t.Helper()
	if err := os.Rename(filepath.Join(root, bucket), filepath.Join(root, "old-"+bucket)); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, bucket), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, bucket, key), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestWarmServesFreshBytes: a small object is served from memory once
// read, with its range, and never stale: an overwrite through Put, a file
// renamed over it, an edit in place, a delete and a replaced bucket
// directory are all seen by the next Open.
func TestWarmServesFreshBytes(t *testing.T) {
	d, root := newDir(t)
	first := put(t, d, "bkt", "k.txt", "aaaa")
	openMem(t, d, "bkt", "k.txt", 0, -1)
	got, obj, mem := openMem(t, d, "bkt", "k.txt", 0, -1)
	if got != "aaaa" || obj.ETag != first.ETag || !mem {
		t.Fatalf("warm read: %q %+v from memory %v", got, obj, mem)
	}
	if got, _, mem := openMem(t, d, "bkt", "k.txt", 1, 2); got != "aa" || !mem {
		t.Fatalf("warm range: %q %v", got, mem)
	}

	second := put(t, d, "bkt", "k.txt", "bbbb")
	if got, obj, _ := openMem(t, d, "bkt", "k.txt", 0, -1); got != "bbbb" || obj.ETag != second.ETag {
		t.Fatalf("after Put: %q %+v", got, obj)
	}

	// Renamed over it behind the origin's back (same size).
	p := filepath.Join(root, "bkt", "k.txt")
	renameOver(t, filepath.Join(root, "bkt"), filepath.Base(p), "cccc")
	if got, _, _ := openMem(t, d, "bkt", "k.txt", 0, -1); got != "cccc" {
		t.Fatalf("after a rename over it: %q", got)
	}

	// Edited in place, same size: the modification time changes.
	openMem(t, d, "bkt", "k.txt", 0, -1)
	time.Sleep(10 * time.Millisecond) // a distinct mtime even on coarse clocks
	if err := os.WriteFile(p, []byte("dddd"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := openMem(t, d, "bkt", "k.txt", 0, -1); got != "dddd" {
		t.Fatalf("after an edit in place: %q", got)
	}

	if err := d.Delete(context.Background(), "bkt", "k.txt"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Open(context.Background(), "bkt", "k.txt", 0, -1); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("after Delete: %v", err)
	}

	// Removed behind the origin's back.
	put(t, d, "bkt", "gone", "eeee")
	openMem(t, d, "bkt", "gone", 0, -1)
	if err := os.Remove(filepath.Join(root, "bkt", "gone")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Open(context.Background(), "bkt", "gone", 0, -1); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("after an external remove: %v", err)
	}

	// The bucket's directory replaced: the kept handle is not trusted.
	put(t, d, "bkt", "x", "ffff")
	openMem(t, d, "bkt", "x", 0, -1)
	replaceBucketDir(t, root, "bkt", "x", "gggg")
	if got, _, _ := openMem(t, d, "bkt", "x", 0, -1); got != "gggg" {
		t.Fatalf("after the bucket directory was replaced: %q", got)
	}
	if got, _, _ := openMem(t, d, "bkt", "x", 0, -1); got != "gggg" {
		t.Fatalf("second read after the bucket directory was replaced: %q", got)
	}
}

// TestWarmBounded: objects above the object bound stream from their file,
// and the memory kept stays within its bound under many distinct objects.
func TestWarmBounded(t *testing.T) {
	d, _ := newDir(t)
	d.SetHotCache(1000, 10_000)
	big := strings.Repeat("b", 1001)
	put(t, d, "bkt", "big", big)
	openMem(t, d, "bkt", "big", 0, -1)
	if got, _, mem := openMem(t, d, "bkt", "big", 0, -1); got != big || mem {
		t.Fatalf("an object above the bound: %d bytes, from memory %v", len(got), mem)
	}
	body := strings.Repeat("s", 900)
	for i := range 100 {
		k := fmt.Sprintf("k%d", i)
		put(t, d, "bkt", k, body)
		if got, _, _ := openMem(t, d, "bkt", k, 0, -1); got != body {
			t.Fatalf("%s: %d bytes", k, len(got))
		}
		if n := d.warm.hotBytes(); n > 10_000 || n <= 0 {
			t.Fatalf("after %d objects the warm cache holds %d bytes (bound 10000)", i+1, n)
		}
	}
}

// A length past the end reads to the end from memory as from the file:
// offset+length overflowing int64 made the kept object's slice bounds
// negative (a panic) where the cold path read to the end.
func TestWarmLengthPastTheEnd(t *testing.T) {
	d, _ := newDir(t)
	put(t, d, "bkt", "a", "hello")
	for i := range 2 { // cold, then from memory
		for _, c := range []struct {
			off, n int64
			want   string
		}{{1, math.MaxInt64, "ello"}, {0, math.MaxInt64, "hello"}, {5, math.MaxInt64, ""}, {2, 100, "llo"}, {4, math.MaxInt64 - 3, "o"}} {
			got, _, mem := openMem(t, d, "bkt", "a", c.off, c.n)
			if got != c.want {
				t.Errorf("pass %d: Open(%d, %d) = %q, want %q", i, c.off, c.n, got, c.want)
			}
			if i > 0 && !mem {
				t.Errorf("pass %d: Open(%d, %d) not from memory", i, c.off, c.n)
			}
		}
	}
}
