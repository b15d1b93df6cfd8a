// Package tick runs a function at a fixed period until a context ends: the
// loop every background job of the platform (build heartbeats, deferred
// applies, metric sampling, idle sweeps) otherwise writes out by hand.
package tick

import (
	"context"
	"time"
)

// Every calls fn once per period d, the first time d after the call, and
// returns when ctx ends. A call of fn that outlasts d delays the next one
// (ticks are dropped, never queued). fn should honour ctx itself if it
// waits. d must be positive, as for time.NewTicker.
func Every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ctx.Err() != nil {
			return
		}
		fn()
	}
}
