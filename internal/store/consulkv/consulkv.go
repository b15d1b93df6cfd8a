// Package consulkv is the production metadata store: store.Store on Consul
// KV, shared by every admin, router and autoscaler of a cluster.
//
// Keys live under a root prefix ("dora/" by default): store key "ufops/x"
// is Consul key "dora/ufops/x". A key's Version is its ModifyIndex, which
// Consul raises on every write, so versions strictly increase per key and
// CAS maps directly onto Consul's check-and-set.
//
// Every write (Put, CAS, Delete, Txn) goes through /v1/txn, because only the
// transaction endpoint returns the ModifyIndex a write produced (KV().Put
// and KV().CAS answer just true/false, and a Get afterwards would race).
// Consul refuses transactions of more than 64 operations in older releases
// (128 since 1.15); this package refuses more than MaxTxnOps Consul
// operations up front with ErrTooManyOps. Each store op is one Consul op,
// except a delete at a version, which is two (check-index, then
// delete-cas: Consul's delete-cas alone succeeds on a missing key).
//
// Values: Consul's limits.kv_max_value_size defaults to 512 KiB; raise it
// (and limits.txn_max_req_len) on the agents when larger values are stored.
// The contract suite stores 1 MiB values; internal/agenttest configures 4 MiB.
//
// Watch uses blocking queries on the prefix: the listing is sent whenever
// the X-Consul-Index moves and the content differs from the last listing
// sent. When the index goes backwards (a Consul cluster restored or, in
// tests, a dev agent restarted) it restarts from index 0, and after any
// failed query the next one does not block, since a restarted agent's
// index may lie below ours and a blocking query would then sit out its
// whole wait time. Errors are
// retried with exponential backoff and full jitter, capped at
// Config.MaxBackoff; cancelling the context aborts the blocking request.
// A blocking query not answered within its wait time, Consul's jitter
// (1/16 of it) and Config.RequestTimeout counts as failed: a hung agent or
// a connection the network dropped silently cannot stall the watch.
package consulkv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/consul/api"

	"github.com/doraproject/dora/internal/store"
)

// Limits and defaults.
const (
	// MaxTxnOps is the largest transaction accepted.
	MaxTxnOps = 64
	// MaxKeyBytes is the longest key (without the root prefix) accepted.
	MaxKeyBytes = store.MaxKeyBytes
	// DefaultPrefix is the root prefix used when Config.Prefix is empty.
	DefaultPrefix = "dora/"
	// DefaultRequestTimeout bounds each non-blocking request.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultWatchWait is how long one blocking query may wait.
	DefaultWatchWait = 5 * time.Minute
	// DefaultMinBackoff and DefaultMaxBackoff bound the watch's retry delay.
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 10 * time.Second
)

// Sentinel errors.
var (
	// ErrInvalid is wrapped by errors about a bad key, prefix or op.
	ErrInvalid = store.ErrInvalid
	// ErrTooManyOps: a transaction has more than MaxTxnOps operations.
	ErrTooManyOps = errors.New("consulkv: too many operations in one transaction")
)

var _ store.Store = (*Store)(nil)

// Config configures a Store. Only Address is required.
type Config struct {
	// Address of the Consul HTTP API, "127.0.0.1:8500" or a URL
	// ("http://host:8500", "https://…").
	Address string
	// Prefix is the root under which every key lives; a trailing slash is
	// added when missing. Default DefaultPrefix.
	Prefix string
	// Token is the ACL token (empty: none, or CONSUL_HTTP_TOKEN).
	Token string
	// Datacenter to use (empty: the agent's).
	Datacenter string
	// RequestTimeout bounds each non-blocking request when the caller's
	// context has no earlier deadline, and a watch's blocking query past
	// its wait time (and Consul's jitter). Default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// WatchWait is the wait time of each blocking query. Default
	// DefaultWatchWait.
	WatchWait time.Duration
	// MinBackoff and MaxBackoff bound the delay between failed watch
	// queries (exponential, full jitter). Defaults DefaultMinBackoff and
	// DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
}

// Store is a store.Store on Consul KV. Safe for concurrent use.
type Store struct {
	kv     *api.KV
	txn    *api.Txn
	root   string
	cfg    Config
	ctx    context.Context // cancelled by Close: ends every watch
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// Open connects to the Consul agent at addr and keeps keys under prefix.
func Open(addr, prefix string) (*Store, error) {
	return New(Config{Address: addr, Prefix: prefix})
}

// New returns a Store for cfg. It does not contact Consul: the agent may
// come up later.
func New(cfg Config) (*Store, error) {
	if cfg.Address == "" {
		return nil, fmt.Errorf("consulkv: %w: empty address", ErrInvalid)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if strings.HasPrefix(cfg.Prefix, "/") || !utf8.ValidString(cfg.Prefix) {
		return nil, fmt.Errorf("consulkv: %w: prefix %q", ErrInvalid, cfg.Prefix)
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.WatchWait <= 0 {
		cfg.WatchWait = DefaultWatchWait
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	ac := api.DefaultConfig()
	ac.Address = cfg.Address
	if strings.HasPrefix(cfg.Address, "http://") || strings.HasPrefix(cfg.Address, "https://") {
		scheme, rest, _ := strings.Cut(cfg.Address, "://")
		ac.Scheme, ac.Address = scheme, strings.TrimSuffix(rest, "/")
	}
	if cfg.Token != "" {
		ac.Token = cfg.Token
	}
	if cfg.Datacenter != "" {
		ac.Datacenter = cfg.Datacenter
	}
	hc, err := api.NewHttpClient(ac.Transport, ac.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("consulkv: http client for %s: %w", cfg.Address, err)
	}
	hc.Transport = capErrorBodies{next: hc.Transport}
	ac.HttpClient = hc
	client, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("consulkv: client for %s: %w", cfg.Address, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Store{kv: client.KV(), txn: client.Txn(), root: cfg.Prefix, cfg: cfg, ctx: ctx, cancel: cancel}, nil
}

// capErrorBodies cuts the body of an answer that is not a success to
// MaxErrorBodyBytes: the API client reads such a body whole into its error,
// so a proxy's error page or a broken agent could fill the memory (and
// every log line that error reaches).
type capErrorBodies struct{ next http.RoundTripper }

// MaxErrorBodyBytes is how much of a failed answer's body is read; a
// transaction's list of failed operations (409) fits many times over.
const MaxErrorBodyBytes = 64 << 10

// RoundTrip implements http.RoundTripper.
func (c capErrorBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if err != nil || resp.StatusCode/100 == 2 {
		return resp, err
	}
	resp.Body = cappedBody{Reader: io.LimitReader(resp.Body, MaxErrorBodyBytes), Closer: resp.Body}
	return resp, nil
}

type cappedBody struct {
	io.Reader
	io.Closer
}

// Prefix returns the root prefix keys live under (with its trailing slash).
func (s *Store) Prefix() string { return s.root }

// begin checks the closed flag and the context and applies the request
// timeout.
func (s *Store) begin(ctx context.Context) (context.Context, context.CancelFunc, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, nil, store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	return ctx, cancel, nil
}

// ctxErr prefers the context's error (so callers can errors.Is it) over
// the HTTP client's wrapping of it.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w: %w", cerr, err)
	}
	return err
}

func (s *Store) fromPair(p *api.KVPair) store.KV {
	v := p.Value
	if v == nil {
		v = []byte{}
	}
	return store.KV{Key: strings.TrimPrefix(p.Key, s.root), Value: v, Version: p.ModifyIndex}
}

// Get returns the key or store.ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	if err := store.ValidateKey(key); err != nil {
		return store.KV{}, fmt.Errorf("get: %w", err)
	}
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return store.KV{}, fmt.Errorf("get %s: %w", key, err)
	}
	defer cancel()
	if cleanable(key) {
		return s.getExact(ctx, key)
	}
	p, _, err := s.kv.Get(s.root+key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return store.KV{}, fmt.Errorf("get %s: %w", key, ctxErr(ctx, err))
	}
	if p == nil {
		return store.KV{}, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	return s.fromPair(p), nil
}

// List returns every key under prefix, sorted by key.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, error) {
	if err := store.ValidatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	defer cancel()
	if cleanable(prefix) {
		pairs, err := s.readTree(ctx, prefix)
		if err != nil {
			return nil, fmt.Errorf("list %q: %w", prefix, err)
		}
		return s.fromPairs(pairs), nil
	}
	pairs, _, err := s.kv.List(s.root+prefix, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, ctxErr(ctx, err))
	}
	return s.fromPairs(pairs), nil
}

// cleanable reports whether key has a segment Consul's HTTP server would
// clean out of a /v1/kv/<key> path (empty, "." or ".."), answering for
// another key: "objmeta/b/x/../y" would read "objmeta/b/y". Such keys are
// read through a transaction, whose keys travel in the JSON body as they are.
func cleanable(key string) bool {
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case ".", "..":
			return true
		}
	}
	return strings.Contains(key, "//")
}

// getExact reads key through a transaction (see cleanable).
func (s *Store) getExact(ctx context.Context, key string) (store.KV, error) {
	pairs, err := s.readTree(ctx, key)
	if err != nil {
		return store.KV{}, fmt.Errorf("get %s: %w", key, err)
	}
	for _, p := range pairs {
		if p.Key == s.root+key {
			return s.fromPair(p), nil
		}
	}
	return store.KV{}, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
}

// readTree returns every pair under prefix, read consistently in a
// transaction (see cleanable); a get-tree of nothing is no error.
func (s *Store) readTree(ctx context.Context, prefix string) (api.KVPairs, error) {
	ok, resp, _, err := s.txn.Txn(api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVGetTree, Key: s.root + prefix}}},
		(&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if !ok {
		var msgs []string
		if resp != nil {
			for _, e := range resp.Errors {
				msgs = append(msgs, e.What)
			}
		}
		return nil, fmt.Errorf("consul refused the read: %s", strings.Join(msgs, "; "))
	}
	pairs := make(api.KVPairs, 0, len(resp.Results))
	for _, r := range resp.Results {
		if r.KV != nil {
			pairs = append(pairs, r.KV)
		}
	}
	return pairs, nil
}

func (s *Store) fromPairs(pairs api.KVPairs) []store.KV {
	kvs := make([]store.KV, 0, len(pairs))
	for _, p := range pairs {
		if p.Key == s.root { // the root "folder" itself is no store key
			continue
		}
		kvs = append(kvs, s.fromPair(p))
	}
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].Key < kvs[j].Key })
	return kvs
}

// Put writes the key unconditionally and returns its new version.
func (s *Store) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if err := store.ValidateKey(key); err != nil {
		return 0, fmt.Errorf("put: %w", err)
	}
	v, err := s.write(ctx, &api.KVTxnOp{Verb: api.KVSet, Key: s.root + key, Value: value})
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", key, err)
	}
	return v, nil
}

// CAS writes the key only if its ModifyIndex is version (0: the key must
// not exist); otherwise store.ErrConflict.
func (s *Store) CAS(ctx context.Context, key string, value []byte, version uint64) (uint64, error) {
	if err := store.ValidateKey(key); err != nil {
		return 0, fmt.Errorf("cas: %w", err)
	}
	v, err := s.write(ctx, &api.KVTxnOp{Verb: api.KVCAS, Key: s.root + key, Value: value, Index: version})
	if err != nil {
		return 0, fmt.Errorf("cas %s at version %d: %w", key, version, err)
	}
	return v, nil
}

// write runs one set or cas op and returns the key's new ModifyIndex.
func (s *Store) write(ctx context.Context, op *api.KVTxnOp) (uint64, error) {
	results, err := s.runTxn(ctx, []*api.KVTxnOp{op})
	if err != nil {
		return 0, err
	}
	for _, r := range results {
		if r.KV != nil && r.KV.Key == op.Key {
			return r.KV.ModifyIndex, nil
		}
	}
	return 0, fmt.Errorf("consul returned no result for %s", op.Key)
}

// Delete removes the key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := store.ValidateKey(key); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if _, err := s.runTxn(ctx, []*api.KVTxnOp{{Verb: api.KVDelete, Key: s.root + key}}); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// Txn applies every op or none. A failed condition returns
// store.ErrConflict; more than MaxTxnOps ops return ErrTooManyOps.
func (s *Store) Txn(ctx context.Context, ops []store.Op) error {
	if len(ops) > MaxTxnOps {
		return fmt.Errorf("txn of %d ops: %w (max %d)", len(ops), ErrTooManyOps, MaxTxnOps)
	}
	kops := make([]*api.KVTxnOp, 0, len(ops))
	for i, op := range ops {
		k, err := s.toTxnOps(op)
		if err != nil {
			return fmt.Errorf("txn op %d: %w", i, err)
		}
		kops = append(kops, k...)
	}
	if len(kops) > MaxTxnOps {
		return fmt.Errorf("txn of %d ops (%d in Consul): %w (max %d; a delete at a version counts twice)",
			len(ops), len(kops), ErrTooManyOps, MaxTxnOps)
	}
	if len(kops) == 0 {
		_, cancel, err := s.begin(ctx)
		if err != nil {
			return fmt.Errorf("txn: %w", err)
		}
		cancel()
		return nil
	}
	if _, err := s.runTxn(ctx, kops); err != nil {
		return fmt.Errorf("txn of %d ops: %w", len(ops), err)
	}
	return nil
}

// toTxnOps translates one store op into Consul txn ops.
func (s *Store) toTxnOps(op store.Op) ([]*api.KVTxnOp, error) {
	if err := store.ValidateKey(op.Key); err != nil {
		return nil, err
	}
	key := s.root + op.Key
	one := func(o *api.KVTxnOp) ([]*api.KVTxnOp, error) { return []*api.KVTxnOp{o}, nil }
	switch op.Kind {
	case store.OpPut:
		switch {
		case op.CreateOnly && op.Version != 0:
			return nil, fmt.Errorf("%w: put of %s is create-only and also at version %d", ErrInvalid, op.Key, op.Version)
		case op.CreateOnly:
			return one(&api.KVTxnOp{Verb: api.KVCAS, Key: key, Value: op.Value, Index: 0})
		case op.Version > 0:
			return one(&api.KVTxnOp{Verb: api.KVCAS, Key: key, Value: op.Value, Index: op.Version})
		default:
			return one(&api.KVTxnOp{Verb: api.KVSet, Key: key, Value: op.Value})
		}
	case store.OpDelete:
		if op.Version > 0 {
			// Consul's delete-cas succeeds on a missing key; the store
			// contract wants a conflict, so check the index first.
			return []*api.KVTxnOp{
				{Verb: api.KVCheckIndex, Key: key, Index: op.Version},
				{Verb: api.KVDeleteCAS, Key: key, Index: op.Version},
			}, nil
		}
		return one(&api.KVTxnOp{Verb: api.KVDelete, Key: key})
	case store.OpCheck:
		if op.Version == 0 {
			return one(&api.KVTxnOp{Verb: api.KVCheckNotExists, Key: key})
		}
		return one(&api.KVTxnOp{Verb: api.KVCheckIndex, Key: key, Index: op.Version})
	}
	return nil, fmt.Errorf("%w: unknown op kind %d", ErrInvalid, op.Kind)
}

// conditional reports whether a failure of this verb means "the key is not
// at the expected version".
func conditional(v api.KVOp) bool {
	switch v {
	case api.KVCAS, api.KVDeleteCAS, api.KVCheckIndex, api.KVCheckNotExists:
		return true
	}
	return false
}

// runTxn sends the ops as one Consul transaction. A rollback caused by a
// conditional op is store.ErrConflict.
func (s *Store) runTxn(ctx context.Context, kops []*api.KVTxnOp) (api.TxnResults, error) {
	ctx, cancel, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	tops := make(api.TxnOps, 0, len(kops))
	for _, op := range kops {
		tops = append(tops, &api.TxnOp{KV: op})
	}
	ok, resp, _, err := s.txn.Txn(tops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if ok {
		return resp.Results, nil
	}
	if resp == nil || len(resp.Errors) == 0 {
		return nil, errors.New("consul rolled the transaction back without saying why")
	}
	var msgs []string
	conflict := true
	for _, e := range resp.Errors {
		msgs = append(msgs, fmt.Sprintf("op %d: %s", e.OpIndex, e.What))
		if e.OpIndex < 0 || e.OpIndex >= len(kops) || !conditional(kops[e.OpIndex].Verb) {
			conflict = false
		}
	}
	if conflict {
		return nil, fmt.Errorf("%w: %s", store.ErrConflict, strings.Join(msgs, "; "))
	}
	return nil, fmt.Errorf("consul rolled the transaction back: %s", strings.Join(msgs, "; "))
}

// Watch sends the listing under prefix at once, then again whenever it
// changes, until ctx ends or the store is closed (then the channel is
// closed). While Consul is unreachable nothing is sent; the watch keeps
// retrying and sends the current listing once Consul answers again. A
// prefix with an empty, "." or ".." segment is refused (store.ErrInvalid):
// blocking queries go by URL path, which Consul cleans (see cleanable).
func (s *Store) Watch(ctx context.Context, prefix string) (<-chan []store.KV, error) {
	if err := store.ValidatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	if cleanable(prefix) {
		return nil, fmt.Errorf("watch %q: %w: an empty, \".\" or \"..\" segment cannot be watched on Consul", prefix, store.ErrInvalid)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("watch %q: %w", prefix, store.ErrClosed)
	}
	s.wg.Add(1)
	s.mu.Unlock()

	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	out := make(chan []store.KV, 1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		defer stop()
		defer cancel()
		s.watch(wctx, prefix, out)
	}()
	return out, nil
}

func (s *Store) watch(ctx context.Context, prefix string, out chan []store.KV) {
	var (
		index    uint64
		last     []store.KV
		sent     bool
		failures int
	)
	for ctx.Err() == nil {
		// Consul answers within the wait time plus up to 1/16 of it;
		// past that (and a request's margin) the connection is dead or
		// the agent hung, and only a new request can get an answer.
		qctx, qcancel := context.WithTimeout(ctx, s.cfg.WatchWait+s.cfg.WatchWait/16+s.cfg.RequestTimeout)
		opts := (&api.QueryOptions{WaitIndex: index, WaitTime: s.cfg.WatchWait}).WithContext(qctx)
		pairs, meta, err := s.kv.List(s.root+prefix, opts)
		qcancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			// The agent may have restarted or another server may
			// answer next: its index need not be comparable to ours,
			// and blocking on a stale index could wait the whole
			// WatchWait. Read without blocking first.
			index = 0
			if !sleepCtx(ctx, backoff(s.cfg.MinBackoff, s.cfg.MaxBackoff, failures)) {
				return
			}
			continue
		}
		failures = 0
		switch {
		case meta.LastIndex < index:
			// Consul's index went backwards (restore, restart): start
			// over; the listing just read is current, so use it.
			index = 0
		case meta.LastIndex == 0:
			index = 1 // never block on index 0 forever-returning
		default:
			index = meta.LastIndex
		}
		kvs := s.fromPairs(pairs)
		if sent && equal(kvs, last) {
			continue
		}
		last, sent = kvs, true
		store.OfferLatest(out, kvs)
	}
}

// backoff returns the delay before retry number n (from 1): exponential
// from min, capped at max, with full jitter in [d/2, d).
func backoff(minD, maxD time.Duration, n int) time.Duration {
	d := minD
	for i := 1; i < n && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	half := d / 2
	return half + rand.N(d-half+1)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func equal(a, b []store.KV) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || a[i].Version != b[i].Version || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

// Close ends every watch. Closing twice is harmless.
func (s *Store) Close() error {
	if !store.MarkClosed(&s.mu, &s.closed) {
		return nil
	}
	s.cancel()
	s.wg.Wait()
	return nil
}
