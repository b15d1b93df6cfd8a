// Package memory is the in-process pool.Discovery of the embedded platform:
// the local runtime publishes the full set of healthy instances, and every
// watcher (router pools, status pages) receives it.
package memory

import (
	"context"
	"slices"
	"sync"

	"github.com/doraproject/dora/pool"
)

var _ pool.Discovery = (*Discovery)(nil)

// Discovery holds the latest published set and fans it out to watchers.
// Publish never blocks on a watcher: a watcher that has not taken the
// previous set gets only the latest one (values are coalesced, none is
// queued). The zero value is not usable; call New.
type Discovery struct {
	mu       sync.Mutex
	latest   []pool.Instance // never mutated after Publish stores it
	watchers map[*watcher]struct{}
}

type watcher struct {
	ch chan []pool.Instance // capacity 1: holds at most the latest set
}

// New returns a Discovery whose current set is empty.
func New() *Discovery {
	return &Discovery{latest: []pool.Instance{}, watchers: map[*watcher]struct{}{}}
}

// Publish replaces the current set of healthy instances (a full set, not a
// delta) and hands it to every watcher. The slice is copied; watchers receive
// a shared copy they must treat as read-only.
func (d *Discovery) Publish(instances []pool.Instance) {
	set := slices.Clone(instances)
	if set == nil {
		set = []pool.Instance{}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.latest = set
	for w := range d.watchers {
		w.offer(set)
	}
}

// offer puts set in the watcher's buffer, replacing a set not yet taken.
// Called with d.mu held: only offer sends on w.ch, so after the drain the
// buffer has room and the send cannot block.
func (w *watcher) offer(set []pool.Instance) {
	select {
	case w.ch <- set:
		return
	default:
	}
	select {
	case <-w.ch:
	default:
	}
	w.ch <- set
}

// Watch returns a channel that receives the current set at once, then every
// later one (coalesced to the latest for a slow reader). It closes when ctx
// ends.
func (d *Discovery) Watch(ctx context.Context) <-chan []pool.Instance {
	w := &watcher{ch: make(chan []pool.Instance, 1)}
	d.mu.Lock()
	if ctx.Err() != nil {
		d.mu.Unlock()
		close(w.ch)
		return w.ch
	}
	d.watchers[w] = struct{}{}
	w.offer(d.latest)
	d.mu.Unlock()

	context.AfterFunc(ctx, func() {
		d.mu.Lock()
		delete(d.watchers, w)
		close(w.ch)
		d.mu.Unlock()
	})
	return w.ch
}

// Instances returns a copy of the current set.
func (d *Discovery) Instances() []pool.Instance {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.latest)
}

// Watchers returns how many watches are open (for tests and metrics).
func (d *Discovery) Watchers() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.watchers)
}
