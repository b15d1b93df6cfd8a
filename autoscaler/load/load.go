// Package load carries the router's load figures to the autoscaler: each
// router records one sample per second per pool; the autoscaler reads
// windowed averages.
//
// Implementations: autoscaler/load/memory (embedded) and
// autoscaler/load/redis (production). Both pass the contract suite in
// autoscaler/load/loadtest.
package load

import (
	"context"
	"time"
)

// Key names the load of one deployment: a ufop version in a region.
type Key struct {
	Ufop    string
	Version string
	Region  string
}

// Sample is one router's figures for one key over one second.
type Sample struct {
	Key  Key
	Time time.Time // the second the sample covers (truncated to the second)
	// Concurrency is the time-weighted average number of in-flight
	// requests during that second.
	Concurrency float64
	// Completed counts requests that finished during that second.
	Completed int64
	// Waiting is the number of requests held because no instance was
	// available (scale-from-zero demand) at the end of the second.
	Waiting int64
}

// Averages are the figures the autoscaler decides on. Samples of several
// routers for the same second add up.
type Averages struct {
	Stable float64 // average concurrency over the stable window
	Panic  float64 // average concurrency over the panic window
	// StableSeconds and PanicSeconds count the seconds of each window
	// that had at least one sample; 0 means no data.
	StableSeconds int
	PanicSeconds  int
	// Waiting is the latest Waiting figure within the panic window.
	Waiting int64
}

// Recorder receives samples. Record must not block the request path: the
// router calls it from its flush loop, never from a request.
type Recorder interface {
	Record(ctx context.Context, samples []Sample) error
}

// Reader computes windowed averages ending at now.
type Reader interface {
	Averages(ctx context.Context, key Key, now time.Time, stable, panic time.Duration) (Averages, error)
}

// Store is both ends of the load store.
type Store interface {
	Recorder
	Reader
}

// Waker carries scale-from-zero wake-ups from the routers to the
// autoscaler at once, Knative activator style: a router that holds a
// request for a deployment without instances calls Wake, and the
// autoscaler, which listens on Wakes, evaluates that deployment at once
// instead of at its next tick. A load store may implement it; wake-ups
// are best effort (the Waiting figures still reach the next tick).
type Waker interface {
	// Wake announces demand for key that found no instance.
	Wake(ctx context.Context, key Key) error
	// Wakes delivers the keys woken from now on until ctx ends (then the
	// channel closes). A slow reader may miss wake-ups, never blocks Wake.
	Wakes(ctx context.Context) <-chan Key
}
