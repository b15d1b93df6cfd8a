package autoscaler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler/load"
	"github.com/doraproject/dora/internal/api"
	"github.com/doraproject/dora/internal/store"
)

// Target is what the autoscaler scales: the local runtime in the embedded
// platform, Nomad in production.
type Target interface {
	// Scale asks for count instances of the deployment; reason is kept
	// with the change (Nomad shows it as the scaling event's message).
	Scale(ctx context.Context, d dora.Deployment, count int, reason string) error
	// Ready counts the deployment's instances passing their health check.
	Ready(ctx context.Context, d dora.Deployment) (int, error)
}

// AppliedReader is a Target that also tells the count it is set to run
// (not how many instances are ready). The first time an autoscaler sees a
// deployment (at its start, after a change of leader) it re-applies the
// stored count when the target runs another: an autoscaler that died
// between writing a new count and applying it left the store ahead of the
// target, and nothing else would apply it until the load moved.
type AppliedReader interface {
	Applied(ctx context.Context, d dora.Deployment) (int, error)
}

// ReasonReapply is the reason of a Scale that re-applies a stored count
// the target does not run (AppliedReader).
const ReasonReapply = "re-apply the stored count"

// ErrTargetBusy is returned (wrapped) by a Target that cannot scale right
// now without anything being wrong, e.g. while a Nomad deployment is in
// progress: the autoscaler retries at the next evaluation and does not start
// a cooldown for the change it could not make.
var ErrTargetBusy = errors.New("autoscaler: target busy")

// ErrUnknownToTarget is returned (wrapped) by an AppliedReader that does
// not know the deployment: at start, before its runtime restored the
// deployments, that is expected (the restore applies the stored count
// itself), so the autoscaler does not warn about it.
var ErrUnknownToTarget = errors.New("the target does not know the deployment")

// Defaults of Config.
const (
	DefaultInterval  = 2 * time.Second
	DefaultMaxEvents = 200 // scaling events kept per deployment
)

// Config configures an Autoscaler.
type Config struct {
	// Store holds the deployments (read, Desired updated with CAS), the
	// releases (their autoscale policies), ufops and accounts (the
	// account's instance limit) and the scaling events (written).
	Store store.Store
	// Load gives the windowed load averages the routers recorded.
	Load load.Reader
	// Target applies the decisions and counts ready instances.
	Target Target
	// Interval is the loop's tick (default 2s); a policy's
	// EvaluationInterval longer than it slows that deployment down.
	Interval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives the scaling events and errors (default slog.Default()).
	Logger *slog.Logger
	// Metrics, when set, receives the per-deployment gauges.
	Metrics prometheus.Registerer
	// MaxEvents bounds the scaling events kept per deployment (default 200).
	MaxEvents int
}

// Event is one scaling change as kept under
// scaleevents/<deployment id>/<unix nanos, 20 digits> (a wire type of
// internal/api: the events endpoint lists these records as they are).
type Event = api.ScaleEvent

// Events returns a deployment's kept scaling events, oldest first.
func Events(ctx context.Context, st store.Store, deploymentID string) ([]Event, error) {
	kvs, err := st.List(ctx, store.ScaleEventsOf(deploymentID))
	if err != nil {
		return nil, fmt.Errorf("scale events of %s: %w", deploymentID, err)
	}
	evs := make([]Event, 0, len(kvs))
	for _, kv := range kvs {
		var ev Event
		if err := json.Unmarshal(kv.Value, &ev); err != nil {
			return nil, fmt.Errorf("scale event %s: %w", kv.Key, err)
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

// Autoscaler is the scaling loop over every live deployment.
type Autoscaler struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu      sync.Mutex // serialises Tick; guards entries
	entries map[string]*entry
}

// entry is the loop's memory of one deployment.
type entry struct {
	state    State
	lastEval time.Time
	// pending: the store holds a Desired the target has not applied yet
	// (the Scale call failed or the target was busy); retried every tick
	// with pendingReason, the reason that change was decided for.
	pending       bool
	pendingReason string
	invalid       string // last policy problem logged, to log it once
	// stableSeconds is the StableSeconds of the last load read, at
	// readAt (zero: none yet), to notice the load store losing data.
	stableSeconds int
	readAt        time.Time
}

// New returns an autoscaler; Run starts it.
func New(cfg Config) *Autoscaler {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = DefaultMaxEvents
	}
	a := &Autoscaler{cfg: cfg, log: cfg.Logger.With("component", "autoscaler"), entries: map[string]*entry{}}
	a.metrics = newMetrics(cfg.Metrics, a.log)
	return a
}

// Run evaluates every running or pending deployment each interval until ctx
// ends (then it returns nil). Each Run starts without history: after a
// restart or a leadership change nothing is scaled down before a full
// stable window of observations.
func (a *Autoscaler) Run(ctx context.Context) error {
	if a.cfg.Store == nil || a.cfg.Load == nil || a.cfg.Target == nil {
		return errors.New("autoscaler: Store, Load and Target are required")
	}
	a.mu.Lock()
	clear(a.entries)
	a.mu.Unlock()
	a.metrics.reset()

	// Wake-ups (load.Waker): a router holding a request for a deployment
	// at zero evaluates it now rather than at the next tick.
	var wakes <-chan load.Key
	if w, ok := a.cfg.Load.(load.Waker); ok {
		wakes = w.Wakes(ctx)
	}
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	tick := func() {
		if err := a.Tick(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("autoscaler tick", "err", err)
		}
	}
	tick()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			tick()
		case k, ok := <-wakes:
			if !ok {
				wakes = nil
				continue
			}
			// The wake-ups that queued meanwhile (many keys held at once:
			// a burst after a quiet night) are handled together: one
			// listing of the deployments for all of them, not one each.
			keys := map[load.Key]bool{k: true}
		drain:
			for {
				select {
				case k, ok := <-wakes:
					if !ok {
						wakes = nil
						break drain
					}
					keys[k] = true
				default:
					break drain
				}
			}
			if err := a.wake(ctx, keys); err != nil && ctx.Err() == nil {
				a.log.Warn("autoscaler wake-up", "err", err)
			}
		}
	}
}

// Wake evaluates at once the live deployments of key that are scaled to
// zero, counting at least one waiting request (the router that woke it
// holds one): scale from zero without waiting for the next tick. A
// deployment with instances asked for already is left to the ticks.
func (a *Autoscaler) Wake(ctx context.Context, key load.Key) error {
	return a.wake(ctx, map[load.Key]bool{key: true})
}

// wake is Wake for the set keys, with one listing of the deployments.
func (a *Autoscaler) wake(ctx context.Context, keys map[load.Key]bool) error {
	for key := range keys {
		a.log.Debug("autoscaler woken", "ufop", key.Ufop, "version", key.Version, "region", key.Region)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.cfg.Now()
	deps, running, err := a.liveDeployments(ctx)
	if err != nil {
		return err
	}
	limits := map[string]int{}
	for _, ld := range deps {
		d := ld.d
		if !keys[load.Key{Ufop: d.Ufop, Version: d.Version, Region: d.Region}] || d.Desired != 0 {
			continue
		}
		others := running[d.Ufop] - d.Desired
		running[d.Ufop] = others + a.evaluate(ctx, ld.kv, d, now, limits, others, true)
	}
	return nil
}

// Tick runs one evaluation of every live deployment. Run calls it each
// interval; tests call it directly with a fake clock. It returns an error
// only when the deployments cannot be listed; per-deployment problems are
// logged and retried at the next tick.
func (a *Autoscaler) Tick(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.cfg.Now()
	deps, running, err := a.liveDeployments(ctx)
	if err != nil {
		return err
	}
	limits := map[string]int{} // ufop name → owner's instance limit, for this tick
	live := map[string]bool{}
	for _, ld := range deps {
		if ctx.Err() != nil {
			return nil
		}
		d := ld.d
		live[d.ID] = true
		others := running[d.Ufop] - d.Desired
		running[d.Ufop] = others + a.evaluate(ctx, ld.kv, d, now, limits, others, false)
	}
	for id := range a.entries {
		if !live[id] {
			delete(a.entries, id)
			a.metrics.forget(id)
		}
	}
	return nil
}

// liveDep is a live deployment with the store record it was read from
// (whose version guards the write of a new count).
type liveDep struct {
	kv store.KV
	d  dora.Deployment
}

// liveDeployments lists the running and pending deployments, and running:
// per ufop, the counts they are asked to run. The owner's limit is per
// ufop, so one deployment may grow only into what the others leave. An
// unreadable record is logged and skipped.
func (a *Autoscaler) liveDeployments(ctx context.Context) ([]liveDep, map[string]int, error) {
	kvs, err := a.cfg.Store.List(ctx, store.PrefixDeployments)
	if err != nil {
		return nil, nil, fmt.Errorf("list deployments: %w", err)
	}
	var deps []liveDep
	running := map[string]int{}
	for _, kv := range kvs {
		var d dora.Deployment
		if err := json.Unmarshal(kv.Value, &d); err != nil || d.ID == "" || strings.Contains(d.ID, "/") {
			a.log.Warn("skipping unreadable deployment", "key", kv.Key, "id", d.ID, "err", err)
			continue
		}
		if d.Status != dora.DeployRunning && d.Status != dora.DeployPending {
			continue
		}
		deps = append(deps, liveDep{kv, d})
		running[d.Ufop] += d.Desired
	}
	return deps, running, nil
}

// evaluate decides one deployment and applies a change; others is what
// the ufop's other live deployments are asked to run. It returns the count
// the deployment is left with. woken (Wake) skips the evaluation interval
// and counts at least one waiting request.
func (a *Autoscaler) evaluate(ctx context.Context, kv store.KV, d dora.Deployment, now time.Time, limits map[string]int, others int, woken bool) int {
	log := a.log.With("deployment", d.ID, "ufop", d.Ufop, "version", d.Version, "region", d.Region)
	e := a.entries[d.ID]
	if e == nil {
		e = &entry{state: State{Desired: d.Desired, StartedAt: now}}
		a.entries[d.ID] = e
		a.checkApplied(ctx, e, d, log)
	}
	if d.Desired != e.state.Desired {
		// Someone else (resize, deploy --expect) changed the count: adopt
		// it and do not undo it within the cooldowns.
		log.Info("adopting a count set elsewhere", "from", e.state.Desired, "to", d.Desired)
		if d.Desired > e.state.Desired {
			e.state.LastScaleUp = now
		} else {
			e.state.LastScaleDown = now
		}
		e.state.Desired = d.Desired
		e.pending, e.pendingReason = false, ""
	}

	// A release or account the store cannot read right now is not a
	// missing one: deciding on the default policy or without the limit
	// would move the count for no reason. The count holds until they read.
	var limit int
	rel, err := a.release(ctx, d, log)
	if err == nil {
		limit, err = a.limit(ctx, d.Ufop, limits)
	}
	if err != nil {
		a.metrics.errors.WithLabelValues("store").Inc()
		log.Warn("reading the policy; holding the count", "err", err)
		return d.Desired
	}
	p := PolicyFrom(d, rel).WithLimit(ShareOfLimit(limit, others, d.Expect))
	if err := p.Validate(); err != nil {
		if msg := err.Error(); msg != e.invalid {
			e.invalid = msg
			log.Warn("invalid autoscale policy; holding the count", "err", err)
		}
	} else {
		e.invalid = ""
	}
	if !woken && !e.pending && !e.lastEval.IsZero() && now.Sub(e.lastEval) < p.EvaluationInterval-a.cfg.Interval/2 {
		return d.Desired
	}
	e.lastEval = now

	ready, err := a.cfg.Target.Ready(ctx, d)
	if err != nil {
		a.metrics.errors.WithLabelValues("ready").Inc()
		log.Warn("counting ready instances", "err", err)
		return d.Desired
	}
	key := load.Key{Ufop: d.Ufop, Version: d.Version, Region: d.Region}
	av, err := a.cfg.Load.Averages(ctx, key, now, p.StableWindow, p.PanicWindow)
	if err != nil {
		// Decide on no data: the count holds, but floor and ceiling
		// changes still apply.
		a.metrics.errors.WithLabelValues("load").Inc()
		log.Warn("reading load averages", "err", err)
		av = load.Averages{}
		// The routers could not record meanwhile either: the windows
		// hold a hole until a full stable window has passed, and a
		// steady load would read as a drop. No scale-down before, as
		// after a restart.
		e.state.StartedAt = now
		e.readAt = time.Time{}
	} else {
		// The window slides by one second a second: seconds of data
		// that vanish faster were lost by the store (a Redis without
		// persistence restarted). What is left is no full window
		// either: no scale-down before a full one has passed.
		if !e.readAt.IsZero() && e.stableSeconds-av.StableSeconds > int(now.Sub(e.readAt)/time.Second)+1 {
			log.Warn("the load store lost its figures; no scale-down before a full stable window",
				"stableSeconds", av.StableSeconds, "before", e.stableSeconds)
			e.state.StartedAt = now
		}
		e.stableSeconds, e.readAt = av.StableSeconds, now
	}
	if woken {
		av.Waiting = max(av.Waiting, 1)
	}
	prev := e.state
	dec := Decide(p, Input{Ready: ready, Averages: av}, prev, now)
	a.metrics.observe(d, ready, av, dec)

	if dec.Desired == d.Desired && !e.pending {
		e.state = dec.State
		return d.Desired
	}
	nd := d
	reason := dec.Reason
	if dec.Desired == d.Desired && e.pending {
		// A retry of the change still pending: Nomad records the reason
		// as the scaling event's message, so keep the one it was made for.
		reason = e.pendingReason
	}
	if dec.Desired != d.Desired {
		nd.Desired = dec.Desired
		nd.Updated = now
		b, err := json.Marshal(nd)
		if err != nil {
			log.Error("encoding deployment", "err", err)
			return d.Desired
		}
		if _, err := a.cfg.Store.CAS(ctx, kv.Key, b, kv.Version); err != nil {
			// On a conflict the user (or another autoscaler) just wrote
			// the deployment: their change wins; decide again next tick.
			if !errors.Is(err, store.ErrConflict) {
				a.metrics.errors.WithLabelValues("store").Inc()
			}
			log.Info("deployment changed meanwhile; not scaling", "err", err)
			e.lastEval = time.Time{}
			return d.Desired
		}
		log.Info("scaling", "from", d.Desired, "to", dec.Desired, "reason", dec.Reason,
			"ready", ready, "stable", av.Stable, "panic", av.Panic, "inPanic", dec.State.InPanic())
		a.metrics.events.WithLabelValues(dec.Reason).Inc()
		a.recordEvent(ctx, d.ID, Event{Time: now, From: d.Desired, To: dec.Desired, Reason: dec.Reason}, log)
	}
	e.state = dec.State
	e.pending, e.pendingReason = true, reason
	if err := a.cfg.Target.Scale(ctx, nd, dec.Desired, reason); err != nil {
		if errors.Is(err, ErrTargetBusy) {
			// Nothing happened: no cooldown for it.
			e.state.LastScaleUp, e.state.LastScaleDown = prev.LastScaleUp, prev.LastScaleDown
			log.Info("target busy; retrying at the next evaluation", "err", err)
			return dec.Desired
		}
		a.metrics.errors.WithLabelValues("scale").Inc()
		log.Warn("scaling failed; retrying at the next evaluation", "count", dec.Desired, "err", err)
		return dec.Desired
	}
	e.pending, e.pendingReason = false, ""
	return dec.Desired
}

// checkApplied marks e's stored count pending when the target (an
// AppliedReader) runs another one, so that evaluate applies it. A target
// that cannot tell is trusted to run the stored count.
func (a *Autoscaler) checkApplied(ctx context.Context, e *entry, d dora.Deployment, log *slog.Logger) {
	ar, ok := a.cfg.Target.(AppliedReader)
	if !ok || d.Status != dora.DeployRunning { // a pending one is being applied
		return
	}
	n, err := ar.Applied(ctx, d)
	if errors.Is(err, ErrUnknownToTarget) {
		log.Debug("the target does not know the deployment (yet: its runtime restores them at start); not re-applying", "err", err)
		return
	} else if err != nil {
		log.Warn("reading the count the target runs; not re-applying", "err", err)
		return
	}
	if n != d.Desired {
		log.Info("the target runs another count than the stored one; re-applying", "target", n, "stored", d.Desired)
		e.pending, e.pendingReason = true, ReasonReapply
	}
}

// ShareOfLimit is the ceiling a deployment may grow to under the owner's
// per-ufop instance limit when the ufop's other live deployments are asked
// to run others: what they leave, never below the deployment's own floor
// (the admin API keeps the floors within the limit). 0 (no limit known)
// stays 0.
func ShareOfLimit(limit, others, floor int) int {
	if limit <= 0 {
		return 0
	}
	return max(limit-others, floor, 1)
}

// release reads the deployment's release; a missing one means defaults.
// An error means the store could not be read.
func (a *Autoscaler) release(ctx context.Context, d dora.Deployment, log *slog.Logger) (dora.Release, error) {
	var r dora.Release
	kv, err := a.cfg.Store.Get(ctx, store.ReleaseKey(d.Ufop, d.Version))
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			return r, fmt.Errorf("release %s/%s: %w", d.Ufop, d.Version, err)
		}
		return r, nil
	}
	if err := json.Unmarshal(kv.Value, &r); err != nil {
		log.Warn("unreadable release; using default policy", "key", kv.Key, "err", err)
		return dora.Release{}, nil
	}
	return r, nil
}

// limit is the instance limit of the account owning the ufop (0: unknown:
// no ufop, owner or account record, or one that does not parse), cached in
// limits for one tick. An error means the store could not be read (not
// cached: the next deployment of the ufop tries again).
func (a *Autoscaler) limit(ctx context.Context, ufop string, limits map[string]int) (int, error) {
	if l, ok := limits[ufop]; ok {
		return l, nil
	}
	l := 0
	var u dora.Ufop
	var acct dora.Account
	if kv, err := a.cfg.Store.Get(ctx, store.UfopKey(ufop)); err == nil && json.Unmarshal(kv.Value, &u) == nil && u.Owner != "" {
		if kv, err := a.cfg.Store.Get(ctx, store.AccountKey(u.Owner)); err == nil && json.Unmarshal(kv.Value, &acct) == nil {
			l = acct.Limit()
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return 0, fmt.Errorf("account %s: %w", u.Owner, err)
		}
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return 0, fmt.Errorf("ufop %s: %w", ufop, err)
	}
	limits[ufop] = l
	return l, nil
}

// recordEvent keeps the event and drops the oldest beyond MaxEvents. Event
// keeping is best effort: a failure is logged, the scaling goes on.
func (a *Autoscaler) recordEvent(ctx context.Context, id string, ev Event, log *slog.Logger) {
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	if _, err := a.cfg.Store.Put(ctx, store.ScaleEventKey(id, ev.Time), b); err != nil {
		a.metrics.errors.WithLabelValues("store").Inc()
		log.Warn("keeping scale event", "err", err)
		return
	}
	kvs, err := a.cfg.Store.List(ctx, store.ScaleEventsOf(id))
	if err != nil {
		log.Warn("listing scale events", "err", err)
		return
	}
	for i := 0; i < len(kvs)-a.cfg.MaxEvents; i++ {
		if !strings.HasPrefix(kvs[i].Key, store.ScaleEventsOf(id)) {
			continue
		}
		if err := a.cfg.Store.Delete(ctx, kvs[i].Key); err != nil {
			log.Warn("dropping old scale event", "key", kvs[i].Key, "err", err)
		}
	}
}
