// Package origintest is the contract every object origin that reads,
// writes and lists (origin/local, origin/s3) passes: the same tests run
// against each, so the router, the admin API and the pfop workers can
// take any of them. A backend's own test calls Run with a function that
// opens a fresh, empty store.
package origintest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/origin/local"
)

// Store is what the contract exercises.
type Store interface {
	origin.Reader
	origin.Writer
	origin.Lister
}

// Options tune the suite to a backend.
type Options struct {
	// LargeSize is the size of the object of TestLarge: make it cross
	// the backend's interesting boundaries (several 4 MiB etag blocks,
	// several multipart parts). Default 11 MiB.
	LargeSize int
	// Clock tolerance between Put's Modified and Stat's (stores that
	// keep seconds). Default 2 s.
	ModifiedSlack time.Duration
	// MaxKeyBytes is the longest key the store holds (default 1024, the
	// platform's bound; S3 counts its prefix and the bucket against its
	// own 1024).
	MaxKeyBytes int
}

// Run runs every contract test; open returns a fresh empty store for
// each.
func Run(t *testing.T, open func(t *testing.T) Store, opts Options) {
	if opts.LargeSize == 0 {
		opts.LargeSize = 11 << 20
	}
	if opts.MaxKeyBytes == 0 {
		opts.MaxKeyBytes = 1024
	}
	if opts.ModifiedSlack == 0 {
		opts.ModifiedSlack = 2 * time.Second
	}
	c := &contract{open: open, opts: opts}
	t.Run("PutOpenStat", c.putOpenStat)
	t.Run("Mime", c.mime)
	t.Run("InsertOnlyAndOverwrite", c.insertOnly)
	t.Run("BadKeys", c.badKeys)
	t.Run("KeysRoundTrip", c.keysRoundTrip)
	t.Run("List", c.list)
	t.Run("Delete", c.delete)
	t.Run("FailedPutLeavesNothing", c.failedPut)
	t.Run("CancelledPutLeavesNothing", c.cancelledPut)
	t.Run("ConcurrentPutsNeverTorn", c.concurrentPuts)
	t.Run("Large", c.large)
	t.Run("OpenIfPinsTheVersion", c.openIf)
}

// openIf: an origin that implements origin.ConditionalOpener reads the
// object a Stat described, whole or by range, and refuses with ErrChanged
// once it was overwritten (same second or later) or when the object was
// modified after the condition's time; the current description reads.
// Origins without it skip (the router then compares etags itself).
func (c *contract) openIf(t *testing.T) {
	s := c.open(t)
	co, ok := s.(origin.ConditionalOpener)
	if !ok {
		t.Skip("this origin does not implement origin.ConditionalOpener")
	}
	ctx := ctxT(t)
	read := func(want origin.Object, off, n int64) (string, error) {
		rc, _, err := co.OpenIf(ctx, "pinned", "pin.txt", off, n, want)
		if err != nil {
			return "", err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		return string(b), err
	}
	Put(t, s, "pinned", "pin.txt", "first version")
	v1, err := s.Stat(ctx, "pinned", "pin.txt")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := read(v1, 0, -1); err != nil || got != "first version" {
		t.Fatalf("OpenIf(v1) = %q, %v", got, err)
	}
	if got, err := read(v1, 6, 7); err != nil || got != "version" {
		t.Fatalf("OpenIf(v1, 6, 7) = %q, %v", got, err)
	}
	// Modified after the condition's time (same etag): the store refuses.
	old := v1
	old.Modified = v1.Modified.Add(-time.Hour)
	if _, err := read(old, 0, -1); !errors.Is(err, origin.ErrChanged) {
		t.Fatalf("OpenIf with a time before the write: %v, want ErrChanged", err)
	}
	Put(t, s, "pinned", "pin.txt", "second version, longer")
	for _, r := range [][2]int64{{0, -1}, {6, 7}, {0, 0}} {
		if got, err := read(v1, r[0], r[1]); !errors.Is(err, origin.ErrChanged) {
			t.Fatalf("OpenIf(v1, %d, %d) after an overwrite = %q, %v; want ErrChanged", r[0], r[1], got, err)
		}
	}
	v2, err := s.Stat(ctx, "pinned", "pin.txt")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := read(v2, 0, -1); err != nil || got != "second version, longer" {
		t.Fatalf("OpenIf(v2) = %q, %v", got, err)
	}
}

type contract struct {
	open func(t *testing.T) Store
	opts Options
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Put stores data at bucket/key or fails the test.
func Put(t *testing.T, s Store, bucket, key, data string) origin.Object {
	t.Helper()
	obj, err := s.Put(ctxT(t), bucket, key, strings.NewReader(data), origin.PutOptions{})
	if err != nil {
		t.Fatalf("Put(%s, %q): %v", bucket, key, err)
	}
	return obj
}

// Read returns the bytes [off, off+n) of bucket/key and its metadata, or
// fails the test.
func Read(t *testing.T, s Store, bucket, key string, off, n int64) (string, origin.Object) {
	t.Helper()
	rc, obj, err := s.Open(ctxT(t), bucket, key, off, n)
	if err != nil {
		t.Fatalf("Open(%s, %q, %d, %d): %v", bucket, key, off, n, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s/%q: %v", bucket, key, err)
	}
	return string(b), obj
}

// same compares two descriptions of one object, Modified within slack.
func (c *contract) same(a, b origin.Object) bool {
	d := a.Modified.Sub(b.Modified)
	if d < 0 {
		d = -d
	}
	a.Modified, b.Modified = time.Time{}, time.Time{}
	return a == b && d <= c.opts.ModifiedSlack
}

func etagOf(t *testing.T, data []byte) string {
	t.Helper()
	e, _, err := local.ETag(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (c *contract) putOpenStat(t *testing.T) {
	s := c.open(t)
	ctx := ctxT(t)
	before := time.Now().Add(-c.opts.ModifiedSlack)
	obj := Put(t, s, "photos", "日本/写真 1.txt", "hello")
	if obj.Size != 5 || obj.ETag != "Fqr0xh3cxeii2r7eDztILNmuqUNN" || obj.Bucket != "photos" || obj.Key != "日本/写真 1.txt" {
		t.Fatalf("Put = %+v", obj)
	}
	if obj.Modified.Before(before) || obj.Modified.After(time.Now().Add(c.opts.ModifiedSlack)) {
		t.Fatalf("Put's Modified %v is not now", obj.Modified)
	}
	if !strings.HasPrefix(obj.MimeType, "text/plain") {
		t.Fatalf("mime %q", obj.MimeType)
	}
	st, err := s.Stat(ctx, "photos", "日本/写真 1.txt")
	if err != nil || !c.same(st, obj) {
		t.Fatalf("Stat = %+v, %v; want %+v", st, err, obj)
	}
	ranges := []struct {
		off, n int64
		want   string
	}{{0, -1, "hello"}, {1, -1, "ello"}, {1, 3, "ell"}, {0, 0, ""}, {5, -1, ""}, {5, 2, ""}, {3, 100, "lo"}, {4, 1, "o"}}
	for _, r := range ranges {
		got, o := Read(t, s, "photos", "日本/写真 1.txt", r.off, r.n)
		if got != r.want || !c.same(o, st) {
			t.Errorf("Open(%d, %d) = %q %+v, want %q %+v", r.off, r.n, got, o, r.want, st)
		}
	}
	for _, off := range []int64{-1, 6, 100} {
		if rc, _, err := s.Open(ctx, "photos", "日本/写真 1.txt", off, -1); err == nil {
			rc.Close()
			t.Errorf("Open at offset %d succeeded", off)
		}
	}
	for _, tc := range []struct{ bucket, key string }{
		{"photos", "nope"}, {"other", "x"}, {"photos", "日本"}, {"photos", "日本/写真 1.txt/x"}, {"photos", "日本/写真 1.tx"},
	} {
		if _, err := s.Stat(ctx, tc.bucket, tc.key); !errors.Is(err, origin.ErrNotFound) {
			t.Errorf("Stat(%s, %q) = %v, want ErrNotFound", tc.bucket, tc.key, err)
		}
		if rc, _, err := s.Open(ctx, tc.bucket, tc.key, 0, -1); !errors.Is(err, origin.ErrNotFound) {
			if err == nil {
				rc.Close()
			}
			t.Errorf("Open(%s, %q) = %v, want ErrNotFound", tc.bucket, tc.key, err)
		}
	}
	// An empty object.
	e := Put(t, s, "photos", "empty", "")
	if e.Size != 0 || e.ETag != "Fto5o-5ea0sNMlW_75VgGJCv2AcJ" {
		t.Fatalf("empty Put = %+v", e)
	}
	if got, o := Read(t, s, "photos", "empty", 0, -1); got != "" || o.Size != 0 || o.ETag != e.ETag {
		t.Fatalf("empty object read %q %+v", got, o)
	}
	if got, _ := Read(t, s, "photos", "empty", 0, 0); got != "" {
		t.Fatalf("empty object, zero length: %q", got)
	}
}

func (c *contract) mime(t *testing.T) {
	s := c.open(t)
	png := "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
	tests := []struct{ key, data, opt, want string }{
		{"a.png", "not really", "", "image/png"},
		{"noext", png, "", "image/png"},
		{"page", "<html><body>x</body></html>", "", "text/html; charset=utf-8"},
		{"bin", "\x00\x01\x02", "", "application/octet-stream"},
		{"given.png", png, "application/x-custom", "application/x-custom"},
	}
	for _, tt := range tests {
		obj, err := s.Put(ctxT(t), "b01", tt.key, strings.NewReader(tt.data), origin.PutOptions{MimeType: tt.opt})
		if err != nil || obj.MimeType != tt.want {
			t.Errorf("%s: mime %q, %v; want %q", tt.key, obj.MimeType, err, tt.want)
			continue
		}
		if st, err := s.Stat(ctxT(t), "b01", tt.key); err != nil || st.MimeType != tt.want {
			t.Errorf("%s: Stat mime %q, %v; want %q", tt.key, st.MimeType, err, tt.want)
		}
	}
}

func (c *contract) insertOnly(t *testing.T) {
	s := c.open(t)
	ctx := ctxT(t)
	Put(t, s, "bkt", "k", "one")
	_, err := s.Put(ctx, "bkt", "k", strings.NewReader("two"), origin.PutOptions{InsertOnly: true})
	if !errors.Is(err, origin.ErrExists) {
		t.Fatalf("InsertOnly over existing = %v, want ErrExists", err)
	}
	if got, _ := Read(t, s, "bkt", "k", 0, -1); got != "one" {
		t.Fatalf("after refused insert: %q", got)
	}
	if _, err := s.Put(ctx, "bkt", "new", strings.NewReader("x"), origin.PutOptions{InsertOnly: true}); err != nil {
		t.Fatalf("InsertOnly new key: %v", err)
	}
	o := Put(t, s, "bkt", "k", "three!")
	got, st := Read(t, s, "bkt", "k", 0, -1)
	if got != "three!" || st.Size != 6 || st.ETag != o.ETag {
		t.Fatalf("overwrite: %q %+v", got, st)
	}
}

// BadKeys are refused by every operation with ErrBadKey.
var BadKeys = []string{"", strings.Repeat("a", 1025), "a\x00b", "/a", "../x", "a/../b", "./a", "a/.", "a/..", "..", ".", "a//b", "a/", "\xff",
	"a\\b", "\\", "a\x01b", "a\nb", "\tx", "a\x7f", "a\rb"}

func (c *contract) badKeys(t *testing.T) {
	s := c.open(t)
	ctx := ctxT(t)
	for _, k := range BadKeys {
		if _, err := s.Put(ctx, "bkt", k, strings.NewReader("x"), origin.PutOptions{}); !errors.Is(err, origin.ErrBadKey) {
			t.Errorf("Put(%q) = %v, want ErrBadKey", k, err)
		}
		if _, err := s.Stat(ctx, "bkt", k); !errors.Is(err, origin.ErrBadKey) {
			t.Errorf("Stat(%q) = %v, want ErrBadKey", k, err)
		}
		if _, _, err := s.Open(ctx, "bkt", k, 0, -1); !errors.Is(err, origin.ErrBadKey) {
			t.Errorf("Open(%q) = %v, want ErrBadKey", k, err)
		}
		if err := s.Delete(ctx, "bkt", k); !errors.Is(err, origin.ErrBadKey) {
			t.Errorf("Delete(%q) = %v, want ErrBadKey", k, err)
		}
	}
	for _, b := range []string{"", ".meta", ".tmp", "..", "Upper", "a/b"} {
		if _, err := s.Put(ctx, b, "k", strings.NewReader("x"), origin.PutOptions{}); !errors.Is(err, origin.ErrBadKey) {
			t.Errorf("Put in bucket %q = %v, want ErrBadKey", b, err)
		}
		if _, err := s.List(ctx, b, "", 0); !errors.Is(err, origin.ErrBadKey) {
			t.Errorf("List of bucket %q = %v, want ErrBadKey", b, err)
		}
	}
	// The longest key, in segments a file system can name (a local
	// directory cannot hold a 256-byte segment).
	long := strings.Repeat(strings.Repeat("é", 100)+"/", (c.opts.MaxKeyBytes-1)/201)
	long += strings.Repeat("x", c.opts.MaxKeyBytes-len(long))
	Put(t, s, "bkt", long, "long")
	if got, _ := Read(t, s, "bkt", long, 0, -1); got != "long" {
		t.Errorf("1024-byte key read back %q", got)
	}
}

// OddKeys are valid keys whose characters need escaping somewhere on the
// way (URLs, signatures, XML): each must round-trip byte for byte.
var OddKeys = []string{
	"space in name.txt", " leading and trailing ", "plus+sign", "100%", "%2F%20encoded", "what?x=1&y=2",
	"hash#frag", "semi;colon,comma", "quote\"'`", "<tag>&amp;", "a/b/c/d.txt", "日本語/写真.jpg",
	"emoji 😀", "tilde~star*", "=equals=", "ümlaut", "tab-less\u00a0nbsp", "brackets[]{}()", "dollar$@!",
}

func (c *contract) keysRoundTrip(t *testing.T) {
	s := c.open(t)
	ctx := ctxT(t)
	for i, k := range OddKeys {
		data := fmt.Sprintf("%d:%s", i, k)
		Put(t, s, "odd", k, data)
		got, obj := Read(t, s, "odd", k, 0, -1)
		if got != data || obj.Key != k {
			t.Errorf("key %q: read %q (key %q), want %q", k, got, obj.Key, data)
		}
	}
	objs, err := s.List(ctx, "odd", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, o := range objs {
		seen[o.Key] = true
	}
	for _, k := range OddKeys {
		if !seen[k] {
			t.Errorf("List lost key %q (got %d keys)", k, len(objs))
		}
	}
	if len(objs) != len(OddKeys) {
		t.Errorf("List has %d keys, want %d", len(objs), len(OddKeys))
	}
	for _, k := range OddKeys {
		if err := s.Delete(ctx, "odd", k); err != nil {
			t.Errorf("Delete(%q): %v", k, err)
		}
	}
	if objs, err := s.List(ctx, "odd", "", 0); err != nil || len(objs) != 0 {
		t.Errorf("after deleting all: %d objects, %v", len(objs), err)
	}
}

func keysOf(objs []origin.Object) string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.Key)
	}
	return strings.Join(ks, ",")
}

func (c *contract) list(t *testing.T) {
	s := c.open(t)
	ctx := ctxT(t)
	for _, k := range []string{"a/b", "a-c", "a/d/e", "b", "日本", "a/b2", "ab"} {
		Put(t, s, "bkt", k, k)
	}
	Put(t, s, "bkt2", "a/b", "other bucket")
	tests := []struct {
		prefix string
		limit  int
		want   string
	}{
		{"", 0, "a-c,a/b,a/b2,a/d/e,ab,b,日本"},
		{"", 3, "a-c,a/b,a/b2"},
		{"a/", 0, "a/b,a/b2,a/d/e"},
		{"a/b", 0, "a/b,a/b2"},
		{"a/d/", 0, "a/d/e"},
		{"a", 0, "a-c,a/b,a/b2,a/d/e,ab"},
		{"a", 2, "a-c,a/b"},
		{"日", 0, "日本"},
		{"zz", 0, ""},
		{"x/y/", 0, ""},
	}
	for _, tt := range tests {
		objs, err := s.List(ctx, "bkt", tt.prefix, tt.limit)
		if err != nil {
			t.Fatalf("List(%q): %v", tt.prefix, err)
		}
		if got := keysOf(objs); got != tt.want {
			t.Errorf("List(%q, %d) = %s, want %s", tt.prefix, tt.limit, got, tt.want)
		}
	}
	objs, _ := s.List(ctx, "bkt", "b", 0)
	if len(objs) != 1 || objs[0].Size != 1 || objs[0].ETag != etagOf(t, []byte("b")) || objs[0].Bucket != "bkt" || objs[0].MimeType == "" {
		t.Errorf("List metadata: %+v", objs)
	}
	if st, err := s.Stat(ctx, "bkt", "b"); err != nil || len(objs) != 1 || !c.same(st, objs[0]) {
		t.Errorf("List's object %+v differs from Stat's %+v (%v)", objs, st, err)
	}
	if objs, err := s.List(ctx, "empty", "", 0); err != nil || len(objs) != 0 {
		t.Errorf("List of an empty bucket = %v, %v", objs, err)
	}
}

func (c *contract) delete(t *testing.T) {
	s := c.open(t)
	ctx := ctxT(t)
	Put(t, s, "bkt", "a/b/c", "x")
	Put(t, s, "bkt", "keep", "y")
	if err := s.Delete(ctx, "bkt", "a/b"); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("Delete of a prefix = %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "bkt", "a/b/c"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "bkt", "a/b/c"); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("Stat after Delete = %v", err)
	}
	if err := s.Delete(ctx, "bkt", "a/b/c"); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("second Delete = %v", err)
	}
	if err := s.Delete(ctx, "none", "x"); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("Delete in missing bucket = %v", err)
	}
	if got := func() string { o, _ := s.List(ctx, "bkt", "", 0); return keysOf(o) }(); got != "keep" {
		t.Fatalf("after delete, List = %s", got)
	}
	// The emptied prefix can hold a key of that name again.
	Put(t, s, "bkt", "a", "now a key")
	if got, _ := Read(t, s, "bkt", "a", 0, -1); got != "now a key" {
		t.Fatalf("key at an emptied prefix: %q", got)
	}
}

// FailingReader yields n bytes, then an error.
type FailingReader struct{ N int }

// Read implements io.Reader.
func (f *FailingReader) Read(p []byte) (int, error) {
	if f.N <= 0 {
		return 0, errors.New("boom")
	}
	k := min(len(p), f.N)
	clear(p[:k])
	f.N -= k
	return k, nil
}

func (c *contract) failedPut(t *testing.T) {
	s := c.open(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Put(ctx, "bkt", "k", strings.NewReader("x"), origin.PutOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with canceled ctx = %v", err)
	}
	for _, n := range []int{10000, c.opts.LargeSize} { // one PUT, several parts
		if _, err := s.Put(ctxT(t), "bkt", "k", &FailingReader{N: n}, origin.PutOptions{}); err == nil {
			t.Fatalf("Put from a reader failing after %d bytes succeeded", n)
		}
		if _, err := s.Stat(ctxT(t), "bkt", "k"); !errors.Is(err, origin.ErrNotFound) {
			t.Fatalf("failed Put (%d bytes) left an object: %v", n, err)
		}
	}
	// A failed overwrite keeps the old object whole.
	Put(t, s, "bkt", "old", "old data")
	if _, err := s.Put(ctxT(t), "bkt", "old", &FailingReader{N: c.opts.LargeSize}, origin.PutOptions{}); err == nil {
		t.Fatal("failing overwrite succeeded")
	}
	if got, _ := Read(t, s, "bkt", "old", 0, -1); got != "old data" {
		t.Fatalf("failed overwrite changed the object: %q", got)
	}
}

// BlockingReader yields N bytes, then blocks until its context is done.
type BlockingReader struct {
	N    int
	Ctx  context.Context
	Sent chan struct{} // closed once the N bytes are read
	once sync.Once
}

// Read implements io.Reader.
func (b *BlockingReader) Read(p []byte) (int, error) {
	if b.N > 0 {
		k := min(len(p), b.N)
		rand.Read(p[:k])
		b.N -= k
		return k, nil
	}
	b.once.Do(func() { close(b.Sent) })
	<-b.Ctx.Done()
	return 0, b.Ctx.Err()
}

// cancelledPut: a writer that goes away mid-upload (a client hanging up)
// leaves no object.
func (c *contract) cancelledPut(t *testing.T) {
	s := c.open(t)
	for _, n := range []int{1000, c.opts.LargeSize} {
		ctx, cancel := context.WithCancel(context.Background())
		br := &BlockingReader{N: n, Ctx: ctx, Sent: make(chan struct{})}
		done := make(chan error, 1)
		go func() {
			_, err := s.Put(ctx, "bkt", "hangup", br, origin.PutOptions{})
			done <- err
		}()
		select {
		case <-br.Sent:
		case err := <-done:
			t.Fatalf("Put ended before its body did: %v", err)
		case <-time.After(time.Minute):
			t.Fatal("Put did not read its body")
		}
		cancel()
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("Put of %d bytes succeeded after its context was cancelled", n)
			}
		case <-time.After(time.Minute):
			t.Fatal("Put did not return after its context was cancelled")
		}
		if _, err := s.Stat(ctxT(t), "bkt", "hangup"); !errors.Is(err, origin.ErrNotFound) {
			t.Fatalf("cancelled Put (%d bytes) left an object: %v", n, err)
		}
	}
}

func (c *contract) concurrentPuts(t *testing.T) {
	s := c.open(t)
	ctx := ctxT(t)
	const writers, size = 4, 256 << 10
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range writers {
		wg.Go(func() {
			for range 3 {
				data := bytes.Repeat([]byte{byte('A' + i)}, size+i)
				if _, err := s.Put(ctx, "bkt", "same", bytes.NewReader(data), origin.PutOptions{}); err != nil {
					errs <- err
				}
			}
		})
	}
	check := func() error {
		rc, obj, err := s.Open(ctx, "bkt", "same", 0, -1)
		if errors.Is(err, origin.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			return err
		}
		if len(b) < size || bytes.Count(b, b[:1]) != len(b) {
			return fmt.Errorf("torn object: %d bytes", len(b))
		}
		if int64(len(b)) != obj.Size {
			return fmt.Errorf("size %d, metadata says %d", len(b), obj.Size)
		}
		if e := etagOf(t, b); e != obj.ETag {
			return fmt.Errorf("etag %s, metadata says %s", e, obj.ETag)
		}
		return nil
	}
	done := make(chan struct{})
	var rwg sync.WaitGroup
	rwg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			if err := check(); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(done)
	rwg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := check(); err != nil {
		t.Fatal(err)
	}
}

// large: an object over several etag blocks (and multipart parts) keeps
// its bytes, size and Qiniu etag; ranges across boundaries read right.
func (c *contract) large(t *testing.T) {
	s := c.open(t)
	ctx := ctxT(t)
	data := make([]byte, c.opts.LargeSize)
	for i := range data {
		data[i] = byte(i*7 + i/4093)
	}
	want := etagOf(t, data)
	obj, err := s.Put(ctx, "big", "large.bin", struct{ io.Reader }{bytes.NewReader(data)}, origin.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if obj.ETag != want || obj.Size != int64(len(data)) {
		t.Fatalf("Put = %+v, want etag %s size %d", obj, want, len(data))
	}
	st, err := s.Stat(ctx, "big", "large.bin")
	if err != nil || st.ETag != want || st.Size != int64(len(data)) {
		t.Fatalf("Stat = %+v, %v; want etag %s", st, err, want)
	}
	got, _ := Read(t, s, "big", "large.bin", 0, -1)
	if got != string(data) {
		t.Fatalf("read back %d bytes, differing from the %d written", len(got), len(data))
	}
	for _, r := range [][2]int64{{4<<20 - 3, 7}, {5<<20 - 1, 2}, {int64(len(data)) - 10, -1}, {1 << 20, 9 << 20}} {
		end := int64(len(data))
		if r[1] >= 0 {
			end = min(end, r[0]+r[1])
		}
		got, _ := Read(t, s, "big", "large.bin", r[0], r[1])
		if got != string(data[r[0]:end]) {
			t.Errorf("range %d+%d: %d bytes, wrong", r[0], r[1], len(got))
		}
	}
}
