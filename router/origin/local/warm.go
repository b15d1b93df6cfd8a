package local

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/doraproject/dora/router/origin"
)

// The warm path. Opening an object cold costs a dozen system calls (the
// bucket's directory, the file, fstat, the sidecar's directory and file,
// closes). Small objects are served from memory instead: their bytes and
// metadata are kept with the identity of the data file they were read
// from (device, inode, size, modification time in nanoseconds), and every
// Open revalidates them with one lstat through a kept handle on the
// bucket's directory. A Put renames a new file into place (a new inode), a
// Delete removes it (the lstat fails), an edit in place changes the size
// or the time: none of them can be served stale. Where the bucket's
// directory is watched (Linux, a local file system: dirWatch), an object
// that one such lstat matched is then served with no lookup of its name
// until an event says it or its directory changed.

// Defaults of the warm cache.
const (
	// DefaultHotObjectMax is the largest object kept in memory.
	DefaultHotObjectMax = 64 << 10
	// DefaultHotBytes bounds the bytes of all objects kept in memory.
	DefaultHotBytes = 32 << 20
)

// hotObject is a small object's bytes and metadata, valid while the data
// file is the one id names.
type hotObject struct {
	id   fileIdent
	obj  origin.Object
	data []byte
	// blessed: a stat through dir's kept descriptor matched id while dir
	// was watched, so until an event drops it (clearing the flag) the
	// object is served without a stat.
	blessed atomic.Bool
	dir     atomic.Pointer[bucketDir]
}

// warm is the handle and object cache of a Dir.
type warm struct {
	maxObject int64
	maxBytes  int64

	bmu     sync.RWMutex
	buckets map[string]*bucketDir

	hmu   sync.RWMutex
	hot   map[objectName]*hotObject
	bytes int64

	watch dirWatch
	// applied counts the batches of events the watch applied: an object
	// read while one was applied may have missed its drop (insert).
	applied atomic.Uint64
}

// SetHotCache sets the largest object kept in memory and the bound of all
// their bytes (0 disables the warm path). Call it before serving.
func (d *Dir) SetHotCache(maxObject, maxBytes int64) {
	d.warm.maxObject, d.warm.maxBytes = maxObject, maxBytes
}

// bucketDir is a kept handle on a bucket's directory: the root through
// which every access goes, and (Linux) its descriptor, on which a kept
// object whose key is a single path element is revalidated with one
// fstatat and nothing else (os.Root's own walk costs about as much again
// in user space).
type bucketDir struct {
	name string
	root *os.Root
	dir  *os.File // nil: no descriptor fast path
	fd   int
	raw  bool // the fstatat may be a raw system call (rawStatSafe)

	// watched: dirWatch watches this directory (wd); gone: the directory
	// moved or was removed since it was opened, so the handle no longer
	// names the bucket.
	wd      int32
	watched atomic.Bool
	gone    atomic.Bool
	folds   atomic.Bool // another spelling of a key named its file (otherSpelling)
}

func (w *warm) closeBucket(b *bucketDir) {
	w.watch.remove(b)
	if b.dir != nil {
		b.dir.Close()
	}
	b.root.Close()
}

// bucketDir returns the kept handle on a bucket's directory, opening it
// on first use.
func (w *warm) bucketDir(d *Dir, bucket string) (*bucketDir, bool) {
	w.bmu.RLock()
	b := w.buckets[bucket]
	w.bmu.RUnlock()
	if b != nil {
		return b, true
	}
	r, err := d.openBucket("", bucket)
	if err != nil {
		return nil, false
	}
	b = &bucketDir{name: bucket, root: r, fd: -1}
	if statAtSupported {
		if f, err := r.Open("."); err == nil {
			b.dir, b.fd = f, int(f.Fd())
			b.raw = rawStatSafe(b.fd)
		}
	}
	w.bmu.Lock()
	defer w.bmu.Unlock()
	if old := w.buckets[bucket]; old != nil {
		w.closeBucket(b)
		return old, true
	}
	w.watch.add(b)
	if w.buckets == nil {
		w.buckets = map[string]*bucketDir{}
	}
	w.buckets[bucket] = b
	return b, true
}

// forgetBucket drops the kept handle (the directory was replaced).
func (w *warm) forgetBucket(bucket string) {
	w.bmu.Lock()
	b := w.buckets[bucket]
	delete(w.buckets, bucket)
	w.bmu.Unlock()
	// No reader holds the descriptor now: they use it under bmu.
	if b != nil {
		w.closeBucket(b)
	}
}

// closeAll releases every kept handle.
func (w *warm) closeAll() {
	w.bmu.Lock()
	defer w.bmu.Unlock()
	for name, b := range w.buckets {
		w.closeBucket(b)
		delete(w.buckets, name)
	}
	w.watch.close()
}

// errNoBucket: the bucket's directory could not be opened.
var errNoBucket = errors.New("no bucket directory")

// stat identifies the file at bucket/key without following a symbolic
// link: its identity, and whether it is a regular file. watched is the
// kept directory the stat went through when that directory was watched
// before the stat began and the file has no other name (an object it
// matched may be blessed), else nil: a change made through a hard link
// elsewhere is reported to that link's directory, not to this one.
func (w *warm) stat(d *Dir, bucket, key string) (id fileIdent, regular bool, watched *bucketDir, err error) {
	if statAtSupported && strings.IndexByte(key, '/') < 0 {
		w.bmu.RLock()
		if b := w.buckets[bucket]; b != nil && b.dir != nil {
			if b.gone.Load() {
				w.bmu.RUnlock()
				return fileIdent{}, false, nil, errNoBucket
			}
			if b.watched.Load() {
				watched = b
			}
			// Under the read lock: forgetBucket and closeAll close the
			// descriptor only under the write lock.
			id, regular, links, err := statAt(b.fd, key, b.raw)
			if watched != nil && (links != 1 || b.folds.Load() || otherSpelling(b, key, id)) {
				watched = nil
			}
			w.bmu.RUnlock()
			return id, regular, watched, err
		}
		w.bmu.RUnlock()
	}
	b, ok := w.bucketDir(d, bucket)
	if !ok {
		return fileIdent{}, false, nil, errNoBucket
	}
	fi, err := b.root.Lstat(key)
	if err != nil {
		return fileIdent{}, false, nil, err
	}
	if !fi.Mode().IsRegular() {
		return fileIdent{}, false, nil, nil
	}
	id, ok = fileID(fi)
	if !ok {
		return fileIdent{}, false, nil, errors.New("no file identity on this platform")
	}
	return id, true, nil, nil
}

// otherSpelling reports whether key with its case swapped names the same
// file (id) in b, as in a case-insensitive directory that no flag marks
// (a ZFS dataset with casesensitivity=insensitive, XFS ascii-ci; see
// dirWatch.add for those that are): there an event names the entry as it
// is spelt, not as a key that opens it is, so b's objects are not
// blessed. One more fstatat, only on the way to a blessing.
func otherSpelling(b *bucketDir, key string, id fileIdent) bool {
	alt := strings.ToUpper(key)
	if alt == key {
		alt = strings.ToLower(key)
	}
	if alt == key {
		return false
	}
	aid, _, _, err := statAt(b.fd, alt, b.raw)
	if err != nil || aid.dev != id.dev || aid.ino != id.ino {
		return false
	}
	b.folds.Store(true)
	return true
}

// lookup serves a small object from memory when the file at bucket/key is
// still the one its bytes were read from. missing reports that the lstat
// through the kept bucket handle found nothing, which a fresh open of the
// bucket may contradict (its directory replaced).
func (w *warm) lookup(d *Dir, bucket, key string) (h *hotObject, missing bool) {
	if w.maxObject <= 0 {
		return nil, false
	}
	// Every change whose system call returned before this Open began is
	// applied first: what it changed is no longer kept.
	if w.watch.active() && w.watch.pending() {
		w.watch.drain(w)
	}
	w.hmu.RLock()
	h = w.hot[objectName{bucket, key}]
	w.hmu.RUnlock()
	if h == nil {
		return nil, false
	}
	if h.blessed.Load() && h.dir.Load().watched.Load() {
		return h, false
	}
	id, regular, watched, err := w.stat(d, bucket, key)
	switch {
	case err == errNoBucket:
		return nil, true
	case err != nil || !regular:
		w.drop(bucket, key)
		return nil, err != nil && errors.Is(err, fs.ErrNotExist)
	case id != h.id:
		w.drop(bucket, key)
		return nil, false
	}
	if watched != nil {
		w.bless(h, watched)
	}
	return h, false
}

// bless marks h, just matched by a stat through the watched directory b,
// as served without a stat from now on, unless it was dropped meanwhile.
func (w *warm) bless(h *hotObject, b *bucketDir) {
	w.hmu.Lock()
	defer w.hmu.Unlock()
	if w.hot[objectName{h.obj.Bucket, h.obj.Key}] == h {
		h.dir.Store(b)
		h.blessed.Store(true)
	}
}

// keep reads a small object just opened cold (f at offset 0) into memory.
// It returns the object's bytes, or nil when it is not kept.
func (w *warm) keep(f *os.File, obj origin.Object) []byte {
	h, since := w.readHot(f, obj)
	if h == nil {
		return nil
	}
	w.insert(h, since)
	return h.data
}

// readHot reads a small object just opened cold (f at offset 0), or nil
// when it is not to be kept; since is taken before the read, for insert.
func (w *warm) readHot(f *os.File, obj origin.Object) (h *hotObject, since uint64) {
	if w.maxObject <= 0 || obj.Size > w.maxObject {
		return nil, 0
	}
	since = w.applied.Load()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0
	}
	id, ok := fileID(fi)
	if !ok || id.size != obj.Size {
		return nil, 0
	}
	data := make([]byte, obj.Size)
	if n, err := f.ReadAt(data, 0); int64(n) != obj.Size || (err != nil && err != io.EOF) {
		return nil, 0
	}
	return &hotObject{id: id, obj: obj, data: data}, since
}

// insert keeps h, read by readHot, unless events were applied since the
// read began: one may have named the file, changed in place after the
// read in a way no stat tells (the same size and time), and dropped it
// before it was kept; the next cold Open keeps it instead. An event
// applied after this check drops h (under hmu, as here).
func (w *warm) insert(h *hotObject, since uint64) {
	name := objectName{h.obj.Bucket, h.obj.Key}
	w.hmu.Lock()
	defer w.hmu.Unlock()
	if w.applied.Load() != since {
		return
	}
	if w.hot == nil {
		w.hot = map[objectName]*hotObject{}
	}
	if old := w.hot[name]; old != nil {
		w.forget(name, old)
	}
	// Over the bound: evict arbitrary entries (map order) until it fits.
	size := int64(len(h.data))
	for k, v := range w.hot {
		if w.bytes+size <= w.maxBytes {
			break
		}
		w.forget(k, v)
	}
	if w.bytes+size > w.maxBytes {
		return
	}
	w.hot[name] = h
	w.bytes += size
}

// open serves the bytes [offset, offset+length) (length < 0: to the end).
func (h *hotObject) open(offset, length int64) (io.ReadCloser, origin.Object, error) {
	size := int64(len(h.data))
	if offset < 0 || offset > size {
		return nil, origin.Object{}, fmt.Errorf("open %s/%s: offset %d outside [0, %d]", h.obj.Bucket, truncate(h.obj.Key), offset, size)
	}
	end := size
	if length >= 0 && length < size-offset { // not offset+length: it may overflow
		end = offset + length
	}
	return newMemReader(h.data[offset:end:end]), h.obj, nil
}

// drop forgets an object (Put, Delete, failed revalidation, an event).
func (w *warm) drop(bucket, key string) {
	name := objectName{bucket, key}
	w.hmu.Lock()
	defer w.hmu.Unlock()
	if old := w.hot[name]; old != nil {
		w.forget(name, old)
	}
}

// dropBucket forgets every object of a bucket (its directory changed).
func (w *warm) dropBucket(bucket string) {
	w.hmu.Lock()
	defer w.hmu.Unlock()
	for name, h := range w.hot {
		if name.bucket == bucket {
			w.forget(name, h)
		}
	}
}

// dropAll forgets every object (events were lost).
func (w *warm) dropAll() {
	w.hmu.Lock()
	defer w.hmu.Unlock()
	for name, h := range w.hot {
		w.forget(name, h)
	}
}

// forget removes h, kept as name; under hmu.
func (w *warm) forget(name objectName, h *hotObject) {
	h.blessed.Store(false)
	w.bytes -= int64(len(h.data))
	delete(w.hot, name)
}

// hotBytes is the memory the kept objects use (tests).
func (w *warm) hotBytes() int64 {
	w.hmu.RLock()
	defer w.hmu.RUnlock()
	return w.bytes
}

// MemReader is an object stream served from memory: Bytes returns the
// bytes it reads (not to be modified), so that a caller can send them
// without a copy.
type MemReader struct {
	bytes.Reader // by value: one allocation per stream
	b            []byte
}

func newMemReader(b []byte) *MemReader {
	m := &MemReader{b: b}
	m.Reset(b)
	return m
}

// Bytes returns the whole content of the stream.
func (m *MemReader) Bytes() []byte { return m.b }

// Close does nothing: there is no file.
func (m *MemReader) Close() error { return nil }
