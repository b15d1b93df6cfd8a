// Package memory is the embedded load store: load.Store in process memory,
// for `dorad dev` where router and autoscaler share one process.
//
// Definitions, in terms of package load (the contract suite
// autoscaler/load/loadtest asserts each of them):
//
//   - A Sample belongs to the second its Time falls in (Time truncated to
//     the second, in Unix seconds). Samples of the same Key and second add
//     up field by field: several routers' figures make the total load.
//   - A window of length W ending at now holds the n = W/time.Second whole
//     seconds end-n … end-1, where end is now truncated to the second. The
//     second in progress (end) and later ones are excluded: their figures
//     are incomplete.
//   - Averages.Stable and Averages.Panic are the summed Concurrency of the
//     window's seconds divided by n: a second without a sample counts as 0.
//   - Averages.StableSeconds and Averages.PanicSeconds count only the
//     window's seconds that have at least one sample (0 means no data).
//   - Averages.Waiting is the summed Waiting of the latest second of the
//     panic window that has a sample.
//   - A second s is dropped once s+retention <= now: Averages ignores it
//     (with its now argument), and Record frees the seconds past retention
//     relative to the newest second of the samples it is given. The store
//     never reads the wall clock, so tests may drive it with a fake one; in
//     one process all samples come from one clock, so the newest second of
//     a Record is "now" (also after that clock stepped back).
//   - Invalid samples (empty Key.Ufop, zero Time, NaN, infinite or negative
//     figures) make Record fail without recording anything; windows shorter
//     than a second or longer than MaxWindow make Averages fail.
package memory

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/doraproject/dora/autoscaler/load"
)

// MaxWindow is the longest window Averages accepts.
const MaxWindow = time.Hour

// ErrInvalid is wrapped by every error about a bad sample or window.
var ErrInvalid = errors.New("load: invalid input")

var _ load.Store = (*Store)(nil)

// bucket is the summed figures of one key for one second.
type bucket struct {
	concurrency float64
	completed   int64
	waiting     int64
}

// Store keeps per-second buckets per key in memory. Safe for concurrent use.
type Store struct {
	retention time.Duration

	mu        sync.Mutex
	keys      map[load.Key]map[int64]*bucket // key → unix second → figures
	lastPrune int64                          // newest second of the Record that pruned last

	wake wakers // Wake/Wakes listeners (wake.go)
}

// New returns an empty store that keeps each second for retention (at
// least one second; values below are raised to one second).
func New(retention time.Duration) *Store {
	if retention < time.Second {
		retention = time.Second
	}
	return &Store{retention: retention, keys: map[load.Key]map[int64]*bucket{}}
}

// ValidateSample reports what is wrong with s, if anything. Other load
// stores use it to refuse the same input.
func ValidateSample(s load.Sample) error {
	switch {
	case s.Key.Ufop == "":
		return fmt.Errorf("%w: sample without ufop", ErrInvalid)
	case s.Time.IsZero():
		return fmt.Errorf("%w: sample for %s without time", ErrInvalid, s.Key.Ufop)
	case math.IsNaN(s.Concurrency) || math.IsInf(s.Concurrency, 0) || s.Concurrency < 0:
		return fmt.Errorf("%w: sample for %s: concurrency %v", ErrInvalid, s.Key.Ufop, s.Concurrency)
	case s.Completed < 0:
		return fmt.Errorf("%w: sample for %s: completed %d", ErrInvalid, s.Key.Ufop, s.Completed)
	case s.Waiting < 0:
		return fmt.Errorf("%w: sample for %s: waiting %d", ErrInvalid, s.Key.Ufop, s.Waiting)
	}
	return nil
}

// WindowSeconds returns the number of whole seconds of a window, or an
// error when it is shorter than a second or longer than MaxWindow.
func WindowSeconds(name string, w time.Duration) (int64, error) {
	if w < time.Second || w > MaxWindow {
		return 0, fmt.Errorf("%w: %s window %v (want 1s to %v)", ErrInvalid, name, w, MaxWindow)
	}
	return int64(w / time.Second), nil
}

// Record adds the samples to their seconds. It never blocks on anything but
// the store's own lock.
func (s *Store) Record(ctx context.Context, samples []load.Sample) error {
	for i, smp := range samples {
		if err := ValidateSample(smp); err != nil {
			return fmt.Errorf("record sample %d: %w", i, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	if len(samples) == 0 {
		return nil
	}
	// Retention counts from the newest second of this call, not of all
	// calls so far: after the clock stepped back, the seconds recorded
	// while it ran ahead would make every new one look expired.
	newest := samples[0].Time.Unix()
	for _, smp := range samples {
		newest = max(newest, smp.Time.Unix())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, smp := range samples {
		sec := smp.Time.Unix()
		if s.expired(sec, time.Unix(newest, 0)) {
			continue
		}
		secs := s.keys[smp.Key]
		if secs == nil {
			secs = map[int64]*bucket{}
			s.keys[smp.Key] = secs
		}
		b := secs[sec]
		if b == nil {
			b = &bucket{}
			secs[sec] = b
		}
		b.concurrency += smp.Concurrency
		b.completed += smp.Completed
		b.waiting += smp.Waiting
	}
	if newest != s.lastPrune { // at most one pass per new second
		s.lastPrune = newest
		s.pruneLocked(newest)
	}
	return nil
}

// expired reports whether second sec is past retention at now.
func (s *Store) expired(sec int64, now time.Time) bool {
	return !time.Unix(sec, 0).Add(s.retention).After(now)
}

// pruneLocked frees the seconds past retention relative to second newest.
// Seconds after it (recorded before the clock stepped back) stay until
// they expire in turn.
func (s *Store) pruneLocked(newest int64) {
	at := time.Unix(newest, 0)
	for k, secs := range s.keys {
		for sec := range secs {
			if s.expired(sec, at) {
				delete(secs, sec)
			}
		}
		if len(secs) == 0 {
			delete(s.keys, k)
		}
	}
}

// Averages computes the windowed figures of key ending at now.
func (s *Store) Averages(ctx context.Context, key load.Key, now time.Time, stable, panic time.Duration) (load.Averages, error) {
	ns, err := WindowSeconds("stable", stable)
	if err != nil {
		return load.Averages{}, fmt.Errorf("averages of %s: %w", key.Ufop, err)
	}
	np, err := WindowSeconds("panic", panic)
	if err != nil {
		return load.Averages{}, fmt.Errorf("averages of %s: %w", key.Ufop, err)
	}
	if err := ctx.Err(); err != nil {
		return load.Averages{}, fmt.Errorf("averages of %s: %w", key.Ufop, err)
	}
	end := now.Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	secs := s.keys[key]
	return Compute(end, ns, np, func(sec int64) (float64, int64, bool) {
		if s.expired(sec, now) {
			return 0, 0, false
		}
		b := secs[sec]
		if b == nil {
			return 0, 0, false
		}
		return b.concurrency, b.waiting, true
	}), nil
}

// Compute applies the window definitions of the package doc: end is now
// in Unix seconds, ns and np the stable and panic window lengths in
// seconds, and at returns a second's summed concurrency and waiting and
// whether it has data. Other load stores share it so that every backend
// computes the same figures.
func Compute(end, ns, np int64, at func(sec int64) (concurrency float64, waiting int64, ok bool)) load.Averages {
	var a load.Averages
	var stableSum, panicSum float64
	waitingFound := false
	n := max(ns, np)
	for i := int64(1); i <= n; i++ { // newest first
		sec := end - i
		c, w, ok := at(sec)
		if !ok {
			continue
		}
		if i <= ns {
			stableSum += c
			a.StableSeconds++
		}
		if i <= np {
			panicSum += c
			a.PanicSeconds++
			if !waitingFound {
				a.Waiting = w
				waitingFound = true
			}
		}
	}
	a.Stable = stableSum / float64(ns)
	a.Panic = panicSum / float64(np)
	return a
}

// Seconds returns how many (key, second) buckets the store holds; for
// tests and metrics.
func (s *Store) Seconds() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, secs := range s.keys {
		n += len(secs)
	}
	return n
}
