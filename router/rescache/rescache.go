// Package rescache keeps pipeline results in memory for the router: a
// least-recently-used map bounded in bytes, whose entries also expire.
//
// Keys name everything a result depends on (the object's etag, the
// pipeline text, each ufop's active version), so an entry never needs to
// be invalidated: a change makes a new key and the old entry ages out of
// the LRU. Entries are immutable once stored; Get hands out the stored
// bytes without a copy.
package rescache

import (
	"container/list"
	"sync"
	"time"
)

// entryOverhead approximates the memory of an entry besides its bytes and
// key (list element, map slot, struct), so that many tiny entries are
// bounded too.
const entryOverhead = 160

// Entry is one stored result. Data must not be modified once stored.
type Entry struct {
	Data     []byte
	MimeType string
	ETag     string // the quoted HTTP validator served with it
	Created  time.Time
	Expires  time.Time
}

// Cache is safe for concurrent use.
type Cache struct {
	maxBytes int64
	maxEntry int64

	mu    sync.Mutex
	used  int64
	ll    *list.List // front: most recently used; values *item
	items map[string]*list.Element
}

type item struct {
	key  string
	e    *Entry
	cost int64
}

// New returns a cache holding at most maxBytes (entries' bytes, keys and
// overhead) and no entry larger than maxEntry bytes.
func New(maxBytes, maxEntry int64) *Cache {
	return &Cache{maxBytes: maxBytes, maxEntry: min(maxEntry, maxBytes), ll: list.New(), items: map[string]*list.Element{}}
}

// MaxEntry is the largest result Put accepts.
func (c *Cache) MaxEntry() int64 { return c.maxEntry }

// Get returns the live entry of key at now (an expired one is dropped).
func (c *Cache) Get(key string, now time.Time) (*Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
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

// Put stores e under key, evicting the least recently used entries to stay
// within the bound. It reports false when e is too large to keep.
func (c *Cache) Put(key string, e *Entry) bool {
	cost := int64(len(e.Data)) + int64(len(key)) + entryOverhead
	if int64(len(e.Data)) > c.maxEntry || cost > c.maxBytes {
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

// Stats returns the number of entries and the bytes they account for.
func (c *Cache) Stats() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items), c.used
}
