// Package loadtest is the contract suite every load.Store implementation
// must pass. It pins down the exact meaning of load.Averages:
//
//   - A sample belongs to the second its Time falls in (Time truncated to
//     the second). Samples for the same Key and second add up field by field,
//     whether they come from one Record call or from several routers.
//   - A window of length W "ending at now" is the n = W/time.Second (whole
//     seconds, W rounded down) seconds end-n … end-1, where end is now
//     truncated to the second. The second in progress at now (end) is not
//     part of it, nor is anything later: its figures are not complete yet.
//   - Stable (Panic) is the sum of Concurrency over the seconds of the
//     stable (panic) window divided by n: a second without any sample counts
//     as concurrency 0.
//   - StableSeconds (PanicSeconds) counts the seconds of the window that have
//     at least one sample, so 0 means "no data", not "idle".
//   - Waiting is the summed Waiting of the latest second of the panic window
//     that has a sample (0 when none has).
//   - Retention: a second s is dropped once s+retention <= now; the reader
//     ignores it from then on even if the backend has not yet reclaimed it.
//     Samples already past retention when recorded are dropped.
//   - Bad input is refused with an error and records nothing: Record checks
//     every sample (non-empty Key.Ufop, non-zero Time, finite non-negative
//     Concurrency, non-negative Completed and Waiting) before writing any;
//     Averages refuses windows shorter than one second.
//
// Because the Redis backend expires keys on the server's clock, the suite
// places its samples around time.Now().
package loadtest

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doraproject/dora/autoscaler/load"
)

// Retention is the retention the suite opens its stores with, except in
// the retention test.
const Retention = 10 * time.Minute

// Open returns a new, empty load store keeping data for retention. Stores
// opened for different subtests must not see each other's data.
type Open func(t *testing.T, retention time.Duration) load.Store

// keySeq makes keys unique across subtests (a shared backend is fine).
var keySeq atomic.Int64

func newKey(name string) load.Key {
	return load.Key{Ufop: fmt.Sprintf("%s-%d", name, keySeq.Add(1)), Version: "1", Region: "z0"}
}

// Run runs the contract suite.
func Run(t *testing.T, open Open) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, open Open)
	}{
		{"Empty", testEmpty},
		{"Windows", testWindows},
		{"RoutersAddUp", testRoutersAddUp},
		{"KeysAreSeparate", testKeysSeparate},
		{"Retention", testRetention},
		{"InvalidInput", testInvalid},
		{"ConcurrentRecord", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// base is the current second, so backends that expire on a real clock keep
// the suite's samples.
func base() time.Time { return time.Now().Truncate(time.Second) }

func approx(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func checkAverages(t *testing.T, what string, got, want load.Averages) {
	t.Helper()
	if !approx(got.Stable, want.Stable) || !approx(got.Panic, want.Panic) ||
		got.StableSeconds != want.StableSeconds || got.PanicSeconds != want.PanicSeconds ||
		got.Waiting != want.Waiting {
		t.Errorf("%s: Averages = %+v, want %+v", what, got, want)
	}
}

func record(t *testing.T, s load.Store, samples ...load.Sample) {
	t.Helper()
	if err := s.Record(ctxT(t), samples); err != nil {
		t.Fatalf("Record: %v", err)
	}
}

func averages(t *testing.T, s load.Store, k load.Key, now time.Time, stable, panic time.Duration) load.Averages {
	t.Helper()
	a, err := s.Averages(ctxT(t), k, now, stable, panic)
	if err != nil {
		t.Fatalf("Averages: %v", err)
	}
	return a
}

func testEmpty(t *testing.T, open Open) {
	s := open(t, Retention)
	a := averages(t, s, newKey("empty"), time.Now(), time.Minute, 6*time.Second)
	checkAverages(t, "no data", a, load.Averages{})
	if err := s.Record(ctxT(t), nil); err != nil {
		t.Fatalf("Record(nil): %v", err)
	}
}

// sample at offset seconds from end (negative: before it).
type at struct {
	sec         int
	frac        time.Duration // within the second
	concurrency float64
	waiting     int64
}

func testWindows(t *testing.T, open Open) {
	cases := []struct {
		name    string
		samples []at
		nowFrac time.Duration // now = end + nowFrac
		stable  time.Duration
		panic   time.Duration
		want    load.Averages
	}{
		{
			name:    "two recent seconds",
			samples: []at{{sec: -1, concurrency: 6}, {sec: -2, concurrency: 6}},
			stable:  60 * time.Second, panic: 6 * time.Second,
			want: load.Averages{Stable: 12.0 / 60, Panic: 12.0 / 6, StableSeconds: 2, PanicSeconds: 2},
		},
		{
			name:    "second in progress and later ones are not counted",
			samples: []at{{sec: 0, concurrency: 100}, {sec: 1, concurrency: 100}, {sec: -1, concurrency: 3}},
			nowFrac: 900 * time.Millisecond,
			stable:  60 * time.Second, panic: 6 * time.Second,
			want: load.Averages{Stable: 3.0 / 60, Panic: 3.0 / 6, StableSeconds: 1, PanicSeconds: 1},
		},
		{
			name: "panic window edges",
			samples: []at{
				{sec: -6, concurrency: 6},  // oldest second of the panic window
				{sec: -7, concurrency: 60}, // just before it, still in the stable window
			},
			stable: 60 * time.Second, panic: 6 * time.Second,
			want: load.Averages{Stable: 66.0 / 60, Panic: 6.0 / 6, StableSeconds: 2, PanicSeconds: 1},
		},
		{
			name: "stable window edges",
			samples: []at{
				{sec: -60, concurrency: 30},
				{sec: -61, concurrency: 1000},
			},
			stable: 60 * time.Second, panic: 6 * time.Second,
			want: load.Averages{Stable: 30.0 / 60, StableSeconds: 1},
		},
		{
			name:    "windows round down to whole seconds",
			samples: []at{{sec: -3, concurrency: 4}, {sec: -2, concurrency: 2}},
			stable:  2500 * time.Millisecond, panic: 1999 * time.Millisecond,
			want: load.Averages{Stable: 2.0 / 2, Panic: 0, StableSeconds: 1, PanicSeconds: 0},
		},
		{
			name:    "every second of the window",
			samples: []at{{sec: -1, concurrency: 1}, {sec: -2, concurrency: 2}, {sec: -3, concurrency: 3}},
			stable:  3 * time.Second, panic: 3 * time.Second,
			want: load.Averages{Stable: 2, Panic: 2, StableSeconds: 3, PanicSeconds: 3},
		},
		{
			name: "waiting is the latest second with data in the panic window",
			samples: []at{
				{sec: -4, waiting: 5, concurrency: 1},
				{sec: -3, waiting: 2, frac: 100 * time.Millisecond},
				{sec: -3, waiting: 1, frac: 800 * time.Millisecond}, // another router, same second
				{sec: 0, waiting: 100},                              // in progress: not counted
			},
			stable: 60 * time.Second, panic: 6 * time.Second,
			want: load.Averages{Stable: 1.0 / 60, Panic: 1.0 / 6, StableSeconds: 2, PanicSeconds: 2, Waiting: 3},
		},
		{
			name:    "a latest second with waiting 0 wins",
			samples: []at{{sec: -3, waiting: 7}, {sec: -1, waiting: 0, concurrency: 0}},
			stable:  60 * time.Second, panic: 6 * time.Second,
			want: load.Averages{StableSeconds: 2, PanicSeconds: 2, Waiting: 0},
		},
		{
			name:    "waiting outside the panic window is ignored",
			samples: []at{{sec: -7, waiting: 9, concurrency: 6}},
			stable:  60 * time.Second, panic: 6 * time.Second,
			want: load.Averages{Stable: 6.0 / 60, StableSeconds: 1},
		},
		{
			name:    "idle seconds with samples count as data",
			samples: []at{{sec: -1}, {sec: -2}},
			stable:  60 * time.Second, panic: 6 * time.Second,
			want: load.Averages{StableSeconds: 2, PanicSeconds: 2},
		},
		{
			name:    "fractional concurrency",
			samples: []at{{sec: -1, concurrency: 0.25}, {sec: -1, concurrency: 0.5}, {sec: -5, concurrency: 1.25}},
			stable:  10 * time.Second, panic: 5 * time.Second,
			want: load.Averages{Stable: 2.0 / 10, Panic: 2.0 / 5, StableSeconds: 2, PanicSeconds: 2},
		},
	}
	s := open(t, Retention)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := newKey("win")
			end := base()
			var samples []load.Sample
			for _, x := range tc.samples {
				samples = append(samples, load.Sample{
					Key:         k,
					Time:        end.Add(time.Duration(x.sec)*time.Second + x.frac),
					Concurrency: x.concurrency,
					Completed:   1,
					Waiting:     x.waiting,
				})
			}
			record(t, s, samples...)
			got := averages(t, s, k, end.Add(tc.nowFrac), tc.stable, tc.panic)
			checkAverages(t, tc.name, got, tc.want)
		})
	}
}

func testRoutersAddUp(t *testing.T, open Open) {
	s := open(t, Retention)
	k := newKey("sum")
	end := base()
	sec := end.Add(-2 * time.Second)
	// Two routers, two Record calls, different instants of the same second.
	record(t, s, load.Sample{Key: k, Time: sec.Add(10 * time.Millisecond), Concurrency: 1.5, Completed: 3, Waiting: 1})
	record(t, s, load.Sample{Key: k, Time: sec.Add(990 * time.Millisecond), Concurrency: 2.5, Completed: 4, Waiting: 2})
	// And a third in one call with another second.
	record(t, s,
		load.Sample{Key: k, Time: sec, Concurrency: 2, Waiting: 3},
		load.Sample{Key: k, Time: end.Add(-time.Second), Concurrency: 6},
	)
	got := averages(t, s, k, end, 4*time.Second, 2*time.Second)
	checkAverages(t, "summed", got, load.Averages{
		Stable: (1.5 + 2.5 + 2 + 6) / 4, Panic: (1.5 + 2.5 + 2 + 6) / 2,
		StableSeconds: 2, PanicSeconds: 2, Waiting: 0,
	})
	got = averages(t, s, k, end.Add(-time.Second), 4*time.Second, 2*time.Second)
	checkAverages(t, "summed, one second earlier", got, load.Averages{
		Stable: 6.0 / 4, Panic: 6.0 / 2, StableSeconds: 1, PanicSeconds: 1, Waiting: 6,
	})
}

func testKeysSeparate(t *testing.T, open Open) {
	s := open(t, Retention)
	k := newKey("sep")
	others := []load.Key{
		{Ufop: k.Ufop, Version: "2", Region: k.Region},
		{Ufop: k.Ufop, Version: k.Version, Region: "z1"},
		{Ufop: k.Ufop + "x", Version: k.Version, Region: k.Region},
		{Ufop: k.Ufop, Version: k.Version + ":" + k.Region, Region: ""}, // separator confusion
	}
	end := base()
	sec := end.Add(-time.Second)
	record(t, s, load.Sample{Key: k, Time: sec, Concurrency: 1, Waiting: 1})
	for i, o := range others {
		record(t, s, load.Sample{Key: o, Time: sec, Concurrency: float64(10 * (i + 1)), Waiting: 50})
	}
	got := averages(t, s, k, end, 2*time.Second, time.Second)
	checkAverages(t, "own key only", got, load.Averages{Stable: 0.5, Panic: 1, StableSeconds: 1, PanicSeconds: 1, Waiting: 1})
	for i, o := range others {
		got := averages(t, s, o, end, time.Second, time.Second)
		c := float64(10 * (i + 1))
		checkAverages(t, fmt.Sprintf("other key %+v", o), got, load.Averages{Stable: c, Panic: c, StableSeconds: 1, PanicSeconds: 1, Waiting: 50})
	}
}

func testRetention(t *testing.T, open Open) {
	const retention = 30 * time.Second
	s := open(t, retention)
	k := newKey("ret")
	end := base()
	record(t, s,
		load.Sample{Key: k, Time: end.Add(-45 * time.Second), Concurrency: 100, Waiting: 9}, // already expired
		load.Sample{Key: k, Time: end.Add(-20 * time.Second), Concurrency: 10},
		load.Sample{Key: k, Time: end.Add(-5 * time.Second), Concurrency: 20, Waiting: 4},
	)
	got := averages(t, s, k, end, 60*time.Second, 6*time.Second)
	checkAverages(t, "at end", got, load.Averages{Stable: 30.0 / 60, Panic: 20.0 / 6, StableSeconds: 2, PanicSeconds: 1, Waiting: 4})

	// 15 s later the -20 s second has passed retention (-20+30 <= +15)...
	got = averages(t, s, k, end.Add(15*time.Second), 60*time.Second, 6*time.Second)
	checkAverages(t, "15 s later", got, load.Averages{Stable: 20.0 / 60, StableSeconds: 1})
	// ... and 25 s later everything has.
	got = averages(t, s, k, end.Add(25*time.Second), 60*time.Second, 60*time.Second)
	checkAverages(t, "25 s later", got, load.Averages{})
}

func testInvalid(t *testing.T, open Open) {
	s := open(t, Retention)
	k := newKey("bad")
	end := base()
	good := load.Sample{Key: k, Time: end.Add(-time.Second), Concurrency: 1}
	bad := []struct {
		name   string
		sample load.Sample
	}{
		{"NaN concurrency", load.Sample{Key: k, Time: good.Time, Concurrency: math.NaN()}},
		{"infinite concurrency", load.Sample{Key: k, Time: good.Time, Concurrency: math.Inf(1)}},
		{"negative concurrency", load.Sample{Key: k, Time: good.Time, Concurrency: -1}},
		{"negative completed", load.Sample{Key: k, Time: good.Time, Completed: -1}},
		{"negative waiting", load.Sample{Key: k, Time: good.Time, Waiting: -1}},
		{"empty ufop", load.Sample{Key: load.Key{Version: "1", Region: "z0"}, Time: good.Time, Concurrency: 1}},
		{"zero time", load.Sample{Key: k, Concurrency: 1}},
	}
	for _, tc := range bad {
		if err := s.Record(ctxT(t), []load.Sample{good, tc.sample}); err == nil {
			t.Errorf("%s: Record succeeded, want an error", tc.name)
		}
	}
	got := averages(t, s, k, end, 10*time.Second, time.Second)
	checkAverages(t, "after refused records", got, load.Averages{})

	windows := []struct {
		name          string
		stable, panic time.Duration
	}{
		{"zero stable", 0, time.Second},
		{"zero panic", time.Minute, 0},
		{"negative", -time.Minute, time.Second},
		{"sub-second", 500 * time.Millisecond, 500 * time.Millisecond},
	}
	for _, w := range windows {
		if _, err := s.Averages(ctxT(t), k, end, w.stable, w.panic); err == nil {
			t.Errorf("%s window: Averages succeeded, want an error", w.name)
		}
	}
}

func testConcurrent(t *testing.T, open Open) {
	s := open(t, Retention)
	k := newKey("conc")
	end := base()
	const (
		routers = 8
		rounds  = 20
	)
	var wg sync.WaitGroup
	errs := make(chan error, routers)
	for r := range routers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				sec := end.Add(-time.Duration(1+i%4) * time.Second)
				err := s.Record(context.Background(), []load.Sample{{Key: k, Time: sec, Concurrency: 0.5, Waiting: int64(r)}})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Record: %v", err)
	}
	// 8 routers × 20 rounds × 0.5 over 4 seconds; waiting 0+1+…+7 per round.
	got := averages(t, s, k, end, 4*time.Second, time.Second)
	checkAverages(t, "concurrent", got, load.Averages{
		Stable: routers * rounds * 0.5 / 4, Panic: routers * rounds / 4 * 0.5,
		StableSeconds: 4, PanicSeconds: 1, Waiting: rounds / 4 * (0 + 1 + 2 + 3 + 4 + 5 + 6 + 7),
	})
}
