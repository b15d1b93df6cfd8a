package router

import (
	"context"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doraproject/dora/autoscaler/load"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/meta"
)

// Scale from zero: when a ufop step finds no healthy instance, the router
// holds the request (bounded queue, bounded wait) instead of failing at
// once, and counts it as demand (load.Sample.Waiting, and as in flight) so
// that the autoscaler starts an instance of a deployment whose floor is 0.
// When the load store carries wake-ups (load.Waker), the autoscaler hears
// of the held request at once instead of at its next tick. The request
// goes on as soon as an instance is in the pool (the pool's change
// notification, no polling); past Config.HoldTimeout it gets 503 with
// Retry-After. A request is not held when waiting cannot bring an
// instance (waitInVain): the ufop was deleted, every deployment of the
// version in the region FAILED, or it has none there or only ones its
// owner stopped; a deployment the autoscaler scaled to zero stays RUNNING
// and is waited for.

// Defaults of the hold (Config.HoldTimeout, Config.MaxHeld).
const (
	DefaultHoldTimeout = 30 * time.Second
	DefaultMaxHeld     = 1000
	// wakeEvery bounds the wake-ups one key sends while requests wait.
	wakeEvery = time.Second
	// wakeAgain bounds the wake-ups of waits that start one after the
	// other (a pool flapping between empty and not): a wait that starts
	// wakes the autoscaler at once unless one of key's was sent this
	// recently.
	wakeAgain = 10 * time.Millisecond
	// wakeTimeout bounds one wake-up's call to the load store.
	wakeTimeout = 2 * time.Second
)

// errVersionMoved is holdForInstance's answer when a step of the ufop
// would now take another version than the one waited for: the caller
// starts the step over (runUfop) or answers movedError. A sentinel, never
// sent as it is.
var errVersionMoved = &httpError{status: fasthttp.StatusServiceUnavailable, msg: "the ufop's version moved", retryAfter: true}

// movedError is the answer of step i when the ufop's version moved away
// from key's while the step waited and it cannot start over.
func (r *Router) movedError(key pool.Key, i int) *httpError {
	e := errf(fasthttp.StatusServiceUnavailable, "ufop %s moved away from version %s while the request waited", key.Ufop, key.Version)
	e.step, e.retryAfter = i, true
	return e
}

// versionMoved reports whether a step of key's ufop would now take
// another version than key's (versionFor): waiting for key is then for
// nothing. A ufop that is gone is waitInVain's.
func (r *Router) versionMoved(key pool.Key, now time.Time) bool {
	u, ok := r.meta.Snapshot().Ufop(key.Ufop)
	if !ok {
		return false
	}
	v := r.versionFor(u, now)
	return v != "" && v != key.Version
}

// Held returns the number of requests waiting for an instance right now.
func (r *Router) Held() int { return int(r.held.Load()) }

// holdForInstance waits for a host of key for step i: until one is in the
// pool (returned), HoldTimeout passes or the bound of held requests is
// reached (503 with Retry-After), ctx ends (the client going away cancels
// it: cancel.go), or the step would now take another version of the ufop
// (errVersionMoved).
func (r *Router) holdForInstance(ctx context.Context, key pool.Key, i int) (*pool.Host, *httpError) {
	lk := loadKey(key)
	unavailable := func(format string, args ...any) *httpError {
		// Demand that found nothing: reported as Waiting in the next
		// sample even when the hold was shorter than a flush.
		r.load.waiting(lk, r.now())
		e := errf(fasthttp.StatusServiceUnavailable, format, args...)
		e.step, e.retryAfter = i, true
		return e
	}
	// A version whose deployments all FAILED, that has none or only
	// stopped ones gets no instance by waiting: 503 at once, with the
	// reason; and a held request gets it when that happens while it
	// waits, or a 404 when the ufop is deleted (the
	// metadata's change notification, taken before the snapshot is
	// read: no change is missed).
	metaChanged := r.metaChanged()
	if e := r.waitInVain(ctx, key, i); e != nil {
		return nil, e
	}
	if r.cfg.HoldTimeout < 0 {
		return nil, unavailable("no healthy instance of %s %s in %s", key.Ufop, key.Version, key.Region)
	}
	if r.held.Add(1) > int64(r.cfg.MaxHeld) {
		r.held.Add(-1)
		return nil, unavailable("no healthy instance of %s %s in %s, and %d requests already wait for one", key.Ufop, key.Version, key.Region, r.cfg.MaxHeld)
	}
	defer r.held.Add(-1)

	// The held request is demand: in flight for the concurrency figures,
	// and Waiting for scale from zero.
	c := r.load.counter(lk)
	// The first request held for key starts a wait: when an earlier
	// wait was answered (an instance came) since the last wake-up, it
	// wakes the autoscaler even if that wake-up went out less than
	// wakeEvery ago: the deployment may have been scaled back to zero
	// meanwhile, and that wake-up is no news of this one. Waits that end
	// without an instance (clients giving up, the hold timing out) do not
	// count, so a stream of requests abandoned while held cannot turn
	// into a stream of wake-ups: those keep the wakeEvery bound.
	starts := c.held.Add(1) == 1
	lc := r.load.begin(lk, r.now())
	defer func() {
		r.load.end(lc, r.now())
		c.held.Add(-1)
	}()

	r.wake(c, lk, starts)

	timer := time.NewTimer(r.cfg.HoldTimeout)
	defer timer.Stop()
	// eject wakes the wait when the earliest ejection of key's hosts ends
	// (that changes no pool table).
	eject := time.NewTimer(time.Hour)
	defer eject.Stop()
	rewake := time.NewTicker(wakeEvery)
	defer rewake.Stop()
	for {
		changed := r.cfg.Pool.Changed() // before the Pick: no Update is missed
		now := r.now()
		if h := r.cfg.Pool.Pick(key, nil, now); h != nil {
			c.answered.Store(true)
			return h, nil
		}
		if r.versionMoved(key, now) {
			return nil, errVersionMoved
		}
		eject.Reset(r.untilEjectionEnds(key, now))
		select {
		case <-ctx.Done():
			return nil, unavailable("no healthy instance of %s %s in %s: %v", key.Ufop, key.Version, key.Region, ctx.Err())
		case <-timer.C:
			return nil, unavailable("no healthy instance of %s %s in %s within %v", key.Ufop, key.Version, key.Region, r.cfg.HoldTimeout)
		case <-changed:
		case <-metaChanged:
			metaChanged = r.metaChanged()
			if e := r.waitInVain(ctx, key, i); e != nil {
				return nil, e
			}
		case <-eject.C:
		case <-rewake.C:
			r.wake(c, lk, false)
		}
	}
}

// waitInVain is the answer for step i when waiting cannot bring an
// instance of key: 404 when the ufop no longer exists; 503 with the reason
// when every deployment of its version in the region FAILED, and 503 with
// what to run when it has none there or its owner stopped it (only the
// owner can change that, so no Retry-After invites clients to retry in a
// loop); nil otherwise. Its cost is the held request's, never an answered
// one's: it runs only when no instance of key is eligible.
func (r *Router) waitInVain(ctx context.Context, key pool.Key, i int) *httpError {
	snap := r.meta.Snapshot()
	if _, ok := snap.Ufop(key.Ufop); !ok {
		e := errf(fasthttp.StatusNotFound, "no such ufop %q", key.Ufop)
		e.step = i
		return e
	}
	state, msg := snap.Deployments(key.Ufop, key.Version, key.Region)
	if state == meta.NoDeployment || state == meta.DeploymentsStopped {
		state, msg = r.confirmDeployments(ctx, key, state, msg)
	}
	var e *httpError
	switch state {
	case meta.DeploymentsFailed:
		e = errf(fasthttp.StatusServiceUnavailable, "ufop %s %s in %s: deployment FAILED: %s", key.Ufop, key.Version, key.Region, msg)
		e.retryAfter = true
	case meta.NoDeployment:
		e = errf(fasthttp.StatusServiceUnavailable, "no deployment of %s %s in %s, so no instance will start: make one with `qdoractl resize %s -num 1 --region %s` (or `qdoractl deploy %s %s --region %s`)",
			key.Ufop, key.Version, key.Region, key.Ufop, key.Region, key.Ufop, key.Version, key.Region)
	case meta.DeploymentsStopped:
		if msg != "" {
			msg = " (" + msg + ")"
		}
		e = errf(fasthttp.StatusServiceUnavailable, "the deployment of %s %s in %s was stopped by its owner%s, so no instance will start: `qdoractl start %s --region %s` runs it again",
			key.Ufop, key.Version, key.Region, msg, key.Ufop, key.Region)
	default:
		return nil
	}
	e.step = i
	return e
}

// deploymentReader is a MetaSource that can read the deployments from the
// store rather than from its last snapshot (*meta.Cache).
type deploymentReader interface {
	ReadDeployments(ctx context.Context, ufop, version, region string) (meta.DeploymentState, string, error)
}

// confirmDeployments checks a snapshot's word that key has no deployment,
// or only stopped ones (state, msg), before the request is refused for it:
// the snapshot follows the store's watch, which may not have brought a
// deployment made just before the request (`qdoractl resize` then a
// request at once). The word stands when no instance of key is known to
// the pool (an ejected one may come back) and a read of the store begun
// now says the same (a MetaSource that cannot read has no store behind
// it, and its snapshot is the truth); otherwise the state is
// DeploymentsLive, so that the request is held as before, with what the
// read said when it says more.
func (r *Router) confirmDeployments(ctx context.Context, key pool.Key, state meta.DeploymentState, msg string) (meta.DeploymentState, string) {
	if len(r.cfg.Pool.Hosts(key)) > 0 {
		return meta.DeploymentsLive, ""
	}
	rd, ok := r.meta.(deploymentReader)
	if !ok {
		return state, msg
	}
	state, msg, err := rd.ReadDeployments(ctx, key.Ufop, key.Version, key.Region)
	if err != nil {
		// Cannot tell: hold, as for a deployment that may start.
		return meta.DeploymentsLive, ""
	}
	return state, msg
}

// metaNotifier is a MetaSource that says when its snapshot changes
// (*meta.Cache).
type metaNotifier interface {
	Changed() <-chan struct{}
}

// metaChanged is closed when the metadata snapshot changes; nil (never
// ready) when the MetaSource cannot say.
func (r *Router) metaChanged() <-chan struct{} {
	if n, ok := r.meta.(metaNotifier); ok {
		return n.Changed()
	}
	return nil
}

// untilEjectionEnds is how long until the first ejected host of key is
// eligible again (an hour when none is ejected).
func (r *Router) untilEjectionEnds(key pool.Key, now time.Time) time.Duration {
	d := time.Hour
	for _, h := range r.cfg.Pool.Hosts(key) {
		if until := h.EjectedUntil(); until.After(now) {
			d = min(d, until.Sub(now))
		}
	}
	return max(d, time.Millisecond)
}

// wake tells the autoscaler at once that a request waits for an instance of
// key, when the load store carries wake-ups, off the request's path: at
// most once per wakeEvery per key, or, for a wait that starts (starts)
// after an earlier wait was answered (c.answered), once per wakeAgain.
func (r *Router) wake(c *loadCounter, k load.Key, starts bool) {
	w, ok := r.cfg.Load.(load.Waker)
	if !ok {
		return
	}
	every := int64(wakeEvery)
	if starts && c.answered.Load() {
		every = int64(wakeAgain)
	}
	now := r.now().UnixNano()
	last := c.lastWake.Load()
	if now-last < every || !c.lastWake.CompareAndSwap(last, now) {
		return
	}
	c.answered.Store(false)
	go func() {
		ctx, cancel := context.WithTimeout(r.stopped, wakeTimeout)
		defer cancel()
		if err := w.Wake(ctx, k); err != nil && ctx.Err() == nil {
			r.logLoadOnce("wake-up failed", "err", err)
		}
	}()
}
