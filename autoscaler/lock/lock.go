// Package lock elects one leader among several processes with a Consul
// lock, so that of several `dorad autoscaler` processes exactly one acts and
// the others take over when it goes away.
//
// The leader holds a Consul session (renewed every TTL/2) locking one KV
// key. A leader that stops releases the key at once; one that dies loses it
// when Consul invalidates its session (after the TTL, which Consul may
// stretch up to twice) plus the lock delay. A contender waits in a blocking
// query on the key and acquires it as soon as it is free.
package lock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
// fn's context is cancelled when the lock is lost (or ctx ends); fn must
// then return. After fn returns the lock is released and RunWith campaigns
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

	for ctx.Err() == nil {
		l, err := client.LockOpts(&api.LockOptions{
			Key:              key,
			Value:            opts.Value,
			SessionName:      opts.SessionName,
			SessionTTL:       opts.TTL.String(),
			LockWaitTime:     opts.LockWait,
			LockDelay:        opts.LockDelay,
			MonitorRetries:   3,
			MonitorRetryTime: time.Second,
		})
		if err != nil {
			return fmt.Errorf("%w: lock %s: %v", ErrBadArgs, key, err)
		}
		lost, err := l.Lock(ctx.Done())
		if err != nil {
			log.Warn("campaigning for the lock", "err", err)
			pause(ctx, opts.RetryInterval)
			continue
		}
		if lost == nil { // ctx ended while waiting
			break
		}
		log.Info("acquired the lock: leading")
		wasLost := lead(ctx, lost, fn)
		if err := l.Unlock(); err != nil && !errors.Is(err, api.ErrLockNotHeld) {
			log.Warn("releasing the lock", "err", err)
		}
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

// lead runs fn until it returns, cancelling its context when the lock is
// lost or ctx ends. It reports whether the lock was lost.
func lead(ctx context.Context, lost <-chan struct{}, fn func(ctx context.Context)) bool {
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(fctx)
	}()
	select {
	case <-done:
		return false
	case <-ctx.Done():
		cancel()
		<-done
		return false
	case <-lost:
		cancel()
		<-done
		return true
	}
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
