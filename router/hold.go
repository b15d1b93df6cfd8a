package router

import (
	"context"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doraproject/dora/pool"
)

// Scale from zero: when a ufop step finds no healthy instance, the router
// holds the request (bounded queue, bounded wait) instead of failing at
// once, and counts it as demand (load.Sample.Waiting, and as in flight) so
// that the autoscaler starts an instance of a deployment whose floor is 0.
// The request goes on as soon as an instance is in the pool; past
// Config.HoldTimeout it gets 503 with Retry-After.

// Defaults of the hold (Config.HoldTimeout, Config.MaxHeld).
const (
	DefaultHoldTimeout = 30 * time.Second
	DefaultMaxHeld     = 1000
	// holdPoll is how often a held request looks for an instance and
	// checks that its client is still there. The pool has no change
	// notification, and a Pick costs no allocation and no lock.
	holdPoll = 50 * time.Millisecond
)

// Held returns the number of requests waiting for an instance right now.
func (r *Router) Held() int { return int(r.held.Load()) }

// holdForInstance waits for a host of key for step i: until one is in the
// pool (returned), HoldTimeout passes or the bound of held requests is
// reached (503 with Retry-After), or ctx ends (the client going away
// cancels it: cancel.go).
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
	c.held.Add(1)
	lc := r.load.begin(lk, r.now())
	defer func() {
		r.load.end(lc, r.now())
		c.held.Add(-1)
	}()

	timer := time.NewTimer(r.cfg.HoldTimeout)
	defer timer.Stop()
	tick := time.NewTicker(holdPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, unavailable("no healthy instance of %s %s in %s: %v", key.Ufop, key.Version, key.Region, ctx.Err())
		case <-timer.C:
			return nil, unavailable("no healthy instance of %s %s in %s within %v", key.Ufop, key.Version, key.Region, r.cfg.HoldTimeout)
		case <-tick.C:
		}
		if h := r.cfg.Pool.Pick(key, nil, r.now()); h != nil {
			return h, nil
		}
	}
}
