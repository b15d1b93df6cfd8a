// Package lock elects one leader among several processes with a Consul
// lock, so that of several `dorad autoscaler` processes exactly one acts and
// the others take over when it goes away.
//
// The leader holds a Consul session (renewed every TTL/2) locking one KV
// key. A leader that stops releases the key at once; one that dies loses it
// when Consul invalidates its session (after the TTL, which Consul may
// stretch up to twice) plus the lock delay. A contender waits in a blocking
// query on the key and acquires it as soon as it is free.
//
// The lock's own watch is a blocking query without a deadline, which a
// silent connection (a partition, a hung agent) holds forever while the
// session expires and another process leads. So while fn runs, RunWith
// also reads the key (consistently, every TTL/5, each read bounded) and
// ends fn's context when the key is held by another session or by none, or
// when no read confirmed it for TTL/2: a cut-off leader stops before its
// session can expire. Releasing the lock and ending the session are
// bounded too (TTL/2), and a campaign is abandoned when ctx ends, so a
// silent connection can neither keep a process from campaigning again nor
// RunWith from returning.
package lock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// Defaults of Options.
const (
	DefaultTTL           = 10 * time.Second // Consul's minimum session TTL
	DefaultLockDelay     = time.Second
	DefaultLockWait      = 5 * time.Second
	DefaultRetryInterval = time.Second
)

// Options tune the election; zero fields take the defaults.
type Options struct {
	// TTL of the leader's session (10s to 24h, Consul's bounds).
	TTL time.Duration
	// LockDelay is how long Consul keeps the key from being acquired
	// after the holder's session is invalidated (not after a release):
	// a margin for the old leader to notice it lost the lock.
	LockDelay time.Duration
	// LockWait is how long each blocking query for the key waits.
	LockWait time.Duration
	// RetryInterval is the pause after an error, or after fn returned on
	// its own, before campaigning again.
	RetryInterval time.Duration
	// Value is stored in the key while held, e.g. the holder's host name,
	// so an operator can see who leads.
	Value []byte
	// SessionName names the session in Consul (default "dora-lock <key>").
	SessionName string
	// Logger receives leadership changes (default slog.Default()).
	Logger *slog.Logger
}

// ErrBadArgs is returned for a nil client or function, an empty key, or
// out-of-range options.
var ErrBadArgs = errors.New("lock: bad arguments")

// Run campaigns for key with the default options; see RunWith.
func Run(ctx context.Context, client *api.Client, key string, fn func(ctx context.Context)) error {
	return RunWith(ctx, client, key, Options{}, fn)
}

// RunWith runs fn while this process holds the lock on key, until ctx ends.
// fn's context is cancelled when the lock is lost or can no longer be
// confirmed (or ctx ends); fn must then return. After fn returns the lock is released and RunWith campaigns
// again, so a leader that loses the lock may lead again later. RunWith
// returns nil when ctx ends, and an error only for bad arguments.
func RunWith(ctx context.Context, client *api.Client, key string, opts Options, fn func(ctx context.Context)) error {
	if client == nil || fn == nil || key == "" {
		return fmt.Errorf("%w: client, key and fn are required", ErrBadArgs)
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.TTL < 10*time.Second || opts.TTL > 24*time.Hour {
		return fmt.Errorf("%w: TTL %v must be between 10s and 24h", ErrBadArgs, opts.TTL)
	}
	if opts.LockDelay <= 0 {
		opts.LockDelay = DefaultLockDelay
	}
	if opts.LockWait <= 0 {
		opts.LockWait = DefaultLockWait
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = DefaultRetryInterval
	}
	if opts.SessionName == "" {
		opts.SessionName = "dora-lock " + key
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	log := opts.Logger.With("component", "lock", "key", key)
	bound := opts.TTL / 2

	for ctx.Err() == nil {
		sess, err := newSession(ctx, client, opts)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			log.Warn("campaigning for the lock: creating a session", "err", err)
			pause(ctx, opts.RetryInterval)
			continue
		}
		l, err := client.LockOpts(&api.LockOptions{
			Key:              key,
			Value:            opts.Value,
			Session:          sess.id,
			LockWaitTime:     opts.LockWait,
			MonitorRetries:   3,
			MonitorRetryTime: time.Second,
		})
		if err != nil {
			sess.end(key, opts.Value, false, bound, log)
			return fmt.Errorf("%w: lock %s: %v", ErrBadArgs, key, err)
		}
		lost, err := acquire(ctx, l, sess, key, opts.Value, bound, log)
		if err != nil {
			log.Warn("campaigning for the lock", "err", err)
			pause(ctx, opts.RetryInterval)
			continue
		}
		if lost == nil { // ctx ended while waiting
			break
		}
		log.Info("acquired the lock: leading")
		wasLost := lead(ctx, lost, func(fctx context.Context, stepDown func()) {
			confirm(fctx, client, key, sess.id, opts.TTL, log, stepDown)
		}, fn)
		sess.end(key, opts.Value, true, bound, log)
		switch {
		case wasLost:
			log.Warn("lost the lock: stopped leading")
		case ctx.Err() == nil:
			log.Warn("leader function returned; released the lock")
			pause(ctx, opts.RetryInterval)
		default:
			log.Info("released the lock")
		}
	}
	return nil
}

// session is one campaign's Consul session. RunWith creates and renews it
// rather than leaving that to api.Lock so that its ID is known (the
// confirming reads compare the key's holder with it) and ending it can be
// bounded: api.Lock's Unlock has no deadline and, while it hangs, keeps
// renewing the session that holds the key.
type session struct {
	client    *api.Client
	id        string
	stopRenew context.CancelFunc // ends the renewals and any in flight
}

// newSession creates a session (the request ends with ctx) and renews it
// every TTL/2 until end.
func newSession(ctx context.Context, client *api.Client, opts Options) (*session, error) {
	id, _, err := client.Session().Create(&api.SessionEntry{
		Name:      opts.SessionName,
		TTL:       opts.TTL.String(),
		LockDelay: opts.LockDelay,
		Behavior:  api.SessionBehaviorRelease,
	}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	rctx, stop := context.WithCancel(context.Background())
	go func() {
		_ = client.Session().RenewPeriodic(opts.TTL.String(), id, (&api.WriteOptions{}).WithContext(rctx), nil)
	}()
	return &session{client: client, id: id, stopRenew: stop}, nil
}

// end stops renewing the session, releases key if held (a release, unlike
// the session's end, lets a successor acquire without the lock delay) and
// destroys the session, all within bound: a request on a silent
// connection is abandoned, and the session, no longer renewed, then
// expires within its TTL, releasing key.
func (s *session) end(key string, value []byte, held bool, bound time.Duration, log *slog.Logger) {
	s.stopRenew()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	w := (&api.WriteOptions{}).WithContext(ctx)
	if held {
		ent := &api.KVPair{Key: key, Value: value, Session: s.id, Flags: api.LockFlagValue}
		if _, _, err := s.client.KV().Release(ent, w); err != nil {
			log.Warn("releasing the lock", "err", err)
		}
	}
	if _, err := s.client.Session().Destroy(s.id, w); err != nil {
		log.Warn("ending the lock's session", "err", err)
	}
}

// acquire runs l.Lock (on sess) until it returns or ctx ends. Lock checks
// its stop channel only between requests, and a request on a silent
// connection never returns; so once ctx ends acquire waits at most bound
// for Lock, then returns (nil, nil) leaving Lock to finish in the
// background. Either way the session is ended (and the key released if
// Lock took it) when Lock returns without a lock to lead with.
func acquire(ctx context.Context, l *api.Lock, sess *session, key string, value []byte, bound time.Duration, log *slog.Logger) (<-chan struct{}, error) {
	type result struct {
		lost <-chan struct{}
		err  error
	}
	res := make(chan result, 1)
	go func() {
		lost, err := l.Lock(ctx.Done())
		res <- result{lost, err}
	}()
	select {
	case r := <-res:
		if r.lost == nil || ctx.Err() != nil {
			sess.end(key, value, r.lost != nil, bound, log)
			return nil, r.err
		}
		return r.lost, nil
	case <-ctx.Done():
	}
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case r := <-res:
		sess.end(key, value, r.lost != nil, bound, log)
	case <-t.C:
		log.Warn("campaigning for the lock: no answer after the context ended; abandoned", "after", bound)
		go func() {
			r := <-res
			sess.end(key, value, r.lost != nil, bound, log)
		}()
	}
	return nil, nil
}

// lead runs fn until it returns, cancelling its context when the lock is
// lost, when confirm calls its stepDown, or when ctx ends. confirm runs
// alongside fn with fn's context and must return when that ends. lead
// reports whether the lock was lost.
func lead(ctx context.Context, lost <-chan struct{}, confirm func(ctx context.Context, stepDown func()), fn func(ctx context.Context)) bool {
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stepped := make(chan struct{})
	confirmed := make(chan struct{})
	go func() {
		defer close(confirmed)
		var once sync.Once
		confirm(fctx, func() { once.Do(func() { close(stepped) }) })
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(fctx)
	}()
	wasLost := false
	select {
	case <-done:
	case <-ctx.Done():
	case <-lost:
		wasLost = true
	case <-stepped:
		wasLost = true
	}
	cancel()
	<-done
	<-confirmed
	return wasLost
}

// confirm reads key every ttl/5 until ctx ends and calls stepDown (then
// returns) when a read shows the key held by another session than
// session or by none, or when none confirmed it for ttl/2.
func confirm(ctx context.Context, client *api.Client, key, session string, ttl time.Duration, log *slog.Logger, stepDown func()) {
	every, budget := ttl/5, ttl/2
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
		kv, _, err := client.KV().Get(key, (&api.QueryOptions{RequireConsistent: true}).WithContext(rctx))
		cancel()
		if ctx.Err() != nil {
			return
		}
		var holder string
		if err == nil && kv != nil {
			holder = kv.Session
		}
		var v verdict
		confirmed, v = judge(time.Now(), start, confirmed, budget, session, holder, err)
		switch v {
		case taken:
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
	taken                      // another session holds the key, or none
	unconfirmed                // no read confirmed the lock for the budget
)

// judge decides on a read of the lock key started at start that found
// holder (or failed with err), given the leader's session, when it was
// last confirmed and for how long it may stay unconfirmed. It returns the
// new confirmation time and the verdict.
func judge(now, start, confirmed time.Time, budget time.Duration, session, holder string, err error) (time.Time, verdict) {
	switch {
	case err != nil:
		if now.Sub(confirmed) >= budget {
			return confirmed, unconfirmed
		}
		return confirmed, held
	case holder != session:
		return confirmed, taken
	}
	return start, held
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
