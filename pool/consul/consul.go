// Package consul is the production pool.Discovery: the instances whose Consul
// health checks pass, learned through blocking queries.
//
// # What it watches
//
// Every Consul service whose name starts with Config.ServicePrefix ("ufop-")
// is one ufop; the catalog is watched (blocking query on /v1/catalog/services)
// to learn them, and each gets its own blocking health watch
// (/v1/health/service/<name>?passing), so only instances whose service AND
// node checks all pass are reported.
//
// # How an instance is described (the contract with whoever registers it)
//
// Service Meta is read first, tags are the fallback:
//
//	Meta: {"ufop": "grepd", "version": "v1", "region": "z0"}
//	Tags: ["version=v1", "region=z0"]          (also "ufop=grepd")
//
// The ufop defaults to the service name without the prefix ("ufop-grepd" →
// "grepd"); the region defaults to Config.DefaultRegion ("z0"); an entry
// with no version, no address or no port is skipped. Addr is Service.Address
// (Node.Address when empty) joined with Service.Port; ID is Service.ID
// (qualified with the node name if two nodes use the same ID).
//
// # When Consul is unreachable
//
// The last known instances stay: an error never produces an empty set. Each
// query retries with exponential backoff and jitter (capped by
// Config.MaxBackoff, 10s by default) and restarts from index 0 once Consul
// answers again. An outage is logged once ("consul unreachable, serving last
// known instances"), its end once; the gauge dora_discovery_consul_up says
// 0/1 and dora_discovery_consul_errors_total counts failed queries. A
// blocking query not answered within its wait time, Consul's jitter (1/16
// of it) and 10s counts as failed: a hung agent or a connection the
// network dropped silently cannot freeze the set.
package consul

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/pool"
	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
)

var _ pool.Discovery = (*Discovery)(nil)

// Config configures a Discovery. Only Client is required.
type Config struct {
	Client *api.Client
	// ServicePrefix selects the services that are ufops (default "ufop-").
	ServicePrefix string
	Logger        *slog.Logger // default slog.Default()
	// Metrics, when set, receives dora_discovery_consul_up,
	// dora_discovery_consul_errors_total and dora_discovery_consul_instances.
	Metrics prometheus.Registerer
	// DefaultRegion is the region of an instance that names none (default
	// dora.DefaultRegion).
	DefaultRegion string
	// WaitTime is the wait time of one blocking query (default: Consul's,
	// 5 minutes); a query unanswered 1/16 of it and 10s later has failed.
	WaitTime time.Duration
	// MinBackoff and MaxBackoff bound the retry delay after an error
	// (defaults 250ms and 10s).
	MinBackoff, MaxBackoff time.Duration
	// MinInterval spaces the starts of two queries of one watch, so that a
	// burst of changes (or an index Consul keeps resetting) cannot spin
	// (default 50ms).
	MinInterval time.Duration
}

// Defaults for Config.
const (
	DefaultServicePrefix = "ufop-"
	DefaultMinBackoff    = 250 * time.Millisecond
	DefaultMaxBackoff    = 10 * time.Second
	DefaultMinInterval   = 50 * time.Millisecond
)

const (
	// consulDefaultWait is the wait time Consul applies to a blocking
	// query that names none.
	consulDefaultWait = 5 * time.Minute
	// queryMargin is how long past its wait time and Consul's jitter a
	// blocking query may take before it counts as failed.
	queryMargin = 10 * time.Second
)

// Discovery watches Consul health for ufop instances. One Discovery may
// serve several Watch calls; they share its metrics and outage state.
type Discovery struct {
	cfg       Config
	log       *slog.Logger
	upGauge   prometheus.Gauge
	errors    prometheus.Counter
	instances prometheus.Gauge

	mu    sync.Mutex
	state state // of the last query, shared by every watch
	// downAt is when the current outage was first seen: a query that
	// started before it and answers afterwards (a blocking query the dying
	// agent answered) is no evidence that Consul is back.
	downAt time.Time
}

// state is Consul's reachability as the last query saw it.
type state int

const (
	stateUnknown state = iota // no query has finished yet
	stateUp
	stateDown // an outage is in progress (logged once)
)

// New returns a Discovery; nothing happens until Watch.
func New(cfg Config) *Discovery {
	if cfg.ServicePrefix == "" {
		cfg.ServicePrefix = DefaultServicePrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DefaultRegion == "" {
		cfg.DefaultRegion = dora.DefaultRegion
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = DefaultMinInterval
	}
	d := &Discovery{
		cfg: cfg,
		log: cfg.Logger.With("component", "discovery", "backend", "consul"),
		upGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dora_discovery_consul_up",
			Help: "1 when the last Consul discovery query succeeded, 0 during an outage (last known instances are served).",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dora_discovery_consul_errors_total",
			Help: "Failed Consul discovery queries.",
		}),
		instances: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dora_discovery_consul_instances",
			Help: "Healthy ufop instances in the last set sent to the pool.",
		}),
	}
	if cfg.Metrics != nil {
		d.upGauge = register(cfg.Metrics, d.upGauge, d.log)
		d.errors = register(cfg.Metrics, d.errors, d.log)
		d.instances = register(cfg.Metrics, d.instances, d.log)
	}
	return d
}

// register registers c, or returns the collector already registered under
// its name (so that two Discoveries on one registry share the series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C, log *slog.Logger) C {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	if err != nil {
		log.Warn("registering metric", "err", err)
	}
	return c
}

// Up reports whether the last query succeeded (false before the first).
func (d *Discovery) Up() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state == stateUp
}

// failed records a failed query: counts it and logs the outage once.
func (d *Discovery) failed(what string, err error) {
	d.errors.Inc()
	d.upGauge.Set(0)
	d.mu.Lock()
	defer d.mu.Unlock() // logging under the lock keeps Up() and the log in step
	if d.state != stateDown {
		d.state = stateDown
		d.downAt = time.Now()
		d.log.Warn("consul unreachable, serving last known instances", "query", what, "err", err)
		return
	}
	d.log.Debug("consul query failed", "query", what, "err", err)
}

// succeeded records a successful query that started at started and logs
// the end of an outage. An answer to a query started before the outage was
// seen does not end it.
func (d *Discovery) succeeded(started time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state == stateDown {
		if started.Before(d.downAt) {
			return
		}
		d.log.Info("consul reachable again")
	}
	d.state = stateUp
	d.upGauge.Set(1)
}

// Watch sends the complete set of passing instances of every ufop service
// once the catalog and each service's health are known, then again on every
// change. It never sends because of an error. The channel closes when ctx
// ends (after every query of this watch has stopped).
func (d *Discovery) Watch(ctx context.Context) <-chan []pool.Instance {
	out := make(chan []pool.Instance)
	go d.run(ctx, out)
	return out
}

// serviceUpdate is one service watch's latest instances.
type serviceUpdate struct {
	w         *serviceWatch
	instances []pool.Instance
}

type serviceWatch struct {
	name   string
	cancel context.CancelFunc
}

// run merges the catalog watch and the per-service watches into full sets.
func (d *Discovery) run(parent context.Context, out chan<- []pool.Instance) {
	ctx, cancel := context.WithCancel(parent)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		close(out)
	}()

	namesCh := make(chan map[string]bool)
	updates := make(chan serviceUpdate)
	wg.Go(func() { d.watchCatalog(ctx, namesCh) })

	var (
		known    map[string]bool // nil until the catalog answered once
		watches  = map[string]*serviceWatch{}
		data     = map[string][]pool.Instance{}
		last     []pool.Instance
		computed bool // last holds a computed set
		pending  bool // last not yet taken by the reader
	)
	recompute := func() {
		if known == nil {
			return
		}
		if !computed {
			// The first set must be complete: wait for every service's
			// first answer. Later, a new service joins when it answers.
			for name := range known {
				if _, ok := data[name]; !ok {
					return
				}
			}
		}
		merged := merge(data)
		if computed && slices.Equal(merged, last) {
			return
		}
		last, computed, pending = merged, true, true
		d.instances.Set(float64(len(merged)))
	}

	for {
		var send chan<- []pool.Instance
		if pending {
			send = out
		}
		select {
		case <-ctx.Done():
			return
		case send <- last:
			pending = false
		case names := <-namesCh:
			known = names
			for name := range names {
				if watches[name] == nil {
					wctx, wcancel := context.WithCancel(ctx)
					w := &serviceWatch{name: name, cancel: wcancel}
					watches[name] = w
					wg.Go(func() { d.watchService(wctx, w, updates) })
				}
			}
			for name, w := range watches {
				if !names[name] {
					w.cancel()
					delete(watches, name)
					delete(data, name)
				}
			}
			recompute()
		case u := <-updates:
			if watches[u.w.name] != u.w {
				continue // from a watch cancelled since
			}
			data[u.w.name] = u.instances
			recompute()
		}
	}
}

// merge returns every service's instances in one slice sorted by ID.
func merge(data map[string][]pool.Instance) []pool.Instance {
	out := []pool.Instance{}
	for _, in := range data {
		out = append(out, in...)
	}
	slices.SortFunc(out, func(a, b pool.Instance) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Addr, b.Addr))
	})
	return out
}

// watchCatalog sends the set of ufop service names on every change.
func (d *Discovery) watchCatalog(ctx context.Context, namesCh chan<- map[string]bool) {
	var last map[string]bool
	d.loop(ctx, "catalog services", func(q *api.QueryOptions, started time.Time) (uint64, error) {
		services, meta, err := d.cfg.Client.Catalog().Services(q)
		if err != nil {
			return 0, err
		}
		d.succeeded(started) // before anything is sent: Up() holds once a set based on it arrives
		names := map[string]bool{}
		for name := range services {
			if len(name) > len(d.cfg.ServicePrefix) && strings.HasPrefix(name, d.cfg.ServicePrefix) {
				names[name] = true
			}
		}
		if last == nil || !mapsEqual(names, last) {
			select {
			case namesCh <- names:
				last = names
			case <-ctx.Done():
			}
		}
		return meta.LastIndex, nil
	})
}

// watchService sends the passing instances of one service on every change.
func (d *Discovery) watchService(ctx context.Context, w *serviceWatch, updates chan<- serviceUpdate) {
	var last []pool.Instance
	sent := false
	d.loop(ctx, "health service "+w.name, func(q *api.QueryOptions, started time.Time) (uint64, error) {
		entries, meta, err := d.cfg.Client.Health().Service(w.name, "", true, q)
		if err != nil {
			return 0, err
		}
		d.succeeded(started)
		ins := instancesFrom(w.name, d.cfg.ServicePrefix, d.cfg.DefaultRegion, entries)
		if !sent || !slices.Equal(ins, last) {
			select {
			case updates <- serviceUpdate{w: w, instances: ins}:
				last, sent = ins, true
			case <-ctx.Done():
			}
		}
		return meta.LastIndex, nil
	})
}

// loop runs one blocking query until ctx ends: index handling, backoff on
// error, rate limit between queries. query calls d.succeeded itself, before
// it acts on the answer.
func (d *Discovery) loop(ctx context.Context, what string, query func(q *api.QueryOptions, started time.Time) (uint64, error)) {
	var index uint64
	attempt := 0
	for ctx.Err() == nil {
		start := time.Now()
		// Consul answers within the wait time plus up to 1/16 of it;
		// past that (and a margin) the connection is dead or the agent
		// hung, and only a new request can get an answer.
		wait := cmp.Or(d.cfg.WaitTime, consulDefaultWait)
		qctx, qcancel := context.WithTimeout(ctx, wait+wait/16+queryMargin)
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: d.cfg.WaitTime}).WithContext(qctx)
		newIndex, err := query(q, start)
		qcancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			d.failed(what, fmt.Errorf("%s: %w", what, err))
			// After an outage the agent may have restarted with fresh
			// indexes: start over rather than block on a stale one.
			index = 0
			wait := backoff(attempt, d.cfg.MinBackoff, d.cfg.MaxBackoff, rand.Float64())
			attempt++
			if !sleep(ctx, wait) {
				return
			}
			continue
		}
		attempt = 0
		index = nextIndex(index, newIndex)
		if !sleep(ctx, d.cfg.MinInterval-time.Since(start)) {
			return
		}
	}
}

// nextIndex is the WaitIndex for the next blocking query after one that
// returned newIdx, following Consul's guidance (as consul-template does): an
// index that went backwards (agent restarted, snapshot restored) resets to 0
// so the next query answers at once with the full state; an index of 0 would
// make every later query return at once, so it becomes 1.
func nextIndex(old, newIdx uint64) uint64 {
	if newIdx < old {
		return 0
	}
	if newIdx == 0 {
		return 1
	}
	return newIdx
}

// backoff is the wait before retry number attempt (0-based): lo doubled per
// attempt, capped at hi, with "equal jitter": half fixed, half r (in [0,1))
// of it, so that many watchers do not retry in step.
func backoff(attempt int, lo, hi time.Duration, r float64) time.Duration {
	d := lo
	for i := 0; i < attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + time.Duration(r*float64(d/2))
}

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// instancesFrom turns the passing entries of one service into instances,
// sorted by ID (see the package comment for the format).
func instancesFrom(service, prefix, defaultRegion string, entries []*api.ServiceEntry) []pool.Instance {
	out := []pool.Instance{}
	ids := map[string]bool{}
	for _, e := range entries {
		in, ok := instanceFrom(service, prefix, defaultRegion, e)
		if !ok {
			continue
		}
		if ids[in.ID] && e.Node != nil {
			in.ID = e.Node.Node + "/" + in.ID
		}
		if ids[in.ID] {
			continue
		}
		ids[in.ID] = true
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b pool.Instance) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

func instanceFrom(service, prefix, defaultRegion string, e *api.ServiceEntry) (pool.Instance, bool) {
	if e == nil || e.Service == nil {
		return pool.Instance{}, false
	}
	s := e.Service
	attr := func(key string) string {
		if v := strings.TrimSpace(s.Meta[key]); v != "" {
			return v
		}
		for _, tag := range s.Tags {
			if k, v, ok := strings.Cut(tag, "="); ok && k == key {
				if v = strings.TrimSpace(v); v != "" {
					return v
				}
			}
		}
		return ""
	}
	in := pool.Instance{
		ID:      s.ID,
		Ufop:    cmp.Or(attr("ufop"), strings.TrimPrefix(service, prefix)),
		Version: attr("version"),
		Region:  cmp.Or(attr("region"), defaultRegion),
	}
	host := s.Address
	if host == "" && e.Node != nil {
		host = e.Node.Address
	}
	if in.Version == "" || host == "" || s.Port <= 0 || s.Port > 65535 {
		return pool.Instance{}, false
	}
	in.Addr = net.JoinHostPort(host, strconv.Itoa(s.Port))
	if in.ID == "" {
		in.ID = in.Addr
	}
	return in, true
}
