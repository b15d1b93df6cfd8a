package rescache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// now1 is the disk tests' clock: real time, since the files' modification
// times (set by the file system, and by Get) order the entries across a
// restart.
var now1 = time.Now()

func meta(ttl time.Duration) Entry {
	return Entry{MimeType: "text/plain", ETag: `"e"`, Created: now1, Expires: now1.Add(ttl)}
}

// content is n bytes that differ by key, so that a mix-up shows.
func content(key string, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = key[i%len(key)] + byte(i/len(key))
	}
	return b
}

// store writes data as key's result in chunks of at most chunk bytes, and
// commits it.
func store(t *testing.T, c *Cache, key string, data []byte, ttl time.Duration, chunk int) {
	t.Helper()
	w := c.NewWriter(key, meta(ttl), int64(len(data)))
	if w == nil {
		t.Fatalf("%s: no writer for %d bytes", key, len(data))
	}
	for rest := data; len(rest) > 0; {
		n := min(chunk, len(rest))
		w.Write(rest[:n])
		rest = rest[n:]
	}
	w.Commit()
}

func open(t *testing.T, o Options) *Cache {
	t.Helper()
	c, err := Open(o, now1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// read returns a hit's bytes, and whether they came from the disk tier's
// file (not memory).
func read(t *testing.T, h Hit) ([]byte, bool) {
	t.Helper()
	if h.Body == nil {
		return h.Data, false
	}
	defer h.Body.Close()
	b, err := io.ReadAll(h.Body)
	if err != nil {
		t.Fatalf("reading a disk hit: %v", err)
	}
	if int64(len(b)) != h.Size {
		t.Fatalf("disk hit of %d bytes, Size %d", len(b), h.Size)
	}
	return b, true
}

// dirBytes is what the cache's files take in dir (the lock file aside).
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() || de.Name() == lockName {
			return err
		}
		fi, err := de.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile
			}
			return err
		}
		n += fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func files(t *testing.T, dir, suffix string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+suffix))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDiskTier: a result within the memory entry bound is kept in both
// tiers, a larger one only on disk and streamed from its file; after a
// restart (a new cache on the same directory) both are found on disk, the
// small one joining the memory tier again.
func TestDiskTier(t *testing.T) {
	dir := t.TempDir()
	o := Options{MemBytes: 1 << 20, MemEntry: 1000, Dir: dir, DiskBytes: 1 << 20}
	c := open(t, o)
	small, large := content("small", 900), content("large", 100_000)
	store(t, c, "small", small, time.Hour, 256)
	store(t, c, "large", large, time.Hour, 4096)
	if s := c.Stats(); s.MemEntries != 1 || s.DiskEntries != 2 {
		t.Fatalf("stats %+v, want 1 entry in memory, 2 on disk", s)
	}
	h, ok := c.Get("small", now1)
	if b, disk := read(t, h); !ok || disk || !bytes.Equal(b, small) || h.MimeType != "text/plain" || h.ETag != `"e"` {
		t.Fatalf("small: ok %v disk %v, %d bytes, %+v", ok, disk, len(b), h.Entry)
	}
	h, ok = c.Get("large", now1)
	if b, disk := read(t, h); !ok || !disk || !bytes.Equal(b, large) || h.ETag != `"e"` || !h.Expires.Equal(now1.Add(time.Hour)) {
		t.Fatalf("large: ok %v disk %v, %d bytes", ok, disk, len(b))
	}
	if len(files(t, dir, tmpSuffix)) != 0 {
		t.Fatal("temporary files left after commits")
	}
	c.Close()

	c2 := open(t, o)
	if s := c2.Stats(); s.MemEntries != 0 || s.DiskEntries != 2 {
		t.Fatalf("after a restart: stats %+v, want the 2 entries on disk", s)
	}
	h, ok = c2.Get("small", now1)
	if b, disk := read(t, h); !ok || disk || !bytes.Equal(b, small) || h.MimeType != "text/plain" || h.ETag != `"e"` ||
		!h.Created.Equal(now1) || !h.Expires.Equal(now1.Add(time.Hour)) {
		t.Fatalf("small after a restart: ok %v disk %v, %d bytes, %+v", ok, disk, len(b), h.Entry)
	}
	if s := c2.Stats(); s.MemEntries != 1 {
		t.Fatalf("the small entry read from disk did not join the memory tier: %+v", s)
	}
	h, ok = c2.Get("large", now1)
	if b, disk := read(t, h); !ok || !disk || !bytes.Equal(b, large) {
		t.Fatalf("large after a restart: ok %v disk %v, %d bytes", ok, disk, len(b))
	}
	if _, ok := c2.Get("other", now1); ok {
		t.Fatal("a key never stored was found")
	}
}

// TestDiskBoundedInBytes: under a stream of distinct keys, the files in
// the directory (entries and the file being written) never pass the bound,
// checked after every chunk written; the newest entries stay, the oldest
// go, a result above the entry bound is not kept and leaves no file.
func TestDiskBoundedInBytes(t *testing.T) {
	dir := t.TempDir()
	const bound = 200_000
	c := open(t, Options{MemBytes: 10_000, MemEntry: 100, Dir: dir, DiskBytes: bound, DiskEntry: 50_000})
	for i := range 300 {
		key := fmt.Sprintf("key-%d", i)
		data := content(key, 1000+(i*7919)%45_000)
		w := c.NewWriter(key, meta(time.Hour), -1) // size unknown: bounded while written
		for rest := data; len(rest) > 0; {
			n := min(4096, len(rest))
			w.Write(rest[:n])
			rest = rest[n:]
			if b := dirBytes(t, dir); b > bound {
				t.Fatalf("key %d: %d bytes on disk mid-write (bound %d)", i, b, bound)
			}
		}
		w.Commit()
		if b, s := dirBytes(t, dir), c.Stats(); b > bound || s.DiskBytes != b {
			t.Fatalf("key %d: %d bytes on disk, %d accounted (bound %d)", i, b, s.DiskBytes, bound)
		}
	}
	if h, ok := c.Get("key-299", now1); !ok {
		t.Fatal("the newest entry was evicted")
	} else if b, _ := read(t, h); !bytes.Equal(b, content("key-299", 1000+(299*7919)%45_000)) {
		t.Fatal("the newest entry's bytes differ")
	}
	if _, ok := c.Get("key-0", now1); ok {
		t.Fatal("the oldest entry survived 300 distinct keys")
	}
	before := c.Stats().DiskEntries
	w := c.NewWriter("huge", meta(time.Hour), -1)
	w.Write(make([]byte, 50_001))
	w.Commit()
	if _, ok := c.Get("huge", now1); ok || c.Stats().DiskEntries > before || len(files(t, dir, tmpSuffix)) != 0 {
		t.Fatal("a result above the entry bound was kept, or left a file")
	}
	if c.NewWriter("huge", meta(time.Hour), 50_001) != nil {
		t.Fatal("a writer for a known size above every bound")
	}
	// Two writes at once share the bound too.
	w1, w2 := c.NewWriter("a", meta(time.Hour), -1), c.NewWriter("b", meta(time.Hour), -1)
	for range 12 {
		w1.Write(make([]byte, 4000))
		w2.Write(make([]byte, 4000))
		if b := dirBytes(t, dir); b > bound {
			t.Fatalf("%d bytes on disk with two writes (bound %d)", b, bound)
		}
	}
	w1.Abort()
	w2.Commit()
	if b, s := dirBytes(t, dir), c.Stats(); b > bound || s.DiskBytes != b || len(files(t, dir, tmpSuffix)) != 0 {
		t.Fatalf("after an abort and a commit: %d bytes on disk, %d accounted", b, s.DiskBytes)
	}
}

// TestDiskDamagedIgnored: a damaged entry is never served. A truncated
// file, a garbage file, an entry renamed to another key's name and a
// partial write of a crashed process are removed by the sweep; a flipped
// byte is caught before the entry is served (small or large) and the
// entry removed; a flipped byte in an entry already checked by this
// process fails the stream at its end. Files that are not the cache's are
// left alone.
func TestDiskDamagedIgnored(t *testing.T) {
	dir := t.TempDir()
	o := Options{MemBytes: 1 << 20, MemEntry: 1000, Dir: dir, DiskBytes: 1 << 20}
	c := open(t, o)
	keys := []string{"flip-small", "flip-large", "truncated", "renamed", "good"}
	for _, k := range keys {
		n := 500
		if strings.Contains(k, "large") || k == "good" {
			n = 50_000
		}
		store(t, c, k, content(k, n), time.Hour, 4096)
	}
	c.Close()
	path := func(k string) string { return filepath.Join(dir, fileName(k)) }
	flip := func(p string, off int64) {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var b [1]byte
		if _, err := f.ReadAt(b[:], off); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x40
		if _, err := f.WriteAt(b[:], off); err != nil {
			t.Fatal(err)
		}
	}
	flip(path("flip-small"), 10)
	flip(path("flip-large"), 40_000)
	fi, _ := os.Stat(path("truncated"))
	if err := os.Truncate(path("truncated"), fi.Size()-1); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path("renamed"), path("elsewhere")); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "0123456789abcdef0123456789abcdef"+resSuffix)
	partial := filepath.Join(dir, "w-123"+tmpSuffix)
	foreign := filepath.Join(dir, "README")
	for _, p := range []string{garbage, partial, foreign} {
		if err := os.WriteFile(p, []byte("not an entry at all, and long enough"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	c2 := open(t, o)
	for _, p := range []string{path("truncated"), path("elsewhere"), garbage, partial} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s survived the sweep: %v", filepath.Base(p), err)
		}
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("a file that is not the cache's was touched: %v", err)
	}
	for _, k := range []string{"flip-small", "flip-large", "truncated", "renamed"} {
		if h, ok := c2.Get(k, now1); ok {
			b, _ := read(t, h)
			t.Errorf("%s: damaged entry served (%d bytes)", k, len(b))
		}
	}
	for _, k := range []string{"flip-small", "flip-large"} {
		if _, err := os.Stat(path(k)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: the damaged file is still there: %v", k, err)
		}
	}
	h, ok := c2.Get("good", now1)
	if b, disk := read(t, h); !ok || !disk || !bytes.Equal(b, content("good", 50_000)) {
		t.Fatalf("the intact entry: ok %v disk %v", ok, disk)
	}
	// Checked by this process now; damaged afterwards: the stream fails
	// at its end instead of completing, and the entry goes.
	flip(path("good"), 100)
	h, ok = c2.Get("good", now1)
	if !ok || h.Body == nil {
		t.Fatal("the checked entry was not served from disk")
	}
	_, err := io.ReadAll(h.Body)
	h.Body.Close()
	if !errors.Is(err, errCorrupt) {
		t.Fatalf("reading a damaged checked entry: %v, want errCorrupt", err)
	}
	if _, ok := c2.Get("good", now1); ok {
		t.Fatal("the damaged entry is still served")
	}
	if s := c2.Stats(); s.DiskEntries != 0 || s.DiskBytes != dirBytes(t, dir)-int64(len("not an entry at all, and long enough")) {
		t.Fatalf("stats %+v after removing every damaged entry", s)
	}
}

// TestDiskExpiryAndOrder: entries expired at the sweep or at a Get are
// removed; across a restart the least recently used entries (by Get) are
// the first to go when the bound is smaller.
func TestDiskExpiryAndOrder(t *testing.T) {
	dir := t.TempDir()
	o := Options{MemBytes: 1 << 20, MemEntry: 10, Dir: dir, DiskBytes: 1 << 20}
	c := open(t, o)
	store(t, c, "short", content("short", 5000), time.Minute, 4096)
	for _, k := range []string{"a", "b", "c"} {
		store(t, c, k, content(k, 5000), time.Hour, 4096)
	}
	if _, ok := c.Get("short", now1.Add(time.Minute)); ok {
		t.Fatal("served at its expiry")
	}
	if _, err := os.Stat(filepath.Join(dir, fileName("short"))); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the expired entry's file: %v", err)
	}
	store(t, c, "short", content("short", 5000), time.Minute, 4096)
	for i, k := range []string{"b", "c", "a"} { // a is the most recently used
		h, ok := c.Get(k, now1.Add(time.Duration(i+1)*time.Second))
		if !ok {
			t.Fatalf("%s missing", k)
		}
		read(t, h)
	}
	fileSize := dirBytes(t, dir) / 4
	c.Close()

	o.DiskBytes = 2*fileSize + fileSize/2
	// Later than short's expiry: the sweep drops it; the bound then
	// keeps the two most recently used.
	c2, err := Open(o, now1.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if s := c2.Stats(); s.DiskEntries != 2 {
		t.Fatalf("stats %+v, want 2 entries", s)
	}
	for k, want := range map[string]bool{"short": false, "b": false, "c": true, "a": true} {
		if _, ok := c2.Get(k, now1.Add(2*time.Minute)); ok != want {
			t.Errorf("%s: found %v, want %v", k, ok, want)
		}
	}
}

// TestDiskLocked: a directory serves one cache at a time.
func TestDiskLocked(t *testing.T) {
	dir := t.TempDir()
	o := Options{MemBytes: 1000, MemEntry: 100, Dir: dir, DiskBytes: 10_000}
	c := open(t, o)
	if _, err := Open(o, now1); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	c.Close()
	c2, err := Open(o, now1)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	c2.Close()
	if _, err := Open(Options{MemBytes: 1000, MemEntry: 100, Dir: dir}, now1); err == nil {
		t.Fatal("a disk tier without a bound was accepted")
	}
}

// FuzzReadTrailer: any file content either is refused or yields a
// trailer consistent with the file (its Size accounts for the bytes
// before the trailer); never a panic.
func FuzzReadTrailer(f *testing.F) {
	tr, err := encodeTrailer(trailer{Key: "b\x00k\x00etag\x00p\x00", MimeType: "text/plain", ETag: `"r1"`, Created: 1, Expires: 2, Size: 3, CRC: 7})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(append([]byte("abc"), tr...))
	f.Add(tr)
	f.Add([]byte(footerMagic))
	f.Add([]byte("\x02\x00\x00\x00DRC1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := readTrailer(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		enc, err := encodeTrailer(tr)
		if err != nil {
			t.Fatalf("a trailer read back does not encode: %v", err)
		}
		if tr.Size < 0 || tr.Size > int64(len(b)) || tr.Key == "" || tr.Expires <= tr.Created {
			t.Fatalf("accepted %+v from %d bytes", tr, len(b))
		}
		again, err := readTrailer(bytes.NewReader(append(b[:tr.Size:tr.Size], enc...)), tr.Size+int64(len(enc)))
		if err != nil || again != tr {
			t.Fatalf("re-encoded trailer reads %+v, %v; want %+v", again, err, tr)
		}
	})
}
