package store

import (
	"context"
	"fmt"
	"strings"
	"sync"
)

// Watchers is the Watch machinery of a store that lists from itself (the
// bbolt and the in-memory stores): Notify wakes the watchers whose prefix
// covers a changed key, each then lists its prefix again and offers the
// newest listing (changes in quick succession coalesce into one). The
// zero value is not usable; use NewWatchers.
type Watchers struct {
	mu     sync.Mutex // guards closed and set
	closed bool
	set    map[*watcher]struct{}
	stop   chan struct{}  // closed by Close: ends every watch
	wg     sync.WaitGroup // watcher goroutines
}

// watcher is one Watch call.
type watcher struct {
	prefix string
	wake   chan struct{} // one slot: "something changed since you last listed"
}

// NewWatchers returns an empty set of watchers.
func NewWatchers() *Watchers {
	return &Watchers{set: map[*watcher]struct{}{}, stop: make(chan struct{})}
}

// Notify wakes the watchers of the changed keys. It never blocks.
func (h *Watchers) Notify(changed []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.set {
		for _, k := range changed {
			if strings.HasPrefix(k, w.prefix) {
				select {
				case w.wake <- struct{}{}:
				default: // already pending
				}
				break
			}
		}
	}
}

// Watch sends list(prefix) at once, then again after every Notify of a key
// under prefix, until ctx ends or Close; then the channel is closed. A
// listing that fails is skipped (only a closing store fails one). An
// invalid prefix is ErrInvalid; after Close, ErrClosed.
func (h *Watchers) Watch(ctx context.Context, prefix string, list func(prefix string) ([]KV, error)) (<-chan []KV, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	w := &watcher{prefix: prefix, wake: make(chan struct{}, 1)}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, fmt.Errorf("watch %q: %w", prefix, ErrClosed)
	}
	// Registered before the first listing, so no change can fall between
	// the listing and the registration.
	w.wake <- struct{}{}
	h.set[w] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()

	out := make(chan []KV, 1)
	go func() {
		defer h.wg.Done()
		defer close(out)
		defer func() {
			h.mu.Lock()
			delete(h.set, w)
			h.mu.Unlock()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-h.stop:
				return
			case <-w.wake:
			}
			kvs, err := list(prefix)
			if err != nil {
				continue // the stop channel ends the loop
			}
			if kvs == nil {
				kvs = []KV{}
			}
			OfferLatest(out, kvs)
		}
	}()
	return out, nil
}

// Close ends every watch and waits for their goroutines. Closing twice is
// harmless.
func (h *Watchers) Close() {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.stop)
	}
	h.mu.Unlock()
	h.wg.Wait()
}
