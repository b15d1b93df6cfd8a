// Package local stores the objects of buckets in a directory, the embedded
// default origin: the object bucket/key lives at <root>/<bucket>/<key>, its
// metadata (etag, MIME type, size, time) in a JSON sidecar at
// <root>/.meta/<bucket>/<key>, outside the key namespace, and writes go
// through temporary files in <root>/.tmp, renamed into place once complete.
//
// Bucket names are DNS labels (dora.ValidateBucketName), so they never
// collide with ".meta" or ".tmp". All access goes through os.Root, and
// reads through a root opened on the bucket's own directory, so neither a
// key nor a symbolic link placed in the tree can reach outside the bucket.
//
// Because keys map to paths, a key cannot be both an object and a prefix
// directory of another object ("a" and "a/b"): the second Put fails with
// an error wrapping origin.ErrExists.
package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/ctxio"
	"github.com/doraproject/dora/router/origin"
)

const (
	metaDir = ".meta"
	tmpDir  = ".tmp"
	nLocks  = 64
)

// Dir is a directory of buckets. It implements origin.Reader, Writer and Lister.
type Dir struct {
	root *os.Root
	// locks serialise, per key (striped), the check-and-rename of Put and
	// Delete against readers, so data and sidecar are seen together.
	locks [nLocks]sync.RWMutex
	// tree guards directory creation (Put, shared) against the pruning of
	// empty directories (Delete, exclusive).
	tree sync.RWMutex
	// sidecars caches parsed sidecars by object, each valid while the data
	// file is the same file (fileID): reading one costs two directory
	// opens, a file read and a JSON decode on every Open.
	scMu     sync.Mutex
	sidecars map[objectName]cachedSidecar
	// warm keeps bucket directory handles and small objects (warm.go).
	warm warm
}

// Objects are only ever read by the platform (the router and the admin
// API), never by user code: directories are 0700 and files 0600, so an
// instance or build script running as another user cannot read any
// account's objects (docs/security.md).
const (
	dirMode  = 0o700
	fileMode = 0o600
)

var (
	_ origin.Reader = (*Dir)(nil)
	_ origin.Writer = (*Dir)(nil)
	_ origin.Lister = (*Dir)(nil)
)

// New opens (creating it when needed) the directory root.
func New(root string) (*Dir, error) {
	if root == "" {
		return nil, errors.New("local origin: empty root directory")
	}
	if err := os.MkdirAll(root, dirMode); err != nil {
		return nil, fmt.Errorf("local origin: %w", err)
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("local origin: %w", err)
	}
	for _, d := range []string{metaDir, tmpDir} {
		if err := r.MkdirAll(d, dirMode); err != nil {
			r.Close()
			return nil, fmt.Errorf("local origin: %w", err)
		}
	}
	d := &Dir{root: r, warm: warm{maxObject: DefaultHotObjectMax, maxBytes: DefaultHotBytes}}
	d.sweepTemp()
	return d, nil
}

// Close releases the directory handles.
func (d *Dir) Close() error {
	d.warm.closeAll()
	return d.root.Close()
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func validate(bucket, key string) error {
	if err := dora.ValidateBucketName(bucket); err != nil {
		return fmt.Errorf("bucket: %v: %w", err, origin.ErrBadKey)
	}
	return dora.ValidateKey(key)
}

func (d *Dir) lock(bucket, key string) *sync.RWMutex {
	h := fnv.New32a()
	h.Write([]byte(bucket))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return &d.locks[h.Sum32()%nLocks]
}

// sidecar is the JSON kept beside each object.
type sidecar struct {
	Size     int64     `json:"fsize"`
	ETag     string    `json:"hash"`
	MimeType string    `json:"mimeType"`
	Modified time.Time `json:"putTime"`
	// DataMtime names the data file the sidecar was written for: Put
	// gives each data file a modification time of its own, to the
	// nanosecond, which a rename and a copy that keeps times (cp -a,
	// rsync -a) keep. A sidecar left beside another data file (two
	// processes' Puts of one key interleaving their renames, a crash
	// between them, a file replaced by hand) is known for what it is.
	// Zero in sidecars written before it was recorded.
	DataMtime int64 `json:"dataMtime,omitempty"`
}

// describes tells whether sc was written for the data file fi: the same
// size and, when sc records it, the same modification time; a sidecar
// that does not record it is believed unless it is older than the file.
func (sc sidecar) describes(fi fs.FileInfo, written time.Time) bool {
	if sc.Size != fi.Size() {
		return false
	}
	if sc.DataMtime != 0 {
		return sc.DataMtime == fi.ModTime().UnixNano()
	}
	return !written.Before(fi.ModTime())
}

// openBucket opens a root confined to one bucket's (or its sidecars') directory.
func (d *Dir) openBucket(base, bucket string) (*os.Root, error) {
	name := bucket
	if base != "" {
		name = base + "/" + bucket
	}
	r, err := d.root.OpenRoot(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, origin.ErrNotFound
		}
		return nil, err
	}
	return r, nil
}

// Stat returns an object's metadata.
func (d *Dir) Stat(ctx context.Context, bucket, key string) (origin.Object, error) {
	if err := ctx.Err(); err != nil {
		return origin.Object{}, err
	}
	if h := d.warmLookup(bucket, key); h != nil {
		return h.obj, nil
	}
	rc, obj, err := d.Open(ctx, bucket, key, 0, 0)
	if err != nil {
		return origin.Object{}, err
	}
	rc.Close()
	return obj, nil
}

// OpenKeepsNoContext tells that Open looks at its context only before it
// returns, and its streams never: the router may recycle a context it
// passed once the stream is closed.
func (d *Dir) OpenKeepsNoContext() {}

// Open returns the bytes [offset, offset+length) of an object (length < 0:
// to the end) and its metadata. The caller closes the stream.
func (d *Dir) Open(ctx context.Context, bucket, key string, offset, length int64) (io.ReadCloser, origin.Object, error) {
	if err := ctx.Err(); err != nil {
		return nil, origin.Object{}, err
	}
	if h := d.warmLookup(bucket, key); h != nil {
		return h.open(offset, length)
	}
	if err := validate(bucket, key); err != nil {
		return nil, origin.Object{}, err
	}
	l := d.lock(bucket, key)
	l.RLock()
	f, obj, settled, err := d.openLocked(bucket, key)
	l.RUnlock()
	if err != nil {
		return nil, origin.Object{}, fmt.Errorf("open %s/%s: %w", bucket, truncate(key), err)
	}
	// Metadata computed beside a sidecar of other bytes may be that of
	// a Put between its renames: such an object is not kept, so that
	// the sidecar to come (which no watch sees) is read.
	if settled {
		if data := d.warm.keep(f, obj); data != nil {
			f.Close()
			return (&hotObject{obj: obj, data: data}).open(offset, length)
		}
	}
	if offset < 0 || offset > obj.Size {
		f.Close()
		return nil, origin.Object{}, fmt.Errorf("open %s/%s: offset %d outside [0, %d]", bucket, truncate(key), offset, obj.Size)
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, origin.Object{}, fmt.Errorf("open %s/%s: %w", bucket, truncate(key), err)
		}
	}
	var r io.Reader = f
	if length >= 0 {
		r = io.LimitReader(f, length)
	}
	return readCloser{r, f}, obj, nil
}

// warmLookup is the warm path of Open and Stat: the kept object, still
// the file at bucket/key, or nil (the cold path then opens the file). A
// kept object's names passed validate when it was first opened, so they
// are not checked again here.
func (d *Dir) warmLookup(bucket, key string) *hotObject {
	h, missing := d.warm.lookup(d, bucket, key)
	if missing {
		// Perhaps the bucket's directory was replaced under its kept
		// handle: the cold path opens it afresh.
		d.warm.forgetBucket(bucket)
	}
	return h
}

type readCloser struct {
	io.Reader
	io.Closer
}

// openLocked opens bucket/key and describes it: from its sidecar when
// that was written for the file, else computed from the bytes. The bool
// (settled) is false when the metadata was computed beside a sidecar of
// other bytes, which may yet be replaced by the file's own. The caller
// holds the key's lock.
func (d *Dir) openLocked(bucket, key string) (*os.File, origin.Object, bool, error) {
	br, err := d.openBucket("", bucket)
	if err != nil {
		return nil, origin.Object{}, false, err
	}
	defer br.Close()
	// Non-blocking: a FIFO at the key must not hang the request (for a
	// regular file the flag does nothing).
	f, err := br.OpenFile(key, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrInvalid) || isNotDir(err) || isNameTooLong(err) {
			return nil, origin.Object{}, false, origin.ErrNotFound
		}
		return nil, origin.Object{}, false, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, origin.Object{}, false, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, origin.Object{}, false, origin.ErrNotFound
	}
	obj := origin.Object{Bucket: bucket, Key: key, Size: fi.Size(), Modified: fi.ModTime().UTC()}
	id, idOK := fileID(fi)
	if idOK {
		if c, ok := d.cachedSidecar(bucket, key, id); ok && (!c.besideOther || d.sidecarID(bucket, key) == c.other) {
			obj.ETag, obj.MimeType, obj.Modified = c.sc.ETag, c.sc.MimeType, c.sc.Modified
			return f, obj, !c.besideOther, nil
		}
	}
	sc, scf, found := d.readSidecar(bucket, key)
	if found && sc.describes(fi, scf.written) {
		if idOK {
			d.cacheSidecar(bucket, key, cachedSidecar{id: id, sc: sc})
		}
		obj.ETag, obj.MimeType, obj.Modified = sc.ETag, sc.MimeType, sc.Modified
		return f, obj, true, nil
	}
	// No sidecar (a file put in the tree by hand: computed on every
	// open, as an edit in place may keep its size and time), or one that
	// may describe other bytes: compute what it would hold.
	etag, _, err := ETag(f)
	if err != nil {
		f.Close()
		return nil, origin.Object{}, false, err
	}
	head := make([]byte, 512)
	n, _ := f.ReadAt(head, 0)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, origin.Object{}, false, err
	}
	computed := sidecar{Size: fi.Size(), ETag: etag, MimeType: detectMime(key, head[:n]), Modified: obj.Modified}
	besideOther := false
	switch {
	case found && sc.Size == computed.Size && sc.ETag == computed.ETag:
		// The same bytes (a tree copied without its times, a touch):
		// the sidecar's MIME type and upload time still hold.
		computed = sc
		if idOK {
			d.cacheSidecar(bucket, key, cachedSidecar{id: id, sc: sc})
		}
	case found:
		// Other bytes' sidecar, perhaps of a Put still between its
		// renames: the computed metadata holds until the sidecar
		// changes.
		besideOther = true
		if idOK {
			d.cacheSidecar(bucket, key, cachedSidecar{id: id, sc: computed, besideOther: true, other: scf.id})
		}
	}
	obj.ETag, obj.MimeType, obj.Modified = computed.ETag, computed.MimeType, computed.Modified
	return f, obj, !besideOther, nil
}

func isNotDir(err error) bool { return errors.Is(err, syscall.ENOTDIR) }

// isNameTooLong: a path segment is longer than the file system names a
// file (a valid key it cannot hold, so no object).
func isNameTooLong(err error) bool { return errors.Is(err, syscall.ENAMETOOLONG) }

// maxSegment is the longest file name (NAME_MAX) of the usual file
// systems: a key with a longer segment cannot be stored here.
const maxSegment = 255

// segmentsFit refuses, as a bad key for this store, a key with a segment
// no file can be named.
func segmentsFit(key string) error {
	for seg := range strings.SplitSeq(key, "/") {
		if len(seg) > maxSegment {
			return fmt.Errorf("key %q: a path segment over %d bytes, longer than a file name may be: %w", truncate(key), maxSegment, origin.ErrBadKey)
		}
	}
	return nil
}

// maxCachedSidecars bounds the sidecar cache; when full it starts over.
const maxCachedSidecars = 4096

// objectName names an object in the sidecar cache.
type objectName struct{ bucket, key string }

// cachedSidecar is a sidecar and the identity of the data file it was read
// for.
type cachedSidecar struct {
	id fileIdent
	sc sidecar
	// besideOther: sc was computed beside a sidecar of other bytes,
	// whose identity is other; the entry holds while that sidecar is
	// still the one there.
	besideOther bool
	other       fileIdent
}

// fileIdent tells one data file from another: a Put renames a new file
// into place (a new inode, a new modification time).
type fileIdent struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

func (d *Dir) cachedSidecar(bucket, key string, id fileIdent) (cachedSidecar, bool) {
	d.scMu.Lock()
	defer d.scMu.Unlock()
	c, ok := d.sidecars[objectName{bucket, key}]
	if !ok || c.id != id {
		return cachedSidecar{}, false
	}
	return c, true
}

func (d *Dir) cacheSidecar(bucket, key string, c cachedSidecar) {
	d.scMu.Lock()
	defer d.scMu.Unlock()
	if d.sidecars == nil || len(d.sidecars) >= maxCachedSidecars {
		d.sidecars = make(map[objectName]cachedSidecar)
	}
	d.sidecars[objectName{bucket, key}] = c
}

// sidecarID identifies bucket/key's sidecar (following a link, as
// readSidecar does); zero when there is none.
func (d *Dir) sidecarID(bucket, key string) fileIdent {
	mr, err := d.openBucket(metaDir, bucket)
	if err != nil {
		return fileIdent{}
	}
	defer mr.Close()
	fi, err := mr.Stat(key)
	if err != nil {
		return fileIdent{}
	}
	id, _ := fileID(fi)
	return id
}

// forgetSidecar drops an object's cached sidecar (Put, Delete).
func (d *Dir) forgetSidecar(bucket, key string) {
	d.warm.drop(bucket, key)
	d.scMu.Lock()
	defer d.scMu.Unlock()
	delete(d.sidecars, objectName{bucket, key})
}

// maxSidecar bounds what readSidecar reads: a sidecar is a small JSON
// object.
const maxSidecar = 64 << 10

// scFile is what readSidecar saw of a sidecar's file: when it was
// written (Put writes the sidecar after the data file and renames it into
// place after it, so a sidecar older than the data file describes an
// earlier version of the object) and its identity.
type scFile struct {
	written time.Time
	id      fileIdent
}

// readSidecar reads the sidecar of bucket/key.
func (d *Dir) readSidecar(bucket, key string) (sidecar, scFile, bool) {
	mr, err := d.openBucket(metaDir, bucket)
	if err != nil {
		return sidecar{}, scFile{}, false
	}
	defer mr.Close()
	// Non-blocking: a FIFO in its place must not hang the reader (for a
	// regular file the flag does nothing).
	f, err := mr.OpenFile(key, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return sidecar{}, scFile{}, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return sidecar{}, scFile{}, false
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSidecar))
	if err != nil {
		return sidecar{}, scFile{}, false
	}
	var sc sidecar
	if json.Unmarshal(b, &sc) != nil {
		return sidecar{}, scFile{}, false
	}
	id, _ := fileID(fi)
	return sc, scFile{written: fi.ModTime(), id: id}, true
}

func detectMime(key string, head []byte) string {
	if ext := path.Ext(key); ext != "" {
		if t := mime.TypeByExtension(ext); t != "" {
			return t
		}
	}
	return http.DetectContentType(head)
}

// headWriter keeps the first 512 bytes written, for content sniffing.
type headWriter struct{ b []byte }

func (h *headWriter) Write(p []byte) (int, error) {
	if n := 512 - len(h.b); n > 0 {
		h.b = append(h.b, p[:min(n, len(p))]...)
	}
	return len(p), nil
}

// tempFile creates a temporary file in .tmp, flock'ed while it is written:
// the lock tells a starting process (sweepTemp), perhaps another role on
// the same directory, that the file is not an orphan.
func (d *Dir) tempFile() (*os.File, string, error) {
	var rnd [12]byte
	rand.Read(rnd[:])
	name := tmpDir + "/" + hex.EncodeToString(rnd[:])
	f, err := d.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return nil, "", err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		d.root.Remove(name)
		return nil, "", fmt.Errorf("lock %s: %w", name, err)
	}
	return f, name, err
}

// sweepTemp removes the temporary files of uploads interrupted by a crash
// (kill -9, power loss): those in .tmp that no process holds locked. A
// file between its close and its rename into place is unlocked for that
// instant; a start racing it fails that one upload (an error, never a lost
// acknowledged write).
func (d *Dir) sweepTemp() {
	dir, err := d.root.Open(tmpDir)
	if err != nil {
		return
	}
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return
	}
	for _, n := range names {
		name := tmpDir + "/" + n
		f, err := d.root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			d.root.Remove(name)
		}
		f.Close()
	}
}

// writeTemp writes all of r to a new temporary file, fsyncs and closes it.
func (d *Dir) writeTemp(r io.Reader, also io.Writer) (string, error) {
	f, name, err := d.tempFile()
	if err != nil {
		return "", err
	}
	w := io.Writer(f)
	if also != nil {
		w = io.MultiWriter(f, also)
	}
	_, err = io.Copy(w, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		d.root.Remove(name)
		return "", err
	}
	return name, nil
}

// Put streams r into bucket/key: to a temporary file while computing the
// etag, then fsync and rename, so readers see the old object or the new one,
// never a part. With opts.InsertOnly an existing key fails with ErrExists.
func (d *Dir) Put(ctx context.Context, bucket, key string, r io.Reader, opts origin.PutOptions) (origin.Object, error) {
	if err := validate(bucket, key); err != nil {
		return origin.Object{}, err
	}
	fail := func(err error) (origin.Object, error) {
		if isNameTooLong(err) {
			err = fmt.Errorf("%v: %w", err, origin.ErrBadKey)
		}
		return origin.Object{}, fmt.Errorf("put %s/%s: %w", bucket, truncate(key), err)
	}
	if err := segmentsFit(key); err != nil {
		return fail(err)
	}
	eh := newEtagHasher()
	head := &headWriter{}
	dataTmp, err := d.writeTemp(ctxio.Reader(ctx, r), io.MultiWriter(eh, head))
	if err != nil {
		return fail(err)
	}
	defer d.root.Remove(dataTmp) // no-op once renamed
	mt := opts.MimeType
	if mt == "" {
		mt = detectMime(key, head.b)
	}
	now := time.Now()
	sc := sidecar{Size: eh.n, ETag: eh.ETag(), MimeType: mt, Modified: now.UTC()}
	// The data file's own time, to the nanosecond (the file system's
	// clock ticks in milliseconds: two processes' writes in one tick
	// would share it), read back as the file system keeps it.
	if err := d.root.Chtimes(dataTmp, now, now); err == nil {
		if fi, err := d.root.Stat(dataTmp); err == nil {
			sc.DataMtime = fi.ModTime().UnixNano()
		}
	}
	scb, err := json.Marshal(sc)
	if err != nil {
		return fail(err)
	}
	metaTmp, err := d.writeTemp(strings.NewReader(string(scb)), nil)
	if err != nil {
		return fail(err)
	}
	defer d.root.Remove(metaTmp)

	l := d.lock(bucket, key)
	l.Lock()
	err = d.place(bucket, key, dataTmp, metaTmp, opts.InsertOnly)
	d.forgetSidecar(bucket, key)
	l.Unlock()
	if err != nil {
		return fail(err)
	}
	return origin.Object{Bucket: bucket, Key: key, Size: sc.Size, ETag: sc.ETag, MimeType: sc.MimeType, Modified: sc.Modified}, nil
}

// place renames the temporary files into place; the caller holds the key's lock.
func (d *Dir) place(bucket, key, dataTmp, metaTmp string, insertOnly bool) error {
	d.tree.RLock()
	defer d.tree.RUnlock()
	objPath := bucket + "/" + key
	metaPath := metaDir + "/" + bucket + "/" + key
	if fi, err := d.root.Lstat(objPath); err == nil {
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("key is a prefix of other objects or not a regular file: %w", origin.ErrExists)
		}
		if insertOnly {
			return origin.ErrExists
		}
	}
	if dir := path.Dir(key); dir != "." {
		for _, base := range []string{"", metaDir} {
			if err := d.mkdirInBucket(base, bucket, dir); err != nil {
				return err
			}
		}
	} else {
		for _, base := range []string{bucket, metaDir + "/" + bucket} {
			if err := d.root.MkdirAll(base, dirMode); err != nil {
				return err
			}
		}
	}
	if err := d.root.Rename(dataTmp, objPath); err != nil {
		return conflict(err)
	}
	if err := d.root.Rename(metaTmp, metaPath); err != nil {
		return conflict(err)
	}
	syncDir(d.root, path.Dir(objPath))
	return nil
}

// mkdirInBucket creates the directory dir of a key through a root confined
// to the bucket, so a symbolic link in the tree cannot lead the write out.
func (d *Dir) mkdirInBucket(base, bucket, dir string) error {
	name := bucket
	if base != "" {
		name = base + "/" + bucket
	}
	if err := d.root.MkdirAll(name, dirMode); err != nil {
		return err
	}
	br, err := d.root.OpenRoot(name)
	if err != nil {
		return err
	}
	defer br.Close()
	if err := br.MkdirAll(dir, dirMode); err != nil {
		return conflict(err)
	}
	return nil
}

// conflict maps "a path component is a file" to ErrExists.
func conflict(err error) error {
	if isNotDir(err) || errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.ENOTEMPTY) {
		return fmt.Errorf("key conflicts with an existing object or prefix: %v: %w", err, origin.ErrExists)
	}
	return err
}

func syncDir(r *os.Root, dir string) {
	if f, err := r.Open(dir); err == nil {
		f.Sync()
		f.Close()
	}
}

// Delete removes an object and its sidecar; ErrNotFound when absent.
func (d *Dir) Delete(ctx context.Context, bucket, key string) error {
	if err := validate(bucket, key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	l := d.lock(bucket, key)
	l.Lock()
	defer l.Unlock()
	d.forgetSidecar(bucket, key)
	br, err := d.openBucket("", bucket)
	if err != nil {
		return fmt.Errorf("delete %s/%s: %w", bucket, truncate(key), err)
	}
	defer br.Close()
	fi, err := br.Lstat(key)
	if err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("delete %s/%s: %w", bucket, truncate(key), origin.ErrNotFound)
	}
	if err := br.Remove(key); err != nil {
		return fmt.Errorf("delete %s/%s: %w", bucket, truncate(key), err)
	}
	mr, mErr := d.openBucket(metaDir, bucket)
	if mErr == nil {
		defer mr.Close()
		mr.Remove(key)
	}
	// Prune the directories the key leaves empty so the prefix can be a key again.
	d.tree.Lock()
	defer d.tree.Unlock()
	for dir := path.Dir(key); dir != "."; dir = path.Dir(dir) {
		if br.Remove(dir) != nil {
			break
		}
		if mr != nil {
			mr.Remove(dir)
		}
	}
	return nil
}

// List returns the objects of bucket whose keys start with prefix, sorted by
// key, at most limit of them (limit <= 0: all).
func (d *Dir) List(ctx context.Context, bucket, prefix string, limit int) ([]origin.Object, error) {
	keys, err := d.Keys(ctx, bucket, prefix)
	if err != nil {
		return nil, err
	}
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	objs := make([]origin.Object, 0, len(keys))
	for _, k := range keys {
		obj, err := d.Stat(ctx, bucket, k)
		if errors.Is(err, origin.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", bucket, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// Keys returns the sorted keys of bucket that start with prefix, without
// reading any object's metadata (a page of a listing stats only its own
// objects).
func (d *Dir) Keys(ctx context.Context, bucket, prefix string) ([]string, error) {
	if err := dora.ValidateBucketName(bucket); err != nil {
		return nil, fmt.Errorf("list: bucket: %v: %w", err, origin.ErrBadKey)
	}
	br, err := d.openBucket("", bucket)
	if errors.Is(err, origin.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", bucket, err)
	}
	defer br.Close()
	start := "."
	if i := strings.LastIndexByte(prefix, '/'); i > 0 {
		start = prefix[:i]
		if dora.ValidateKey(start) != nil {
			return nil, nil // no key can live under an invalid directory
		}
	}
	var keys []string
	err = fs.WalkDir(br.FS(), start, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || isNameTooLong(err) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if de.IsDir() {
			if p != "." && !strings.HasPrefix(p+"/", prefix) && !strings.HasPrefix(prefix, p+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if de.Type().IsRegular() && strings.HasPrefix(p, prefix) {
			keys = append(keys, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", bucket, err)
	}
	slices.Sort(keys)
	return keys, nil
}
