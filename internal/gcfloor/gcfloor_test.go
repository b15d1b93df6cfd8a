package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		live, roots, min uint64
		base, want       int
	}{
		{live: 2 << 20, roots: 0, min: 32 << 20, base: 100, want: 800},       // 2 + 2×8 = 18 MiB; the minimum heap 4×8 = 32 MiB
		{live: 2 << 20, roots: 2 << 20, min: 32 << 20, base: 100, want: 750}, // 2 + 4×7.5 = 32 MiB
		{live: 20 << 20, roots: 0, min: 32 << 20, base: 100, want: 100},      // 40 MiB ≥ 32 already
		{live: 10 << 20, roots: 0, min: 32 << 20, base: 300, want: 300},      // base gives 40 MiB
		{live: 1, roots: 0, min: 32 << 20, base: 100, want: 800},             // bounded by the minimum heap
		{live: 0, roots: 0, min: 32 << 20, base: 100, want: 800},             // before the first cycle: the minimum heap
		{live: 1 << 20, roots: 1 << 20, min: 2 << 20, base: 100, want: 100},  // a floor Go's pacing already gives changes nothing
		{live: 2 << 20, roots: 0, min: 32 << 20, base: -1, want: -1},         // GC off stays off
	} {
		if got := Percent(c.live, c.roots, c.min, c.base); got != c.want {
			t.Errorf("Percent(%d, %d, %d, %d) = %d, want %d", c.live, c.roots, c.min, c.base, got, c.want)
		}
	}
}

func heapGoal() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestStart runs the real collector: with a floor far above this test's
// live heap the percent is raised after collections, and stop puts the
// previous one back.
func TestStart(t *testing.T) {
	t.Setenv("GOGC", "") // restored at the end
	os.Unsetenv("GOGC")
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)

	const floor = 256 << 20
	stop := Start(floor)
	if gogc() <= 100 {
		t.Fatalf("GOGC %d right after Start, want it raised for a small heap", gogc())
	}
	// Each cycle re-arms the finalizer: after several, the floor still
	// holds (the finalizer goroutine runs after runtime.GC returns, hence
	// the wait, bounded).
	for range 3 {
		runtime.GC()
	}
	debug.SetGCPercent(100) // the next adjustment must raise it again
	runtime.GC()
	for deadline := time.Now().Add(time.Minute); gogc() <= 100; {
		if time.Now().After(deadline) {
			t.Fatal("GOGC not raised again after a collection")
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
	// The goal is the floor, not more: the runtime's minimum heap grows
	// with the percent too (a raised percent once put it at 400 MiB).
	if g := heapGoal(); g > floor || g < floor*95/100 {
		t.Errorf("heap goal %d MiB with a %d MiB floor and a small live heap, want the floor", g>>20, floor>>20)
	}
	stop()
	if g := gogc(); g != 100 {
		t.Fatalf("GOGC %d after stop, want the percent in force at Start (100)", g)
	}
}

// TestStartLeavesGOGC: an operator's GOGC wins.
func TestStartLeavesGOGC(t *testing.T) {
	t.Setenv("GOGC", "100")
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	stop := Start(256 << 20)
	defer stop()
	runtime.GC()
	if g := gogc(); g != 100 {
		t.Fatalf("GOGC %d with GOGC=100 in the environment, want 100", g)
	}
}
