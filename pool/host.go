package pool

import (
	"sync/atomic"
	"time"
)

// Host is one instance as the pool tracks it: its requests in flight and its
// connect-failure state. Every method is lock-free and safe for concurrent
// use. A Host outlives the snapshot it came from: End and ConnectFailed on a
// host that discovery has since dropped are harmless.
type Host struct {
	inst Instance
	id   string // identity across updates: inst.ID, or inst.Addr when empty
	opts *Options

	inFlight atomic.Int64
	// fails counts connect failures since the last success or ejection.
	fails atomic.Int32
	// strikes counts ejections since the last success; it sets the next
	// ejection's length and puts the host on probation (see ConnectFailed).
	strikes atomic.Int32
	// ejectedUntil is the end of the current ejection in Unix nanoseconds;
	// the host is available once now >= ejectedUntil (0: never ejected).
	ejectedUntil atomic.Int64
}

// Instance returns the instance this host stands for.
func (h *Host) Instance() Instance { return h.inst }

// Begin records a request sent to the host (in-flight + 1). Every Begin must
// be matched by one End.
func (h *Host) Begin() { h.inFlight.Add(1) }

// End records the end of a request begun with Begin (in-flight - 1).
func (h *Host) End() { h.inFlight.Add(-1) }

// InFlight returns the number of requests in flight on the host.
func (h *Host) InFlight() int64 { return h.inFlight.Load() }

// ConnectFailed records a failure to connect to the host at now. After
// EjectAfter failures in a row the host is ejected (Pick skips it) for
// BaseEjection, doubling with every further ejection up to MaxEjection.
//
// A host whose ejection has ended but that has not succeeded since is on
// probation: a single connect failure ejects it again, for twice as long, so
// a dead instance costs one failed connect per backoff period rather than
// EjectAfter. Failures reported while the host is ejected (requests begun
// before the ejection) are ignored: they belong to the failure already
// counted.
func (h *Host) ConnectFailed(now time.Time) {
	t := now.UnixNano()
	if !h.available(t) {
		return
	}
	n := h.fails.Add(1)
	threshold := int32(h.opts.EjectAfter)
	if h.strikes.Load() > 0 {
		threshold = 1
	}
	if n < threshold {
		return
	}
	// Of the goroutines that crossed the threshold together, exactly one
	// wins the reset and ejects.
	if !h.fails.CompareAndSwap(n, 0) {
		return
	}
	strikes := h.strikes.Add(1)
	h.ejectedUntil.Store(t + int64(ejection(h.opts.BaseEjection, h.opts.MaxEjection, int(strikes)-1)))
}

// Succeeded records a request that reached the host: it clears the failure
// count and the backoff (the next ejection, if any, starts at BaseEjection).
// It does not cut short an ejection in progress. Cheap when there is nothing
// to clear, as on the hot path.
func (h *Host) Succeeded() {
	if h.fails.Load() != 0 {
		h.fails.Store(0)
	}
	if h.strikes.Load() != 0 {
		h.strikes.Store(0)
	}
}

// Ejected reports whether the host is ejected at now.
func (h *Host) Ejected(now time.Time) bool { return !h.available(now.UnixNano()) }

// EjectedUntil returns when the current or last ejection ends (zero time if
// the host was never ejected).
func (h *Host) EjectedUntil() time.Time {
	t := h.ejectedUntil.Load()
	if t == 0 {
		return time.Time{}
	}
	return time.Unix(0, t)
}

func (h *Host) available(nowNano int64) bool { return nowNano >= h.ejectedUntil.Load() }

// ejection returns the length of ejection number n (0-based): base doubled n
// times, capped at max.
func ejection(base, max time.Duration, n int) time.Duration {
	d := base
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}
