// Package meta is the router's in-memory view of the metadata it needs on
// every request: accounts, access keys, buckets, domains, ufops and
// releases. A Cache watches the store's prefixes, rebuilds an immutable
// Snapshot off the request path and swaps it atomically, so a request never
// waits on a store round-trip (fabio's routing table works the same way).
package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
)

// Sentinel errors callers branch on.
var (
	// ErrUnknownAK: the access key is not registered.
	ErrUnknownAK = errors.New("unknown access key")
	// ErrDisabled: the account owning the access key is disabled.
	ErrDisabled = errors.New("account disabled")
	// ErrNotReady: the cache has not received every prefix's first listing.
	ErrNotReady = errors.New("metadata not loaded yet")
)

// Snapshot is an immutable view of the metadata at one moment. Its maps
// are never written after the snapshot is published; share it freely.
type Snapshot struct {
	accounts map[string]dora.Account            // id → account
	aks      map[string]string                  // ak → account id
	buckets  map[string]dora.Bucket             // name → bucket
	domains  map[string]string                  // host → bucket name
	ufops    map[string]dora.Ufop               // name → ufop
	releases map[string]map[string]dora.Release // ufop → version → release
	deps     map[deploymentKey]deploymentSum    // a version's deployments in a region, summed up
}

// Data is the plain content of a snapshot, used to build one directly
// (tests, embedded wiring) without a store.
type Data struct {
	Accounts []dora.Account
	Buckets  []dora.Bucket
	// Domains maps extra host names to bucket names, beside Bucket.Domains.
	Domains  map[string]string
	Ufops    []dora.Ufop
	Releases []dora.Release
	// Deployments let the router answer 503 at once, rather than hold
	// requests, for a version whose every deployment in a region FAILED,
	// that has none there, or whose owner stopped it (Deployments).
	Deployments []dora.Deployment
}

// NewSnapshot builds a snapshot from plain data. Account access keys and
// bucket domains are indexed as the store layout would index them.
func NewSnapshot(d Data) *Snapshot {
	s := &Snapshot{
		accounts: map[string]dora.Account{},
		aks:      map[string]string{},
		buckets:  map[string]dora.Bucket{},
		domains:  map[string]string{},
		ufops:    map[string]dora.Ufop{},
		releases: map[string]map[string]dora.Release{},
		deps:     sumDeployments(d.Deployments),
	}
	for _, a := range d.Accounts {
		s.accounts[a.ID] = a
		if a.AccessKey != "" {
			s.aks[a.AccessKey] = a.ID
		}
	}
	for _, b := range d.Buckets {
		s.buckets[b.Name] = b
		for _, h := range b.Domains {
			s.domains[strings.ToLower(h)] = b.Name
		}
	}
	for h, b := range d.Domains {
		s.domains[strings.ToLower(h)] = b
	}
	for _, u := range d.Ufops {
		s.ufops[u.Name] = u
	}
	for _, r := range d.Releases {
		m := s.releases[r.Ufop]
		if m == nil {
			m = map[string]dora.Release{}
			s.releases[r.Ufop] = m
		}
		m[r.Version] = r
	}
	return s
}

// Account returns the account with the given id.
func (s *Snapshot) Account(id string) (dora.Account, bool) {
	a, ok := s.accounts[id]
	return a, ok
}

// AccountByAK returns the enabled account owning the access key, or an
// error wrapping ErrUnknownAK or ErrDisabled.
func (s *Snapshot) AccountByAK(ak string) (dora.Account, error) {
	id, ok := s.aks[ak]
	if !ok {
		return dora.Account{}, fmt.Errorf("%q: %w", ak, ErrUnknownAK)
	}
	a, ok := s.accounts[id]
	if !ok {
		return dora.Account{}, fmt.Errorf("%q: %w", ak, ErrUnknownAK)
	}
	if a.Disabled {
		return dora.Account{}, fmt.Errorf("%q: %w", ak, ErrDisabled)
	}
	return a, nil
}

// SecretKey returns the secret key of an enabled account's access key; it
// has the shape of auth.KeyLookup.
func (s *Snapshot) SecretKey(_ context.Context, ak string) (string, error) {
	a, err := s.AccountByAK(ak)
	if err != nil {
		return "", err
	}
	return a.SecretKey, nil
}

// Bucket returns the bucket with the given name.
func (s *Snapshot) Bucket(name string) (dora.Bucket, bool) {
	b, ok := s.buckets[name]
	return b, ok
}

// BucketForHost resolves a request's Host header to a bucket: an exact
// domain bound to a bucket first, else "<bucket>.<suffix>". The port and a
// trailing dot are ignored and the match is case-insensitive.
func (s *Snapshot) BucketForHost(host, suffix string) (dora.Bucket, bool) {
	h := HostName(host)
	if h == "" {
		return dora.Bucket{}, false
	}
	if name, ok := s.domains[h]; ok {
		b, ok := s.buckets[name]
		return b, ok
	}
	suffix = strings.ToLower(strings.TrimSuffix(suffix, "."))
	if suffix == "" {
		return dora.Bucket{}, false
	}
	name, ok := strings.CutSuffix(h, "."+suffix)
	if !ok || name == "" || strings.Contains(name, ".") {
		return dora.Bucket{}, false
	}
	b, ok := s.buckets[name]
	return b, ok
}

// DomainBucket returns the bucket name a domain is bound to (exact
// binding only, port and trailing dot ignored), so that a caller can tell
// a binding it refuses to honour (the router's own host) from no binding.
func (s *Snapshot) DomainBucket(host string) (string, bool) {
	name, ok := s.domains[HostName(host)]
	return name, ok
}

// HostName lower-cases a Host header value and strips its port and a
// trailing dot ("Photos.localhost.:8080" → "photos.localhost"); IPv6
// literals keep their brackets off ("[::1]:80" → "::1").
func HostName(host string) string {
	h := strings.ToLower(strings.TrimSpace(host))
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return h[1:i]
		}
		return ""
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".")
}

// Ufop returns the registered ufop with the given name.
func (s *Snapshot) Ufop(name string) (dora.Ufop, bool) {
	u, ok := s.ufops[name]
	return u, ok
}

// deploymentKey names the deployments of one version of a ufop in a region.
type deploymentKey struct{ ufop, version, region string }

// DeploymentState sums up the deployments of one version of a ufop in a
// region: whether waiting for an instance of it can bring one.
type DeploymentState int

// The states of a version's deployments in a region, from the one that
// says least to the one that says most: a live deployment outweighs a
// stopped one, which outweighs a failed one.
const (
	// NoDeployment: none, or only REPLACED ones (a blue/green switch
	// left them): nothing starts an instance but the owner deploying it.
	NoDeployment DeploymentState = iota
	// DeploymentsFailed: every one (REPLACED ones aside) FAILED.
	DeploymentsFailed
	// DeploymentsStopped: none is PENDING or RUNNING and one at least
	// was STOPPED (its owner stopped its instances; one the autoscaler
	// scaled to zero stays RUNNING).
	DeploymentsStopped
	// DeploymentsLive: one at least is PENDING or RUNNING (scaled to
	// zero included), or in a status this package does not know: an
	// instance may come.
	DeploymentsLive
)

// deploymentSum is the state of one key's deployments, with the message of
// the first deployment that made it so (FAILED, STOPPED).
type deploymentSum struct {
	state DeploymentState
	msg   string
}

// sumDeployments sums up deps per version and region.
func sumDeployments(deps []dora.Deployment) map[deploymentKey]deploymentSum {
	out := map[deploymentKey]deploymentSum{}
	for _, dep := range deps {
		var st DeploymentState
		switch dep.Status {
		case dora.DeployReplaced:
			continue
		case dora.DeployFailed:
			st = DeploymentsFailed
		case dora.DeployStopped:
			st = DeploymentsStopped
		default:
			st = DeploymentsLive
		}
		k := deploymentKey{dep.Ufop, dep.Version, dep.Region}
		if cur, seen := out[k]; !seen || st > cur.state {
			out[k] = deploymentSum{st, dep.Message}
		}
	}
	return out
}

// Deployments sums up the deployments of ufop's version in region, with
// the message of the first one that made the state (a FAILED one's
// reason, a STOPPED one's).
func (s *Snapshot) Deployments(ufop, version, region string) (DeploymentState, string) {
	d := s.deps[deploymentKey{ufop, version, region}]
	return d.state, d.msg
}

// DeploymentFailed reports whether the version of ufop has deployments in
// region and every one of them FAILED, with the first one's message.
func (s *Snapshot) DeploymentFailed(ufop, version, region string) (string, bool) {
	st, msg := s.Deployments(ufop, version, region)
	return msg, st == DeploymentsFailed
}

// Release returns one release of a ufop.
func (s *Snapshot) Release(ufop, version string) (dora.Release, bool) {
	r, ok := s.releases[ufop][version]
	return r, ok
}

// prefixes the cache watches, in the order of the parts array.
var prefixes = [...]string{
	store.PrefixAccounts, store.PrefixAccessKeys, store.PrefixBuckets,
	store.PrefixDomains, store.PrefixUfops, store.PrefixReleases,
	store.PrefixDeployments,
}

// Cache keeps a Snapshot fresh by watching the store.
type Cache struct {
	st     store.Store
	log    *slog.Logger
	snap   atomic.Pointer[Snapshot]
	ready  chan struct{}
	mu     sync.Mutex // guards parts and seen (the watch goroutines)
	parts  [len(prefixes)][]store.KV
	seen   [len(prefixes)]bool
	nseen  int
	errs   atomic.Int64
	loaded atomic.Int64 // unix nanos of the last rebuild
	// changed is closed when the next snapshot is published, and
	// replaced (Changed).
	changed atomic.Pointer[chan struct{}]

	readMu sync.Mutex
	reads  map[string]*readQueue // ufop → its reads of the store (ReadDeployments)
}

// NewCache returns a cache over st; call Run to start watching. Until the
// first listing of every prefix arrives, Snapshot returns an empty snapshot
// and Ready is open.
func NewCache(st store.Store, log *slog.Logger) *Cache {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cache{st: st, log: log, ready: make(chan struct{})}
	c.snap.Store(NewSnapshot(Data{}))
	ch := make(chan struct{})
	c.changed.Store(&ch)
	return c
}

// Snapshot returns the current snapshot; never nil.
func (c *Cache) Snapshot() *Snapshot { return c.snap.Load() }

// Changed returns a channel closed when the next snapshot is published:
// a wait that depends on the metadata (a request held for a deployment
// that may fail) takes it before reading the snapshot, so that no change
// is missed (it may wake for a snapshot it had already read).
func (c *Cache) Changed() <-chan struct{} { return *c.changed.Load() }

// Ready is closed once every watched prefix has been loaded.
func (c *Cache) Ready() <-chan struct{} { return c.ready }

// DecodeErrors counts values that could not be decoded (they are skipped).
func (c *Cache) DecodeErrors() int64 { return c.errs.Load() }

// Run watches every prefix until ctx ends. A watch that fails or closes
// early is re-established after a growing pause (fabio's pattern), keeping
// the last good snapshot meanwhile.
func (c *Cache) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i, p := range prefixes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.watch(ctx, i, p)
		}()
	}
	wg.Wait()
	return ctx.Err()
}

func (c *Cache) watch(ctx context.Context, i int, prefix string) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		ch, err := c.st.Watch(ctx, prefix)
		if err != nil {
			c.log.Warn("meta: watch failed", "prefix", prefix, "err", err)
		} else {
			for kvs := range ch {
				backoff = 100 * time.Millisecond
				c.update(i, kvs)
			}
		}
		if ctx.Err() != nil {
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// update records a prefix's new listing and publishes a rebuilt snapshot.
func (c *Cache) update(i int, kvs []store.KV) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.parts[i] = kvs
	if !c.seen[i] {
		c.seen[i] = true
		c.nseen++
	}
	c.snap.Store(c.build())
	next := make(chan struct{})
	close(*c.changed.Swap(&next)) // after the Store: a waiter woken reads the new snapshot
	c.loaded.Store(time.Now().UnixNano())
	if c.nseen == len(prefixes) {
		select {
		case <-c.ready:
		default:
			close(c.ready)
		}
	}
}

// readTimeout bounds one read of a ufop's deployments (ReadDeployments).
const readTimeout = 5 * time.Second

// deploymentRead is one read of a ufop's deployments from the store, shared
// by the callers that joined it: done is closed once deps and err are set.
type deploymentRead struct {
	done chan struct{}
	deps []dora.Deployment
	err  error
}

// readQueue is a ufop's read in progress and the one that starts after it,
// which the callers arriving meanwhile join.
type readQueue struct{ running, next *deploymentRead }

// ReadDeployments is Snapshot().Deployments as the store says now rather
// than as the watch last said: a read of ufop's deployments that starts
// after the call (a deployment written before it is seen, even if its
// watch event has not arrived yet). Calls are coalesced per ufop: one
// read at a time, and the calls arriving while it runs share the next
// one, so that a flood of requests makes no flood of reads. ctx bounds the
// wait, not the shared read.
func (c *Cache) ReadDeployments(ctx context.Context, ufop, version, region string) (DeploymentState, string, error) {
	rd := c.joinRead(ufop)
	select {
	case <-rd.done:
	case <-ctx.Done():
		return NoDeployment, "", ctx.Err()
	}
	if rd.err != nil {
		return NoDeployment, "", rd.err
	}
	d := sumDeployments(rd.deps)[deploymentKey{ufop, version, region}]
	return d.state, d.msg, nil
}

// joinRead returns the read of ufop's deployments that starts after the
// call: a new one when none runs, else the one queued after it.
func (c *Cache) joinRead(ufop string) *deploymentRead {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if c.reads == nil {
		c.reads = map[string]*readQueue{}
	}
	q := c.reads[ufop]
	if q == nil {
		rd := &deploymentRead{done: make(chan struct{})}
		c.reads[ufop] = &readQueue{running: rd}
		go c.runReads(ufop, rd)
		return rd
	}
	if q.next == nil {
		q.next = &deploymentRead{done: make(chan struct{})}
	}
	return q.next
}

// runReads runs rd, then the reads queued after it, one at a time.
func (c *Cache) runReads(ufop string, rd *deploymentRead) {
	for rd != nil {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		kvs, err := c.st.List(ctx, store.DeploymentsOf(ufop))
		cancel()
		rd.err = err
		for _, kv := range kvs {
			var d dora.Deployment
			if json.Unmarshal(kv.Value, &d) == nil {
				if d.Ufop == "" {
					d.Ufop = ufop
				}
				rd.deps = append(rd.deps, d)
			}
		}
		close(rd.done)
		c.readMu.Lock()
		q := c.reads[ufop]
		rd, q.running, q.next = q.next, q.next, nil
		if rd == nil {
			delete(c.reads, ufop)
		}
		c.readMu.Unlock()
	}
}

// decodeAll decodes each value of kvs as a T, counting and skipping those
// that do not decode; fill, when not nil, completes a record from its key
// (older records left out what the key says).
func decodeAll[T any](c *Cache, kvs []store.KV, fill func(*T, string)) []T {
	var out []T
	for _, kv := range kvs {
		var v T
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			c.errs.Add(1)
			c.log.Warn("meta: skipping undecodable value", "key", kv.Key, "err", err)
			continue
		}
		if fill != nil {
			fill(&v, kv.Key)
		}
		out = append(out, v)
	}
	return out
}

// build decodes every part into a new snapshot. Metadata is small (the
// control plane's objects, not user objects), so a full rebuild per change
// is cheap and keeps the snapshot trivially consistent.
func (c *Cache) build() *Snapshot {
	var d Data
	d.Domains = map[string]string{}
	aks := map[string]string{}
	for _, kv := range c.parts[1] {
		aks[store.Name(store.PrefixAccessKeys, kv.Key)] = string(kv.Value)
	}
	d.Accounts = decodeAll(c, c.parts[0], func(a *dora.Account, key string) {
		if a.ID == "" {
			a.ID = store.Name(store.PrefixAccounts, key)
		}
	})
	d.Buckets = decodeAll(c, c.parts[2], func(b *dora.Bucket, key string) {
		if b.Name == "" {
			b.Name = store.Name(store.PrefixBuckets, key)
		}
	})
	for _, kv := range c.parts[3] {
		d.Domains[store.Name(store.PrefixDomains, kv.Key)] = string(kv.Value)
	}
	d.Ufops = decodeAll(c, c.parts[4], func(u *dora.Ufop, key string) {
		if u.Name == "" {
			u.Name = store.Name(store.PrefixUfops, key)
		}
	})
	d.Releases = decodeAll(c, c.parts[5], func(r *dora.Release, key string) {
		if r.Ufop == "" || r.Version == "" {
			r.Ufop, r.Version, _ = store.ParseReleaseKey(key)
		}
	})
	d.Deployments = decodeAll[dora.Deployment](c, c.parts[6], nil)
	s := NewSnapshot(d)
	// aks/<ak> is the authority for access keys (an account record may
	// still carry a rotated-out key), so only its entries count.
	clear(s.aks)
	for ak, id := range aks {
		s.aks[ak] = id
	}
	return s
}
