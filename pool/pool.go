package pool

import (
	"cmp"
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Options tune ejection. Zero fields take the defaults below.
type Options struct {
	// EjectAfter is how many connect failures in a row eject a host
	// (default 3).
	EjectAfter int
	// BaseEjection is the first ejection's length (default 1s); every
	// further ejection without a success in between doubles it.
	BaseEjection time.Duration
	// MaxEjection caps the ejection length (default 30s).
	MaxEjection time.Duration
}

// Defaults for Options.
const (
	DefaultEjectAfter   = 3
	DefaultBaseEjection = time.Second
	DefaultMaxEjection  = 30 * time.Second
)

func (o Options) withDefaults() Options {
	if o.EjectAfter <= 0 {
		o.EjectAfter = DefaultEjectAfter
	}
	if o.BaseEjection <= 0 {
		o.BaseEjection = DefaultBaseEjection
	}
	if o.MaxEjection <= 0 {
		o.MaxEjection = DefaultMaxEjection
	}
	if o.MaxEjection < o.BaseEjection {
		o.MaxEjection = o.BaseEjection
	}
	return o
}

// Pool holds, per Key, an immutable snapshot of the hosts the router may
// pick from. Readers (Pick, Healthy, Keys) never lock: they load the current
// table through an atomic pointer. Update builds a new table off the hot path
// and swaps it in, carrying each surviving Host over so that its in-flight
// count and ejection state outlive a discovery refresh.
//
// The zero Pool is not usable; call New.
type Pool struct {
	opts  Options
	table atomic.Pointer[table]
	mu    sync.Mutex // serialises Update (readers never take it)
	// changed is closed by the next Update and replaced (Changed).
	changed atomic.Pointer[chan struct{}]
}

// table is one immutable generation of the pool.
type table struct {
	byKey map[Key]*snapshot
	keys  []Key // sorted, every key with at least one host
}

// snapshot is the immutable host list of one Key.
type snapshot struct {
	hosts []*Host // sorted by instance ID
}

// New returns an empty pool.
func New(opts Options) *Pool {
	p := &Pool{opts: opts.withDefaults()}
	p.table.Store(&table{byKey: map[Key]*snapshot{}})
	ch := make(chan struct{})
	p.changed.Store(&ch)
	return p
}

// Changed returns a channel closed at the next Update: a waiter (a request
// held for an instance) takes it, checks the pool, then waits on it, and
// misses no change in between. Ejections that end do not close it; a
// waiter that cares uses EjectedUntil.
func (p *Pool) Changed() <-chan struct{} { return *p.changed.Load() }

// Options returns the effective options (defaults filled in).
func (p *Pool) Options() Options { return p.opts }

// Update replaces the whole set of instances (a full set, not a delta). A
// Host whose instance is unchanged (same ID and the same fields) is kept, with
// its counters; an instance whose address or key changed under the same ID
// gets a fresh Host. Instances without an address are dropped; duplicate IDs
// keep the first occurrence; an empty ID falls back to the address as the
// identity. Safe to call concurrently with every other method.
func (p *Pool) Update(instances []Instance) {
	p.mu.Lock()
	defer p.mu.Unlock()

	old := p.table.Load()
	prev := make(map[string]*Host)
	for _, s := range old.byKey {
		for _, h := range s.hosts {
			prev[h.id] = h
		}
	}

	seen := make(map[string]bool, len(instances))
	byKey := make(map[Key]*snapshot)
	for _, in := range instances {
		if in.Addr == "" {
			continue
		}
		id := in.ID
		if id == "" {
			id = in.Addr
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		h := prev[id]
		if h == nil || h.inst != in {
			h = &Host{inst: in, id: id, opts: &p.opts}
		}
		k := in.Key()
		s := byKey[k]
		if s == nil {
			s = &snapshot{}
			byKey[k] = s
		}
		s.hosts = append(s.hosts, h)
	}

	keys := make([]Key, 0, len(byKey))
	for k, s := range byKey {
		slices.SortFunc(s.hosts, func(a, b *Host) int { return cmp.Compare(a.id, b.id) })
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	p.table.Store(&table{byKey: byKey, keys: keys})
	next := make(chan struct{})
	close(*p.changed.Swap(&next))
}

func compareKeys(a, b Key) int {
	return cmp.Or(cmp.Compare(a.Ufop, b.Ufop), cmp.Compare(a.Version, b.Version), cmp.Compare(a.Region, b.Region))
}

// Run feeds the pool from d: every set d's watch sends becomes an Update. It
// returns when ctx ends or the watch channel closes.
func (p *Pool) Run(ctx context.Context, d Discovery) {
	ch := d.Watch(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case set, ok := <-ch:
			if !ok {
				return
			}
			p.Update(set)
		}
	}
}

// Pick chooses a host of k for one request: two distinct random candidates
// among the hosts that are neither ejected at now nor avoid, and the one with
// fewer requests in flight wins (power of two choices). avoid lets the caller
// retry on another instance; pass nil otherwise.
//
// Pick returns nil when k has no eligible host: no instance at all, only
// avoid, or every instance ejected. It deliberately does not fall back to an
// ejected host: the router answers 503 and the client retries later, rather
// than the router piling requests on instances that just refused
// connections. Pick allocates nothing and takes no lock.
func (p *Pool) Pick(k Key, avoid *Host, now time.Time) *Host {
	s := p.table.Load().byKey[k]
	if s == nil {
		return nil
	}
	hosts := s.hosts
	n := len(hosts)
	t := now.UnixNano()
	switch n {
	case 0:
		return nil
	case 1:
		if h := hosts[0]; h != avoid && h.available(t) {
			return h
		}
		return nil
	}

	// Fast path: two distinct random indices, both eligible.
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := hosts[i], hosts[j]
	if a != avoid && b != avoid && a.available(t) && b.available(t) {
		return lessLoaded(a, b)
	}

	// Slow path (some host ejected or avoided): reservoir-sample two of the
	// eligible hosts in one pass, without allocating.
	var c [2]*Host
	seen := 0
	for _, h := range hosts {
		if h == avoid || !h.available(t) {
			continue
		}
		seen++
		switch {
		case seen <= 2:
			c[seen-1] = h
		default:
			if r := rand.IntN(seen); r < 2 {
				c[r] = h
			}
		}
	}
	switch seen {
	case 0:
		return nil
	case 1:
		return c[0]
	}
	return lessLoaded(c[0], c[1])
}

func lessLoaded(a, b *Host) *Host {
	if b.inFlight.Load() < a.inFlight.Load() {
		return b
	}
	return a
}

// Healthy returns how many instances of k are not ejected right now. The
// router uses it to decide whether a new version can take traffic (blue/green),
// so an instance that refuses connections does not count.
func (p *Pool) Healthy(k Key) int { return p.HealthyAt(k, time.Now()) }

// HealthyAt is Healthy at a given time (for tests and callers holding now).
func (p *Pool) HealthyAt(k Key, now time.Time) int {
	s := p.table.Load().byKey[k]
	if s == nil {
		return 0
	}
	t := now.UnixNano()
	n := 0
	for _, h := range s.hosts {
		if h.available(t) {
			n++
		}
	}
	return n
}

// Keys returns every key with at least one instance, sorted by ufop, version,
// region. The slice is the caller's.
func (p *Pool) Keys() []Key { return slices.Clone(p.table.Load().keys) }

// Hosts returns the hosts of k, sorted by instance ID, ejected ones
// included. The slice is the caller's; the hosts are shared.
func (p *Pool) Hosts(k Key) []*Host {
	s := p.table.Load().byKey[k]
	if s == nil {
		return nil
	}
	return slices.Clone(s.hosts)
}

// Snapshot returns the number of instances per key, ejected ones included
// (for metrics and status pages).
func (p *Pool) Snapshot() map[Key]int {
	t := p.table.Load()
	m := make(map[Key]int, len(t.byKey))
	for k, s := range t.byKey {
		m[k] = len(s.hosts)
	}
	return m
}

// KeyStats is one key's figures at a moment, for metrics.
type KeyStats struct {
	Key       Key
	Instances int   // all instances discovery reports
	Ejected   int   // of which ejected now
	InFlight  int64 // requests in flight over all instances
}

// Stats returns every key's figures at now, sorted like Keys.
func (p *Pool) Stats(now time.Time) []KeyStats {
	t := p.table.Load()
	ns := now.UnixNano()
	out := make([]KeyStats, 0, len(t.keys))
	for _, k := range t.keys {
		st := KeyStats{Key: k}
		for _, h := range t.byKey[k].hosts {
			st.Instances++
			if !h.available(ns) {
				st.Ejected++
			}
			st.InFlight += h.inFlight.Load()
		}
		out = append(out, st)
	}
	return out
}
