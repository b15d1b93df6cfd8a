package rescache

import (
	"container/list"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// The disk tier: one file per entry, named by a digest of its key, holding
// the result's bytes followed by a trailer (trailer.go) with the key, the
// entry's metadata, the length and a CRC-32C of the bytes. A file is
// written under a temporary name and renamed into place once complete, so
// a complete name is always a complete entry; what a crash leaves behind
// is a temporary file, removed by the next sweep.

// File names in the directory.
const (
	resSuffix = ".res" // a stored entry
	tmpSuffix = ".tmp" // an entry being written
	lockName  = "lock"
)

// ErrLocked: another cache holds the directory.
var ErrLocked = errors.New("rescache: directory in use by another cache")

// errCorrupt: a stored entry's bytes no longer match its checksum.
var errCorrupt = errors.New("rescache: stored result corrupt")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type diskTier struct {
	dir      string
	maxBytes int64
	maxEntry int64
	lock     *os.File

	mu    sync.Mutex
	used  int64      // files of the entries, and bytes reserved by writes
	ll    *list.List // front: most recently used; values *diskItem
	items map[string]*list.Element
}

type diskItem struct {
	key      string
	name     string // file name in dir
	e        *Entry // metadata; Data nil
	size     int64  // the result's bytes
	fileSize int64  // size and trailer
	crc      uint32
	verified bool // the file's checksum was checked by this process (under mu)
}

// fileName names key's entry: a digest, so that any key makes a short,
// safe file name.
func fileName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:16]) + resSuffix
}

func openDisk(dir string, maxBytes, maxEntry int64, now time.Time) (*diskTier, error) {
	if maxEntry <= 0 || maxEntry > maxBytes {
		maxEntry = maxBytes
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("rescache: disk tier: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	d := &diskTier{dir: dir, maxBytes: maxBytes, maxEntry: maxEntry, lock: lock, ll: list.New(), items: map[string]*list.Element{}}
	if err := d.sweep(now); err != nil {
		unlockDir(lock)
		return nil, err
	}
	return d, nil
}

func (d *diskTier) close() error { return unlockDir(d.lock) }

// sweep builds the index from the directory: temporary files are removed,
// and so are entries whose trailer is unreadable, inconsistent with the
// file or with its name, or expired at now. The rest are kept, least
// recently used (oldest modification time) first out, within the bound.
// Files that are not the cache's are left alone.
func (d *diskTier) sweep(now time.Time) error {
	des, err := os.ReadDir(d.dir)
	if err != nil {
		return fmt.Errorf("rescache: sweep %s: %w", d.dir, err)
	}
	type found struct {
		it    *diskItem
		mtime time.Time
	}
	var fs []found
	for _, de := range des {
		name := de.Name()
		if !de.Type().IsRegular() {
			continue
		}
		p := filepath.Join(d.dir, name)
		switch {
		case strings.HasSuffix(name, tmpSuffix):
			os.Remove(p)
		case strings.HasSuffix(name, resSuffix):
			it, mtime, err := readItem(p, name)
			if err != nil || !now.Before(it.e.Expires) {
				os.Remove(p)
				continue
			}
			fs = append(fs, found{it, mtime})
		}
	}
	slices.SortFunc(fs, func(a, b found) int { return a.mtime.Compare(b.mtime) })
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range fs {
		d.items[f.it.key] = d.ll.PushFront(f.it)
		d.used += f.it.fileSize
	}
	for d.used > d.maxBytes {
		d.removeLocked(d.ll.Back())
	}
	return nil
}

// readItem reads the trailer of the entry file at p (named name).
func readItem(p, name string) (*diskItem, time.Time, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, time.Time{}, err
	}
	tr, err := readTrailer(f, fi.Size())
	if err != nil {
		return nil, time.Time{}, err
	}
	if fileName(tr.Key) != name {
		return nil, time.Time{}, fmt.Errorf("rescache: %s holds another key's entry", name)
	}
	it := &diskItem{key: tr.Key, name: name, size: tr.Size, fileSize: fi.Size(), crc: tr.CRC,
		e: &Entry{MimeType: tr.MimeType, ETag: tr.ETag, Created: time.Unix(0, tr.Created), Expires: time.Unix(0, tr.Expires)}}
	return it, fi.ModTime(), nil
}

// removeLocked drops an entry and its file. d.mu is held.
func (d *diskTier) removeLocked(el *list.Element) {
	it := el.Value.(*diskItem)
	d.ll.Remove(el)
	delete(d.items, it.key)
	d.used -= it.fileSize
	os.Remove(filepath.Join(d.dir, it.name))
}

// drop removes it when it is still key's entry (a damaged or vanished file).
func (d *diskTier) drop(it *diskItem) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if el, ok := d.items[it.key]; ok && el.Value.(*diskItem) == it {
		d.removeLocked(el)
	}
}

// reserve accounts n more bytes about to be written, evicting the least
// recently used entries as needed; false when even an empty tier has no
// room (the other bytes are writes in progress).
func (d *diskTier) reserve(n int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.used+n > d.maxBytes && d.ll.Len() > 0 {
		d.removeLocked(d.ll.Back())
	}
	if d.used+n > d.maxBytes {
		return false
	}
	d.used += n
	return true
}

func (d *diskTier) release(n int64) {
	d.mu.Lock()
	d.used -= n
	d.mu.Unlock()
}

func (d *diskTier) stats() (int, int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.items), d.used
}

// get opens key's entry at now. An entry of at most memEntry bytes is read
// whole and checked (Hit.Data); a larger one streams from its file
// (Hit.Body), checked first when this process has not checked it yet, and
// again while it streams. A damaged entry is removed and missed.
func (d *diskTier) get(key string, now time.Time, memEntry int64) (Hit, bool) {
	d.mu.Lock()
	el, ok := d.items[key]
	if !ok {
		d.mu.Unlock()
		return Hit{}, false
	}
	it := el.Value.(*diskItem)
	if !now.Before(it.e.Expires) {
		d.removeLocked(el)
		d.mu.Unlock()
		return Hit{}, false
	}
	d.ll.MoveToFront(el)
	verified := it.verified
	d.mu.Unlock()

	p := filepath.Join(d.dir, it.name)
	f, err := os.Open(p)
	if err != nil {
		d.drop(it)
		return Hit{}, false
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != it.fileSize {
		f.Close()
		d.drop(it)
		return Hit{}, false
	}
	// The modification time orders the entries for the next sweep.
	os.Chtimes(p, time.Time{}, now)
	if it.size <= memEntry {
		buf := make([]byte, it.size)
		_, err := f.ReadAt(buf, 0)
		f.Close()
		if err != nil || crc32.Checksum(buf, castagnoli) != it.crc {
			d.drop(it)
			return Hit{}, false
		}
		d.setVerified(it)
		e := *it.e
		e.Data = buf
		return Hit{Entry: &e, Size: it.size}, true
	}
	if !verified {
		h := crc32.New(castagnoli)
		if _, err := io.Copy(h, io.NewSectionReader(f, 0, it.size)); err != nil || h.Sum32() != it.crc {
			f.Close()
			d.drop(it)
			return Hit{}, false
		}
		d.setVerified(it)
	}
	return Hit{Entry: it.e, Body: &fileBody{f: f, sr: io.NewSectionReader(f, 0, it.size), d: d, it: it}, Size: it.size}, true
}

func (d *diskTier) setVerified(it *diskItem) {
	d.mu.Lock()
	it.verified = true
	d.mu.Unlock()
}

// fileBody streams an entry's bytes from its file, checking them: a
// mismatch at the end is an error (the reader's response is cut, not
// completed with bad bytes) and drops the entry.
type fileBody struct {
	f   *os.File
	sr  *io.SectionReader
	crc uint32
	d   *diskTier
	it  *diskItem
}

func (b *fileBody) Read(p []byte) (int, error) {
	n, err := b.sr.Read(p)
	b.crc = crc32.Update(b.crc, castagnoli, p[:n])
	if err == io.EOF && b.crc != b.it.crc {
		b.d.drop(b.it)
		return n, errCorrupt
	}
	return n, err
}

func (b *fileBody) Close() error { return b.f.Close() }

// diskWrite is one entry being written to a temporary file.
type diskWrite struct {
	d        *diskTier
	key      string
	f        *os.File // nil once closed
	tmp      string
	crc      uint32
	reserved int64
}

// create starts key's temporary file; nil on failure (the tier is then
// skipped for this result).
func (d *diskTier) create(key string) *diskWrite {
	f, err := os.CreateTemp(d.dir, "w-*"+tmpSuffix)
	if err != nil {
		return nil
	}
	return &diskWrite{d: d, key: key, f: f, tmp: f.Name()}
}

// write appends p (total: the result's length so far); false when the
// tier gave the result up (too large, no room, a write error), the file
// then removed.
func (w *diskWrite) write(p []byte, total int64) bool {
	if total > w.d.maxEntry || !w.d.reserve(int64(len(p))) {
		w.abort()
		return false
	}
	w.reserved += int64(len(p))
	if _, err := w.f.Write(p); err != nil {
		w.abort()
		return false
	}
	w.crc = crc32.Update(w.crc, castagnoli, p)
	return true
}

// commit completes the file with its trailer and renames it into place as
// key's entry (replacing an older one).
func (w *diskWrite) commit(meta Entry, size int64) {
	tr, err := encodeTrailer(trailer{Key: w.key, MimeType: meta.MimeType, ETag: meta.ETag,
		Created: meta.Created.UnixNano(), Expires: meta.Expires.UnixNano(), Size: size, CRC: w.crc})
	if err != nil || !w.d.reserve(int64(len(tr))) {
		w.abort()
		return
	}
	w.reserved += int64(len(tr))
	if _, err := w.f.Write(tr); err != nil {
		w.abort()
		return
	}
	err = w.f.Close()
	w.f = nil
	if err != nil {
		w.abort()
		return
	}
	d := w.d
	name := fileName(w.key)
	it := &diskItem{key: w.key, name: name, size: size, fileSize: w.reserved, crc: w.crc, verified: true, e: &meta}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.Rename(w.tmp, filepath.Join(d.dir, name)); err != nil {
		os.Remove(w.tmp)
		d.used -= w.reserved
		return
	}
	if el, ok := d.items[w.key]; ok {
		// Its file was just replaced: account, do not remove.
		d.ll.Remove(el)
		delete(d.items, w.key)
		d.used -= el.Value.(*diskItem).fileSize
	}
	d.items[w.key] = d.ll.PushFront(it)
}

// abort removes the temporary file and releases its bytes.
func (w *diskWrite) abort() {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	os.Remove(w.tmp)
	w.d.release(w.reserved)
	w.reserved = 0
}
