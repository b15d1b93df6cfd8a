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
	"context"
	"log/slog"

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
// A leader cut off from Consul (a silent connection: a partition, a hung
// agent) stops before its session can expire: while fn runs, the lock
// reads the key every TTL/5 (each read bounded) and ends fn's context when
// another session or none holds it, or when no read confirmed it for
// TTL/2 (see autoscaler/lock).
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
	return lock.RunWith(ctx, c.Client, c.Key, opts, fn)
}
