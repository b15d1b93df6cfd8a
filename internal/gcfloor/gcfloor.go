// Package gcfloor keeps a server whose live heap is small from collecting
// garbage several times a second. Go starts a cycle when the heap has grown
// by GOGC % over what the last one left, and never below a 4 MiB goal: the
// router keeps 2–8 MiB live and allocates a few KiB per request, so at
// 8 000 requests/s it ran a cycle every 0.4 s. Each cycle stops the world
// twice, and a stop-the-world waits for every thread of the process to
// reach a safe point; on a machine short of CPU a thread waiting for a CPU
// stretched one such stop to 135 ms (gctrace under load), stalling every
// request in flight. A floor under the heap goal makes those stops rarer
// while the live heap is small, and changes nothing once it is large.
package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// RouterMin is the default floor of `dorad router` and `dorad dev` (their
// --gc-floor; bench/cmd/harness mirrors it): with the router's 2–8 MiB
// live, 3–4 times fewer cycles (2–3 instead of 7–11 per 5 s at 7 000
// requests/s); its peak RSS (52 MiB in the benchmark, 26 without) stays
// under the 64 MiB the 1 GiB benchmark allows.
const RouterMin = 32 << 20

// heapMinimum is the runtime's smallest heap goal at GC percent 100; it
// scales with the percent (4 MiB × percent / 100), so a raised percent
// raises it too.
const heapMinimum = 4 << 20

// Start raises the GC percent after every collection so that the next
// heap goal is at least atLeast bytes, as long as Go's default percent
// (100) would give less; it leaves the runtime alone when GOGC is set in
// the environment (the operator's choice wins) or atLeast is 0.
// A memory limit (GOMEMLIMIT) still applies: the runtime collects earlier
// when it nears it. stop puts the default percent back and ends the
// adjustments. The GC percent is process-wide: call Start from main (two
// floors at once agree, as both derive the percent from the same heap
// figures).
func Start(atLeast uint64) (stop func()) {
	if _, set := os.LookupEnv("GOGC"); set || atLeast == 0 {
		return func() {}
	}
	f := &floor{atLeast: atLeast}
	f.adjust()
	f.arm()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.stopped.Store(true)
			debug.SetGCPercent(defaultPercent)
		})
	}
}

// defaultPercent is Go's GC percent when GOGC is not set.
const defaultPercent = 100

type floor struct {
	atLeast uint64
	stopped atomic.Bool
	samples [3]metrics.Sample
}

// sentinel is garbage whose finalizer runs after the cycle that found it:
// once per GC cycle, as the floor re-arms a new one each time.
type sentinel struct{ f *floor }

func (f *floor) arm() {
	runtime.SetFinalizer(&sentinel{f: f}, func(s *sentinel) {
		if s.f.stopped.Load() {
			return
		}
		s.f.adjust()
		s.f.arm()
	})
}

// adjust sets the GC percent from what the last cycle left live.
func (f *floor) adjust() {
	f.samples[0].Name = "/gc/heap/live:bytes"
	f.samples[1].Name = "/gc/scan/stack:bytes"
	f.samples[2].Name = "/gc/scan/globals:bytes"
	metrics.Read(f.samples[:])
	var v [3]uint64
	for i, s := range f.samples {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	if f.stopped.Load() {
		return
	}
	debug.SetGCPercent(Percent(v[0], v[1]+v[2], f.atLeast, defaultPercent))
}

// Percent is the GC percent that puts the next heap goal at atLeast
// bytes when base would put it lower. The runtime's goal is the larger of
// live + (live + roots) × percent / 100 (roots: the stacks and globals it
// scans) and its minimum heap, 4 MiB × percent / 100: the percent is
// bounded so that neither passes atLeast. It is never below base.
func Percent(live, roots, atLeast uint64, base int) int {
	scan := live + roots
	if base < 0 || live+scan*uint64(base)/100 >= atLeast {
		return base
	}
	p := atLeast * 100 / heapMinimum
	if scan > 0 {
		p = min(p, (atLeast-live)*100/scan)
	}
	return int(max(p, uint64(base)))
}
