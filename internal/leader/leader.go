// Package leader decides which of several processes sharing one metadata
// store does the background work that must run once (the admin's
// reconcile loop, recovery of interrupted builds, re-applying
// deployments): with a consul:// store, the holder of a Consul lock; with
// an embedded store, which only one process can open, that process.
//
// Both implement the same one-method shape, Run(ctx, fn): fn runs while
// this process leads and its context ends when leadership ends.
package leader

import (
	"cmp"
	"context"
	"log/slog"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/doraproject/dora/autoscaler/lock"
)

// Always leads: for embedded backends (bolt://, memory://) that one process
// alone can open, so no other process could compete.
type Always struct{}

// Run runs fn with ctx and, should fn return early, waits for ctx to end.
// It returns nil.
func (Always) Run(ctx context.Context, fn func(ctx context.Context)) error {
	fn(ctx)
	<-ctx.Done()
	return nil
}

// Consul leads while it holds a Consul lock on Key (a session with a TTL,
// renewed at TTL/2): a leader that stops releases the key at once, one that
// dies or loses Consul loses it when its session expires (within the TTL,
// which Consul may stretch up to twice) plus the lock delay, and a waiting
// process takes over. See autoscaler/lock for the mechanics.
//
// The lock's own watch is a blocking query without a deadline, which a
// silent connection (a partition, a hung agent) holds forever while the
// session expires and another process leads. So while fn runs, Run also
// reads the key (consistently, every TTL/5, each read bounded) and ends
// fn's context when the key is no longer held by the session that held it
// when fn started, or when no read confirmed it for TTL/2: a cut-off
// leader stops before its session can expire.
type Consul struct {
	Client *api.Client
	// Key is the lock's full KV key, e.g. "<store prefix>locks/admin".
	Key string
	// Options tune the session (TTL, LockDelay, ...); zero fields take
	// lock's defaults.
	Options lock.Options
}

// Run campaigns for Key until ctx ends, running fn each time it leads;
// fn's context is cancelled when the lock is lost or can no longer be
// confirmed. It returns nil when ctx ends, or an error for a nil client,
// an empty key or bad options.
func (c Consul) Run(ctx context.Context, fn func(ctx context.Context)) error {
	opts := c.Options
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if fn == nil {
		return lock.RunWith(ctx, c.Client, c.Key, opts, nil) // refused there
	}
	ttl := cmp.Or(opts.TTL, lock.DefaultTTL)
	log := opts.Logger.With("component", "leader", "key", c.Key)
	return lock.RunWith(ctx, c.Client, c.Key, opts, func(lctx context.Context) {
		fctx, cancel := context.WithCancel(lctx)
		defer cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.confirm(fctx, ttl, log, cancel)
		}()
		fn(fctx)
		cancel()
		<-done
	})
}

// confirm reads Key every ttl/5 until ctx ends and calls stepDown (then
// returns) when a read shows the key held by another session or by none,
// or when none confirmed it for ttl/2.
func (c Consul) confirm(ctx context.Context, ttl time.Duration, log *slog.Logger, stepDown func()) {
	every, budget := ttl/5, ttl/2
	var session string
	confirmed := time.Now() // the lock was just acquired
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		rctx, cancel := context.WithDeadline(ctx, confirmed.Add(budget))
		kv, _, err := c.Client.KV().Get(c.Key, (&api.QueryOptions{RequireConsistent: true}).WithContext(rctx))
		cancel()
		if ctx.Err() != nil {
			return
		}
		var holder string
		if err == nil && kv != nil {
			holder = kv.Session
		}
		var v verdict
		session, confirmed, v = judge(time.Now(), start, confirmed, budget, session, holder, err)
		switch v {
		case lost:
			log.Warn("lock held by another session: stepping down", "session", session, "holder", holder)
			stepDown()
			return
		case unconfirmed:
			log.Warn("lock not confirmed in time: stepping down", "budget", budget, "err", err)
			stepDown()
			return
		}
		t.Reset(every)
	}
}

// verdict is what one read of the lock key means for the leader.
type verdict int

const (
	held        verdict = iota // confirmed, or not yet too long unconfirmed
	lost                       // another session holds the key, or none
	unconfirmed                // no read confirmed the lock for the budget
)

// judge decides on a read of the lock key started at start that found
// holder (or failed with err), given the leader's session (empty until
// the first read learns it), when it was last confirmed and for how long
// it may stay unconfirmed. It returns the session, the new confirmation
// time and the verdict.
func judge(now, start, confirmed time.Time, budget time.Duration, session, holder string, err error) (string, time.Time, verdict) {
	switch {
	case err != nil:
		if now.Sub(confirmed) >= budget {
			return session, confirmed, unconfirmed
		}
		return session, confirmed, held
	case holder == "" || (session != "" && holder != session):
		return session, confirmed, lost
	}
	return holder, start, held
}
