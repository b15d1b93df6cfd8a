// Package rescache keeps pipeline results for the router: a memory tier
// and an optional disk tier, each a least-recently-used set bounded in
// bytes, whose entries also expire.
//
// Keys name everything a result depends on (the object's etag, the
// pipeline text, each ufop's active version), so an entry never needs to
// be invalidated: a change makes a new key and the old entry ages out of
// the LRU. Entries are immutable once stored; Get hands out the stored
// bytes without a copy.
//
// A result is stored while it streams to the client (Writer): kept in
// memory while it is within the memory tier's entry bound, and written to
// a temporary file of the disk tier while it is within the disk tier's,
// so that no more than the memory entry bound of it is ever held in
// memory. On a clean end (Commit) the memory copy joins the memory tier
// and the file is renamed into the disk tier. A small result is in both
// tiers (the disk tier keeps what the memory tier evicts, and survives a
// restart); a large one only on disk, served from its file.
//
// The disk tier's directory is swept when the cache opens (Open): partial
// files of a previous process are removed, every entry's trailer is read
// and checked (size, key, expiry) and a bad or expired one is removed; an
// entry's checksum is verified before it is first served, and again while
// a large one streams. Bytes on disk (entries and files being written)
// never exceed the bound: a write that would pass it first evicts the
// least recently used entries, or gives up. The directory belongs to one
// cache at a time (a lock file).
package rescache

import (
	"container/list"
	"fmt"
	"io"
	"sync"
	"time"
)

// entryOverhead approximates the memory of an entry besides its bytes and
// key (list element, map slot, struct), so that many tiny entries are
// bounded too.
const entryOverhead = 160

// Entry is one stored result. Data must not be modified once stored.
type Entry struct {
	// Data is the result; nil for an entry of the disk tier whose bytes
	// are not in memory (a Hit's Body streams them).
	Data     []byte
	MimeType string
	ETag     string // the quoted HTTP validator served with it
	Created  time.Time
	Expires  time.Time
}

// Hit is a found entry. When its bytes are in memory (Entry.Data set) Body
// is nil; else Body streams them from the disk tier and the caller must
// close it. Size is the result's length either way.
type Hit struct {
	*Entry
	Body io.ReadCloser
	Size int64
}

// Options configure a cache.
type Options struct {
	// MemBytes bounds the memory tier (entries' bytes, keys and
	// overhead); MemEntry is the largest result kept in memory.
	MemBytes, MemEntry int64
	// Dir, when not empty, is the disk tier's directory (created if
	// missing); DiskBytes bounds the bytes of its files, DiskEntry is the
	// largest result it keeps (DiskBytes when 0 or larger).
	Dir                  string
	DiskBytes, DiskEntry int64
}

// Cache is safe for concurrent use.
type Cache struct {
	maxBytes int64
	maxEntry int64

	mu    sync.Mutex
	used  int64
	ll    *list.List // front: most recently used; values *item
	items map[string]*list.Element

	disk *diskTier // nil: memory only
}

type item struct {
	key  string
	e    *Entry
	cost int64
}

// New returns a memory-only cache holding at most maxBytes (entries'
// bytes, keys and overhead) and no entry larger than maxEntry bytes.
func New(maxBytes, maxEntry int64) *Cache {
	return &Cache{maxBytes: maxBytes, maxEntry: max(min(maxEntry, maxBytes), 0), ll: list.New(), items: map[string]*list.Element{}}
}

// Open returns a cache with o's tiers. With a disk tier it takes the
// directory's lock (ErrLocked when another cache holds it) and sweeps the
// directory, dropping the entries expired at now; Close releases it.
func Open(o Options, now time.Time) (*Cache, error) {
	c := New(o.MemBytes, o.MemEntry)
	if o.Dir == "" {
		return c, nil
	}
	if o.DiskBytes <= 0 {
		return nil, fmt.Errorf("rescache: disk tier %s: the bound %d must be positive", o.Dir, o.DiskBytes)
	}
	d, err := openDisk(o.Dir, o.DiskBytes, o.DiskEntry, now)
	if err != nil {
		return nil, err
	}
	c.disk = d
	return c, nil
}

// Close releases the disk tier's directory (its entries stay for the next
// Open). The cache must not be used afterwards.
func (c *Cache) Close() error {
	if c.disk == nil {
		return nil
	}
	return c.disk.close()
}

// MaxEntry is the largest result the cache keeps in either tier.
func (c *Cache) MaxEntry() int64 {
	if c.disk != nil {
		return max(c.maxEntry, c.disk.maxEntry)
	}
	return c.maxEntry
}

// Get returns the live entry of key at now: from memory, else from the
// disk tier (a small entry read from disk joins the memory tier). An
// expired or damaged entry is dropped and missed.
func (c *Cache) Get(key string, now time.Time) (Hit, bool) {
	c.mu.Lock()
	e, ok := c.memHit(c.items[key], now)
	c.mu.Unlock()
	if ok {
		return Hit{Entry: e, Size: int64(len(e.Data))}, true
	}
	return c.getDisk(key, now)
}

// GetBytes is Get with the key as bytes: a memory hit allocates nothing.
func (c *Cache) GetBytes(key []byte, now time.Time) (Hit, bool) {
	c.mu.Lock()
	e, ok := c.memHit(c.items[string(key)], now)
	c.mu.Unlock()
	if ok {
		return Hit{Entry: e, Size: int64(len(e.Data))}, true
	}
	if c.disk == nil {
		return Hit{}, false
	}
	return c.getDisk(string(key), now)
}

// memHit returns el's entry when live at now (moved to the front), else
// drops an expired one. c.mu is held; el may be nil.
func (c *Cache) memHit(el *list.Element, now time.Time) (*Entry, bool) {
	if el == nil {
		return nil, false
	}
	it := el.Value.(*item)
	if !now.Before(it.e.Expires) {
		c.remove(el)
		return nil, false
	}
	c.ll.MoveToFront(el)
	return it.e, true
}

func (c *Cache) getDisk(key string, now time.Time) (Hit, bool) {
	if c.disk == nil {
		return Hit{}, false
	}
	h, ok := c.disk.get(key, now, c.maxEntry)
	if ok && h.Data != nil {
		c.Put(key, h.Entry)
	}
	return h, ok
}

// Put stores e (whose Data is the whole result) in the memory tier under
// key, evicting the least recently used entries to stay within the bound.
// It reports false when e is too large to keep.
func (c *Cache) Put(key string, e *Entry) bool {
	cost := int64(len(e.Data)) + int64(len(key)) + entryOverhead
	if e.Data == nil || int64(len(e.Data)) > c.maxEntry || cost > c.maxBytes {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.remove(el)
	}
	for c.used+cost > c.maxBytes {
		c.remove(c.ll.Back())
	}
	c.items[key] = c.ll.PushFront(&item{key: key, e: e, cost: cost})
	c.used += cost
	return true
}

func (c *Cache) remove(el *list.Element) {
	it := el.Value.(*item)
	c.ll.Remove(el)
	delete(c.items, it.key)
	c.used -= it.cost
}

// Stats are a cache's figures.
type Stats struct {
	MemEntries  int
	MemBytes    int64 // accounted: bytes, keys and overhead
	DiskEntries int
	DiskBytes   int64 // files on disk, those being written included
}

// Stats returns the cache's entries and the bytes they account for.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	s := Stats{MemEntries: len(c.items), MemBytes: c.used}
	c.mu.Unlock()
	if c.disk != nil {
		s.DiskEntries, s.DiskBytes = c.disk.stats()
	}
	return s
}

// Writer stores one result while it streams: Write every byte of it in
// order, then Commit on a clean end, or Abort. A Writer is used by one
// goroutine.
type Writer struct {
	c    *Cache
	key  string
	meta Entry
	n    int64

	mem bool   // still within the memory tier's entry bound
	buf []byte // the result so far, while mem

	file *diskWrite // the disk tier's temporary file, nil once given up
	done bool
}

// NewWriter starts storing key's result with meta's type, validator and
// times (meta.Data is ignored); size is its length, -1 when unknown. It
// returns nil when a result of that size is kept by no tier.
func (c *Cache) NewWriter(key string, meta Entry, size int64) *Writer {
	if size > c.MaxEntry() {
		return nil
	}
	meta.Data = nil
	w := &Writer{c: c, key: key, meta: meta, mem: size <= c.maxEntry && c.maxEntry > 0}
	if w.mem && size >= 0 {
		w.buf = make([]byte, 0, size)
	}
	if c.disk != nil && size <= c.disk.maxEntry {
		w.file = c.disk.create(key)
	}
	if !w.mem && w.file == nil {
		return nil
	}
	return w
}

// Write takes the next bytes of the result. It never fails: a tier that
// cannot keep the result (too large, a disk error) is given up silently.
func (w *Writer) Write(p []byte) (int, error) {
	if w.done || len(p) == 0 {
		return len(p), nil
	}
	w.n += int64(len(p))
	if w.mem {
		if w.n > w.c.maxEntry {
			w.mem, w.buf = false, nil
		} else {
			w.buf = append(w.buf, p...)
		}
	}
	if w.file != nil && !w.file.write(p, w.n) {
		w.file = nil
	}
	return len(p), nil
}

// Commit stores what was written as the whole result, in every tier that
// kept it. Calls after the first, or after Abort, do nothing.
func (w *Writer) Commit() {
	if w.done {
		return
	}
	w.done = true
	if w.mem {
		e := w.meta
		e.Data = w.buf
		if e.Data == nil {
			e.Data = []byte{}
		}
		w.c.Put(w.key, &e)
	}
	if w.file != nil {
		w.file.commit(w.meta, w.n)
		w.file = nil
	}
	w.buf = nil
}

// Abort drops what was written. Calls after Commit do nothing.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	if w.file != nil {
		w.file.abort()
		w.file = nil
	}
	w.buf = nil
}
