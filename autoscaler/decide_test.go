package autoscaler

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler/load"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// avg is a load with full windows of data.
func avg(stable, panic float64) load.Averages {
	return load.Averages{Stable: stable, Panic: panic, StableSeconds: 60, PanicSeconds: 6}
}

// old is a state with a long history and no recent scaling.
func old(desired int) State {
	return State{Desired: desired, StartedAt: t0.Add(-time.Hour), LastScaleUp: t0.Add(-time.Hour), LastScaleDown: t0.Add(-time.Hour)}
}

func pol(floor, ceiling int, mod ...func(*Policy)) Policy {
	p := DefaultPolicy(floor, ceiling)
	for _, m := range mod {
		m(&p)
	}
	return p
}

func TestDecide(t *testing.T) {
	upCooldown := func(p *Policy) { p.ScaleUpCooldown = 30 * time.Second }
	noPanic := func(p *Policy) { p.PanicThreshold = 100 }
	inPanic := func(s State) State { s.PanicUntil = t0.Add(30 * time.Second); return s }
	with := func(s State, f func(*State)) State { f(&s); return s }

	tests := []struct {
		name      string
		p         Policy
		in        Input
		prev      State
		want      int
		reason    string
		wantPanic bool
	}{
		{name: "steady load holds", p: pol(1, 10), in: Input{3, avg(30, 30)}, prev: old(3), want: 3, reason: ReasonHold},
		{name: "steady growth scales up", p: pol(1, 10), in: Input{3, avg(45, 45)}, prev: old(3), want: 5, reason: ReasonScaleUp},
		{name: "fractional want rounds up", p: pol(1, 10), in: Input{3, avg(30.5, 30.5)}, prev: old(3), want: 4, reason: ReasonScaleUp},
		{name: "spike enters panic", p: pol(1, 20), in: Input{2, avg(20, 100)}, prev: old(2), want: 10, reason: ReasonPanic, wantPanic: true},
		{name: "just below the panic threshold", p: pol(1, 20), in: Input{2, avg(20, 30)}, prev: old(2), want: 2, reason: ReasonHold},
		{name: "at the panic threshold", p: pol(1, 20), in: Input{2, avg(20, 40)}, prev: old(2), want: 4, reason: ReasonPanic, wantPanic: true},
		{name: "panic uses the stable want when larger", p: pol(1, 20), in: Input{2, avg(150, 40)}, prev: old(2), want: 15, reason: ReasonPanic, wantPanic: true},
		{name: "panic rate-limited to x10 of ready", p: pol(1, 100), in: Input{1, avg(10, 500)}, prev: old(1), want: 10, reason: ReasonPanic, wantPanic: true},
		{name: "panic skips the scale-up cooldown", p: pol(1, 20, upCooldown), in: Input{2, avg(20, 100)}, prev: with(old(2), func(s *State) { s.LastScaleUp = t0.Add(-time.Second) }), want: 10, reason: ReasonPanic, wantPanic: true},
		{name: "drop while in panic never scales down", p: pol(1, 20), in: Input{10, avg(10, 10)}, prev: inPanic(old(10)), want: 10, reason: ReasonPanicHold, wantPanic: true},
		{name: "still in panic scales up further", p: pol(1, 20), in: Input{10, avg(10, 150)}, prev: inPanic(old(10)), want: 15, reason: ReasonPanic, wantPanic: true},
		{name: "drop after panic ended scales down by half", p: pol(1, 20), in: Input{10, avg(10, 10)}, prev: with(old(10), func(s *State) { s.PanicUntil = t0.Add(-time.Second) }), want: 5, reason: ReasonScaleDown},
		{name: "panic ends exactly at PanicUntil", p: pol(1, 20), in: Input{10, avg(100, 100)}, prev: with(old(10), func(s *State) { s.PanicUntil = t0 }), want: 10, reason: ReasonHold},
		{name: "crossing at the end of panic stays in panic", p: pol(1, 40), in: Input{10, avg(100, 200)}, prev: with(old(10), func(s *State) { s.PanicUntil = t0 }), want: 20, reason: ReasonPanic, wantPanic: true},
		{name: "no data holds", p: pol(1, 10), in: Input{4, load.Averages{}}, prev: old(4), want: 4, reason: ReasonNoData},
		{name: "no data in panic holds", p: pol(1, 10), in: Input{4, load.Averages{}}, prev: inPanic(old(4)), want: 4, reason: ReasonNoData, wantPanic: true},
		{name: "no data still obeys a raised floor", p: pol(4, 10), in: Input{2, load.Averages{}}, prev: old(2), want: 4, reason: ReasonClampFloor},
		{name: "no load clamped to floor", p: pol(3, 10), in: Input{3, avg(0, 0)}, prev: old(3), want: 3, reason: ReasonClampFloor},
		{name: "scale-down stops at floor", p: pol(3, 10), in: Input{5, avg(0, 0)}, prev: old(5), want: 3, reason: ReasonClampFloor},
		{name: "high load clamped to ceiling", p: pol(1, 5, noPanic), in: Input{5, avg(100, 100)}, prev: old(5), want: 5, reason: ReasonClampCeiling},
		{name: "panic clamped to ceiling", p: pol(1, 5), in: Input{2, avg(20, 100)}, prev: old(2), want: 5, reason: ReasonClampCeiling, wantPanic: true},
		{name: "ceiling lowered by the user wins at once", p: pol(1, 5), in: Input{8, avg(80, 80)}, prev: old(8), want: 5, reason: ReasonClampCeiling},
		{name: "ceiling lowered wins over panic", p: pol(1, 5), in: Input{8, avg(80, 80)}, prev: inPanic(old(8)), want: 5, reason: ReasonClampCeiling, wantPanic: true},
		{name: "restart with lost history does not scale down", p: pol(1, 10), in: Input{6, avg(0, 0)}, prev: State{Desired: 6}, want: 6, reason: ReasonWarmingUp},
		{name: "restart with lost history still scales up", p: pol(1, 10), in: Input{2, avg(30, 30)}, prev: State{Desired: 2}, want: 3, reason: ReasonScaleUp},
		{name: "warming up until a full stable window", p: pol(1, 10), in: Input{6, avg(0, 0)}, prev: with(old(6), func(s *State) { s.StartedAt = t0.Add(-59 * time.Second) }), want: 6, reason: ReasonWarmingUp},
		{name: "warm after a full stable window", p: pol(1, 10), in: Input{6, avg(0, 0)}, prev: with(old(6), func(s *State) { s.StartedAt = t0.Add(-60 * time.Second) }), want: 3, reason: ReasonScaleDown},
		{name: "scale-down cooldown after a scale-down", p: pol(1, 10), in: Input{6, avg(0, 0)}, prev: with(old(6), func(s *State) { s.LastScaleDown = t0.Add(-10 * time.Second) }), want: 6, reason: ReasonCooldown},
		{name: "scale-down cooldown after a scale-up", p: pol(1, 10), in: Input{6, avg(0, 0)}, prev: with(old(6), func(s *State) { s.LastScaleUp = t0.Add(-10 * time.Second) }), want: 6, reason: ReasonCooldown},
		{name: "scale-down cooldown over", p: pol(1, 10), in: Input{6, avg(0, 0)}, prev: with(old(6), func(s *State) { s.LastScaleDown = t0.Add(-30 * time.Second) }), want: 3, reason: ReasonScaleDown},
		{name: "scale-up cooldown", p: pol(1, 10, upCooldown), in: Input{3, avg(45, 45)}, prev: with(old(3), func(s *State) { s.LastScaleUp = t0.Add(-10 * time.Second) }), want: 3, reason: ReasonCooldown},
		{name: "scale-up not delayed by a scale-down", p: pol(1, 10, upCooldown), in: Input{3, avg(45, 45)}, prev: with(old(3), func(s *State) { s.LastScaleDown = t0.Add(-time.Second) }), want: 5, reason: ReasonScaleUp},
		{name: "floor raised above desired wins in a scale-up cooldown", p: pol(4, 10, upCooldown, noPanic), in: Input{2, avg(60, 60)}, prev: with(old(2), func(s *State) { s.LastScaleUp = t0.Add(-time.Second) }), want: 4, reason: ReasonClampFloor},
		{name: "floor raised above desired wins while warming up", p: pol(4, 10), in: Input{2, avg(0, 0)}, prev: State{Desired: 2}, want: 4, reason: ReasonClampFloor},
		{name: "floor raised above desired wins in panic", p: pol(12, 20), in: Input{10, avg(10, 10)}, prev: inPanic(old(10)), want: 12, reason: ReasonClampFloor, wantPanic: true},
		{name: "scale-up rate limit", p: pol(1, 20, noPanic, func(p *Policy) { p.MaxScaleUpRate = 2 }), in: Input{2, avg(100, 100)}, prev: old(2), want: 4, reason: ReasonScaleUp},
		{name: "scale-up rate limit always allows one more", p: pol(1, 20, noPanic, func(p *Policy) { p.MaxScaleUpRate = 1.1 }), in: Input{2, avg(100, 100)}, prev: old(2), want: 3, reason: ReasonScaleUp},
		{name: "scale-up rate counts from at least one ready", p: pol(1, 100, noPanic), in: Input{0, avg(500, 500)}, prev: old(1), want: 10, reason: ReasonScaleUp},
		{name: "scale-down rate limit", p: pol(1, 20), in: Input{10, avg(0, 0)}, prev: old(10), want: 5, reason: ReasonScaleDown},
		{name: "scale-down rate limit custom", p: pol(1, 20, func(p *Policy) { p.MaxScaleDownRate = 4 }), in: Input{12, avg(0, 0)}, prev: old(12), want: 3, reason: ReasonScaleDown},
		{name: "ready lagging behind desired holds", p: pol(1, 20, noPanic, func(p *Policy) { p.MaxScaleUpRate = 2 }), in: Input{1, avg(150, 150)}, prev: old(10), want: 10, reason: ReasonHold},
		{name: "ready lagging does not turn a rate limit into a scale-down", p: pol(1, 50, noPanic), in: Input{1, avg(150, 150)}, prev: old(12), want: 12, reason: ReasonHold},
		{name: "all instances unhealthy halves at most", p: pol(1, 20), in: Input{0, avg(0, 0)}, prev: old(6), want: 3, reason: ReasonScaleDown},
		{name: "scale to zero when the floor is zero", p: pol(0, 5), in: Input{1, avg(0, 0)}, prev: old(1), want: 0, reason: ReasonScaleDown},
		{name: "scale from zero with waiting requests", p: pol(0, 5), in: Input{0, load.Averages{Waiting: 3}}, prev: old(0), want: 1, reason: ReasonScaleFromZero},
		{name: "scale from zero follows the load", p: pol(0, 20), in: Input{0, load.Averages{Stable: 5, Panic: 50, StableSeconds: 3, PanicSeconds: 3, Waiting: 3}}, prev: old(0), want: 5, reason: ReasonScaleFromZero, wantPanic: true},
		{name: "scale from zero skips the scale-up cooldown", p: pol(0, 5, upCooldown), in: Input{0, load.Averages{Waiting: 1, PanicSeconds: 1, StableSeconds: 1}}, prev: with(old(0), func(s *State) { s.LastScaleUp = t0 }), want: 1, reason: ReasonScaleFromZero},
		{name: "waiting requests keep a starting instance", p: pol(0, 5), in: Input{0, load.Averages{StableSeconds: 60, PanicSeconds: 6, Waiting: 2}}, prev: old(1), want: 1, reason: ReasonHold},
		{name: "waiting requests keep one of several", p: pol(0, 5), in: Input{0, load.Averages{StableSeconds: 60, PanicSeconds: 6, Waiting: 2}}, prev: old(2), want: 1, reason: ReasonScaleDown},
		{name: "zero without waiting requests stays at zero", p: pol(0, 5), in: Input{0, avg(0, 0)}, prev: old(0), want: 0, reason: ReasonHold},
		{name: "only panic-window data counts for both", p: pol(1, 20), in: Input{2, load.Averages{Panic: 30, PanicSeconds: 2}}, prev: old(2), want: 3, reason: ReasonScaleUp},
		{name: "negative and NaN load is no load", p: pol(1, 20), in: Input{2, avg(-5, nan())}, prev: old(2), want: 1, reason: ReasonScaleDown},
		{name: "invalid policy holds", p: pol(1, 10, func(p *Policy) { p.Target = 0 }), in: Input{2, avg(100, 100)}, prev: old(2), want: 2, reason: ReasonInvalidPolicy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.p, tc.in, tc.prev, t0)
			if d.Desired != tc.want || d.Reason != tc.reason {
				t.Errorf("Decide = %d (%s), want %d (%s); wants stable %d panic %d", d.Desired, d.Reason, tc.want, tc.reason, d.WantStable, d.WantPanic)
			}
			if d.State.Desired != d.Desired {
				t.Errorf("State.Desired = %d, want %d", d.State.Desired, d.Desired)
			}
			if got := d.State.InPanic(); got != tc.wantPanic {
				t.Errorf("InPanic = %v, want %v", got, tc.wantPanic)
			}
			if d.State.StartedAt.IsZero() {
				t.Error("StartedAt not set")
			}
			prevDesired := tc.prev.Desired
			switch {
			case d.Desired > prevDesired && !d.State.LastScaleUp.Equal(t0):
				t.Errorf("scaled up but LastScaleUp = %v", d.State.LastScaleUp)
			case d.Desired < prevDesired && !d.State.LastScaleDown.Equal(t0):
				t.Errorf("scaled down but LastScaleDown = %v", d.State.LastScaleDown)
			case d.Desired == prevDesired && (!d.State.LastScaleUp.Equal(tc.prev.LastScaleUp) || !d.State.LastScaleDown.Equal(tc.prev.LastScaleDown)):
				t.Errorf("no change but the cooldown timestamps moved: %+v", d.State)
			}
		})
	}
}

func TestDecideNeverLeavesBounds(t *testing.T) {
	// Whatever the load and state, the result stays within [floor, ceiling].
	loads := []load.Averages{{}, avg(0, 0), avg(5, 500), avg(1e9, 1e9), {Waiting: 9}}
	states := []State{{}, old(0), old(3), old(50), {Desired: 7, PanicUntil: t0.Add(time.Minute)}}
	for _, floor := range []int{0, 1, 3} {
		for _, ceiling := range []int{3, 8} {
			for _, l := range loads {
				for _, s := range states {
					for _, ready := range []int{0, 2, 50} {
						d := Decide(pol(floor, ceiling), Input{ready, l}, s, t0)
						if d.Desired < floor || d.Desired > ceiling {
							t.Fatalf("floor %d ceiling %d load %+v state %+v ready %d: desired %d (%s)", floor, ceiling, l, s, ready, d.Desired, d.Reason)
						}
					}
				}
			}
		}
	}
}

// TestDecideScenario runs the 2 s loop over a burst and its aftermath.
func TestDecideScenario(t *testing.T) {
	p := pol(1, 20)
	st := State{Desired: 2, StartedAt: t0.Add(-time.Hour)}
	now := t0
	tick := func(stable, panic float64) Decision {
		t.Helper()
		d := Decide(p, Input{Ready: st.Desired, Averages: avg(stable, panic)}, st, now)
		st = d.State
		now = now.Add(2 * time.Second)
		return d
	}
	if d := tick(20, 20); d.Desired != 2 || d.Reason != ReasonHold {
		t.Fatalf("steady: %d %s", d.Desired, d.Reason)
	}
	// The burst: the panic window sees 120 in flight.
	if d := tick(30, 120); d.Desired != 12 || d.Reason != ReasonPanic {
		t.Fatalf("burst: %d %s", d.Desired, d.Reason)
	}
	lastCrossing := now.Add(-2 * time.Second)
	// The burst ends at once; panic mode holds the count for a full stable
	// window after the last crossing, whatever the load.
	for now.Before(lastCrossing.Add(p.StableWindow)) {
		if d := tick(30, 10); d.Desired != 12 || d.Reason != ReasonPanicHold {
			t.Fatalf("at +%v after the crossing: %d %s", now.Sub(lastCrossing), d.Desired, d.Reason)
		}
	}
	// Out of panic: down by at most half per tick, then the scale-down cooldown.
	d := tick(30, 10)
	if d.Desired != 6 || d.Reason != ReasonScaleDown || d.State.InPanic() {
		t.Fatalf("after panic: %d %s panic=%v", d.Desired, d.Reason, d.State.InPanic())
	}
	if d := tick(30, 10); d.Desired != 6 || d.Reason != ReasonCooldown {
		t.Fatalf("cooldown: %d %s", d.Desired, d.Reason)
	}
	for i := 0; i < 20 && st.Desired != 3; i++ {
		tick(30, 10)
	}
	if st.Desired != 3 {
		t.Fatalf("did not settle at 3: %+v", st)
	}
	if got := now.Sub(st.LastScaleDown); got > p.ScaleDownCooldown+4*time.Second {
		t.Fatalf("second scale-down came late: %v after", got)
	}
}

func TestPolicyValidateReportsEveryProblem(t *testing.T) {
	if err := DefaultPolicy(1, 5).Validate(); err != nil {
		t.Fatalf("default policy: %v", err)
	}
	bad := Policy{Floor: 6, Ceiling: 5, Target: -1, StableWindow: time.Second, PanicWindow: 2 * time.Second,
		PanicThreshold: 0.5, MaxScaleUpRate: 1, MaxScaleDownRate: 0, ScaleUpCooldown: -1, ScaleDownCooldown: -time.Second}
	err := bad.Validate()
	if !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("err %v does not wrap ErrInvalidPolicy", err)
	}
	for _, want := range []string{"floor 6 is above ceiling 5", "target -1", "panic window 2s is longer", "panic threshold 0.5",
		"max scale-up rate 1", "max scale-down rate 0", "scale-up cooldown -1ns", "scale-down cooldown -1s", "evaluation interval 0s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if n := len(strings.Split(err.Error(), "\n")); n != 9 {
		t.Errorf("%d problems reported, want 9:\n%v", n, err)
	}
	for _, p := range []Policy{
		pol(-1, 5), pol(0, 0), pol(0, MaxCeiling+1),
		pol(1, 5, func(p *Policy) { p.StableWindow = 2 * time.Hour }),
		pol(1, 5, func(p *Policy) { p.Target = nan() }),
	} {
		if err := p.Validate(); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%+v: Validate = %v", p, err)
		}
	}
}

func nan() float64 { var z float64; return z / z }

func TestPolicyFrom(t *testing.T) {
	rel := dora.Release{Autoscale: &dora.AutoscalePolicy{Target: 4, StableWindow: 30 * time.Second, ScaleDownCooldown: time.Minute}}
	dep := dora.Deployment{Expect: 2, Max: 7, Autoscale: &dora.AutoscalePolicy{Target: 8, PanicThreshold: 3}}
	p := PolicyFrom(dep, rel)
	want := DefaultPolicy(2, 7)
	want.Target = 8
	want.StableWindow = 30 * time.Second
	want.ScaleDownCooldown = time.Minute
	want.PanicThreshold = 3
	if p != want {
		t.Errorf("PolicyFrom = %+v\nwant %+v", p, want)
	}
	if p := PolicyFrom(dora.Deployment{Expect: 1}, dora.Release{}); p != DefaultPolicy(1, dora.DefaultMaxInstances) {
		t.Errorf("defaults: %+v", p)
	}
	if p := PolicyFrom(dep, rel).WithLimit(3); p.Ceiling != 3 || p.Floor != 2 {
		t.Errorf("WithLimit(3): %d..%d", p.Floor, p.Ceiling)
	}
	if p := PolicyFrom(dora.Deployment{Expect: 5, Max: 8}, rel).WithLimit(4); p.Ceiling != 4 || p.Floor != 4 || p.Validate() != nil {
		t.Errorf("WithLimit(4) over the floor: %d..%d %v", p.Floor, p.Ceiling, p.Validate())
	}
	if p := PolicyFrom(dep, rel).WithLimit(0); p.Ceiling != 7 {
		t.Errorf("WithLimit(0): %d", p.Ceiling)
	}
}

// FuzzDecide checks Decide's invariants on arbitrary input: no panic, the
// result within [floor, ceiling] for a valid policy, the count held for an
// invalid one, and the state's Desired equal to the decision.
func FuzzDecide(f *testing.F) {
	f.Add(1, 5, 2, 2, 30.0, 100.0, int64(0), 60, 6, int64(0), int64(0))
	f.Add(0, 3, 0, 0, 0.0, 0.0, int64(4), 0, 0, int64(-5), int64(30))
	f.Add(2, 1, -3, 9, -1.0, 1e300, int64(-1), -1, 6, int64(90), int64(-90))
	f.Fuzz(func(t *testing.T, floor, ceiling, ready, desired int, stable, panicAvg float64, waiting int64,
		stableSec, panicSec int, panicUntil, lastUp int64) {
		p := pol(floor, ceiling)
		prev := State{Desired: desired, StartedAt: t0.Add(-time.Hour), LastScaleUp: t0.Add(time.Duration(lastUp) * time.Second)}
		if panicUntil != 0 {
			prev.PanicUntil = t0.Add(time.Duration(panicUntil) * time.Second)
		}
		in := Input{Ready: ready, Averages: load.Averages{Stable: stable, Panic: panicAvg, StableSeconds: stableSec, PanicSeconds: panicSec, Waiting: waiting}}
		d := Decide(p, in, prev, t0)
		if d.State.Desired != d.Desired {
			t.Fatalf("State.Desired %d != Desired %d", d.State.Desired, d.Desired)
		}
		if p.Validate() != nil {
			if d.Desired != max(desired, 0) || d.Reason != ReasonInvalidPolicy {
				t.Fatalf("invalid policy: %d (%s)", d.Desired, d.Reason)
			}
			return
		}
		if d.Desired < floor || d.Desired > ceiling {
			t.Fatalf("desired %d outside [%d, %d] (%s)", d.Desired, floor, ceiling, d.Reason)
		}
	})
}
