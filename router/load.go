package router

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/doraproject/dora/autoscaler/load"
	"github.com/doraproject/dora/pool"
)

// loadKey converts a pool key to a load key (the same triple).
func loadKey(k pool.Key) load.Key {
	return load.Key{Ufop: k.Ufop, Version: k.Version, Region: k.Region}
}

// loadCounter holds one key's figures, updated with atomics only.
//
// The time-weighted average concurrency over [T0, T1] is A(T1)-A(T0)
// divided by T1-T0, where A(T) is the area under the in-flight curve since
// the counter's base time: A(T) = done + inflight*T - sumStart (done: the
// summed durations of finished calls; sumStart: the summed start times of
// calls in flight). Each term is one atomic, so begin and end never lock;
// a flush that reads them while a call ends is off by that call for one
// second, and the error cancels in the next window (A telescopes).
type loadCounter struct {
	key       load.Key
	inflight  atomic.Int64
	sumStart  atomic.Int64 // µs since base
	done      atomic.Int64 // µs
	completed atomic.Int64
	waiting   atomic.Int64 // requests refused for want of an instance, this second
	held      atomic.Int64 // requests waiting for an instance now (hold.go)
	active    atomic.Int64 // unix seconds of the last begin or waiting
	lastWake  atomic.Int64 // unix nanoseconds of the last wake-up sent (hold.go)
	// answered: a wait of key ended with an instance since the last
	// wake-up sent, so the next wait that starts may wake at once (hold.go).
	answered atomic.Bool

	// flush loop state
	prevA         int64
	prevCompleted int64
}

// loadCall is one call's start, handed back to end.
type loadCall struct {
	c     *loadCounter
	start int64 // µs since base
}

type loadCounters struct {
	base time.Time
	m    sync.Map // load.Key → *loadCounter

	dropped atomic.Int64 // flushes dropped: recorder slow
	failed  atomic.Int64 // Record errors
	logged  atomic.Bool
}

func newLoadCounters(base time.Time) *loadCounters { return &loadCounters{base: base} }

func (l *loadCounters) us(t time.Time) int64 { return t.Sub(l.base).Microseconds() }

func (l *loadCounters) counter(k load.Key) *loadCounter {
	if c, ok := l.m.Load(k); ok {
		return c.(*loadCounter)
	}
	c, _ := l.m.LoadOrStore(k, &loadCounter{key: k})
	return c.(*loadCounter)
}

// begin records a call to k starting at now.
func (l *loadCounters) begin(k load.Key, now time.Time) loadCall {
	c := l.counter(k)
	s := l.us(now)
	c.sumStart.Add(s)
	c.inflight.Add(1)
	c.active.Store(now.Unix())
	return loadCall{c: c, start: s}
}

// end records the end of a call begun with begin.
func (l *loadCounters) end(call loadCall, now time.Time) {
	c := call.c
	e := l.us(now)
	c.done.Add(e - call.start)
	c.inflight.Add(-1)
	c.sumStart.Add(-call.start)
	c.completed.Add(1)
}

// waiting records a request refused because k had no instance: demand the
// autoscaler sees as Waiting (scale from zero).
func (l *loadCounters) waiting(k load.Key, now time.Time) {
	c := l.counter(k)
	c.waiting.Add(1)
	c.active.Store(now.Unix())
}

// area is A(t) in µs².
func (c *loadCounter) area(t int64) int64 {
	return c.done.Load() + c.inflight.Load()*t - c.sumStart.Load()
}

// snapshot computes the samples of every key for the window ending at now
// and starting at prev, and forgets keys idle for ten minutes.
func (l *loadCounters) snapshot(prev, now time.Time) []load.Sample {
	t0, t1 := l.us(prev), l.us(now)
	span := float64(t1 - t0)
	var out []load.Sample
	l.m.Range(func(k, v any) bool {
		c := v.(*loadCounter)
		a := c.area(t1)
		completed := c.completed.Load()
		s := load.Sample{
			Key:       c.key,
			Time:      prev.Truncate(time.Second),
			Completed: completed - c.prevCompleted,
			Waiting:   c.waiting.Swap(0) + c.held.Load(),
		}
		if span > 0 {
			s.Concurrency = max(float64(a-c.prevA)/span, 0)
		}
		c.prevA, c.prevCompleted = a, completed
		out = append(out, s)
		if c.inflight.Load() == 0 && c.held.Load() == 0 && now.Unix()-c.active.Load() > 600 {
			l.m.Delete(k)
		}
		return true
	})
	return out
}

// runLoad computes samples every second (aligned on the second) and hands
// them to a recorder goroutine; when that one is still busy the samples
// are dropped and counted, so neither requests nor this loop ever wait on
// the load store.
func (r *Router) runLoad(ctx context.Context) {
	batches := make(chan []load.Sample, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case b := <-batches:
				r.record(ctx, b)
			}
		}
	})
	now := r.now()
	prev := now
	timer := time.NewTimer(now.Truncate(time.Second).Add(time.Second).Sub(now))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		now = r.now()
		samples := r.load.snapshot(prev, now)
		prev = now
		timer.Reset(now.Truncate(time.Second).Add(time.Second).Sub(now))
		if r.cfg.Load == nil || len(samples) == 0 {
			continue
		}
		select {
		case batches <- samples:
		default:
			r.load.dropped.Add(1)
			r.metrics.loadDropped.Inc()
			r.logLoadOnce("load recorder too slow; dropping samples")
		}
	}
}

func (r *Router) record(ctx context.Context, samples []load.Sample) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := r.cfg.Load.Record(rctx, samples); err != nil && ctx.Err() == nil {
		r.load.failed.Add(1)
		r.metrics.loadFailed.Inc()
		r.logLoadOnce("load recorder failed; samples dropped", "err", err)
	}
}

// logLoadOnce logs the first load-recording problem only (the counters
// and metrics keep counting).
func (r *Router) logLoadOnce(msg string, args ...any) {
	if r.load.logged.CompareAndSwap(false, true) {
		r.log.Warn(msg, args...)
	}
}
