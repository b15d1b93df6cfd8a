package rescache

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func entry(n int, ttl time.Duration) *Entry {
	return &Entry{Data: bytes.Repeat([]byte{'x'}, n), Created: t0, Expires: t0.Add(ttl)}
}

// TestBoundedInBytes: under a stream of distinct keys the cache never
// holds more than its bound, keeps the most recently used and refuses
// entries above the entry bound.
func TestBoundedInBytes(t *testing.T) {
	c := New(100_000, 10_000)
	for i := range 10_000 {
		c.Put(fmt.Sprintf("key-%d", i), entry(1000+i%5000, time.Hour))
		if b := c.Stats().MemBytes; b > 100_000 {
			t.Fatalf("after %d puts the cache accounts %d bytes (bound 100000)", i+1, b)
		}
	}
	st := c.Stats()
	if n, b := st.MemEntries, st.MemBytes; n == 0 || b == 0 {
		t.Fatalf("empty after the stream: %d entries, %d bytes", st.MemEntries, st.MemBytes)
	}
	if _, ok := c.Get("key-9999", t0); !ok {
		t.Fatal("the newest entry was evicted")
	}
	if _, ok := c.Get("key-0", t0); ok {
		t.Fatal("the oldest entry survived 10000 distinct keys")
	}
	if c.Put("huge", entry(10_001, time.Hour)) {
		t.Fatal("an entry above the entry bound was stored")
	}
}

// TestLRUAndExpiry: a Get keeps an entry from eviction; an expired entry
// is a miss and frees its bytes.
func TestLRUAndExpiry(t *testing.T) {
	c := New(3*(1000+1+entryOverhead), 1000)
	c.Put("a", entry(1000, time.Hour))
	c.Put("b", entry(1000, time.Hour))
	c.Put("c", entry(1000, time.Minute))
	if _, ok := c.Get("a", t0); !ok {
		t.Fatal("a missing")
	}
	c.Put("d", entry(1000, time.Hour)) // evicts b, the least recently used
	if _, ok := c.Get("b", t0); ok {
		t.Fatal("b survived although least recently used")
	}
	if _, ok := c.Get("a", t0); !ok {
		t.Fatal("a evicted although recently used")
	}
	if _, ok := c.Get("c", t0.Add(time.Minute)); ok {
		t.Fatal("c served at its expiry")
	}
	if n := c.Stats().MemEntries; n != 2 {
		t.Fatalf("%d entries, want 2 (a, d)", n)
	}
	// Replacing a key does not count it twice.
	c.Put("a", entry(10, time.Hour))
	if b := c.Stats().MemBytes; b != 10+1+1000+1+2*entryOverhead {
		t.Fatalf("bytes %d after replacing a", b)
	}
}
