package autoscaler

import (
	"math"
	"time"

	"github.com/doraproject/dora/autoscaler/load"
)

// Reasons a Decision gives. They are kept with every scaling event.
const (
	ReasonScaleUp       = "scale up"             // the stable average wants more instances
	ReasonScaleDown     = "scale down"           // the stable average wants fewer instances
	ReasonHold          = "hold"                 // the load fits the current count
	ReasonClampFloor    = "clamped to floor"     // the load wants fewer than the floor (--expect)
	ReasonClampCeiling  = "clamped to ceiling"   // the load wants more than the ceiling (--max / account limit)
	ReasonPanic         = "panic"                // a burst: panic mode scaled up
	ReasonPanicHold     = "panic: no scale-down" // panic mode refused a scale-down
	ReasonNoData        = "no data"              // no load samples: the count holds
	ReasonCooldown      = "cooldown"             // a change was wanted but the cooldown is running
	ReasonWarmingUp     = "warming up"           // freshly started, no full stable window of history: no scale-down
	ReasonScaleFromZero = "scale from zero"      // requests are waiting and nothing runs
	ReasonInvalidPolicy = "invalid policy"       // the policy does not validate: the count holds
)

// Input is what the autoscaler observes of one deployment at one tick.
type Input struct {
	Ready    int           // instances passing their health check
	Averages load.Averages // stable and panic averages of in-flight requests
}

// State is what Decide remembers between ticks of one deployment. The zero
// State is a freshly started autoscaler that has lost its history (its
// Desired is 0: callers set it to the count last asked of the runtime).
type State struct {
	// Desired is the instance count last decided (what the runtime runs).
	Desired int
	// PanicUntil is zero outside panic mode; in panic mode, the time at
	// which it ends unless the panic threshold is crossed again (the last
	// crossing plus a stable window).
	PanicUntil time.Time
	// LastScaleUp and LastScaleDown are the times of the last changes,
	// for the cooldowns.
	LastScaleUp, LastScaleDown time.Time
	// StartedAt is when this autoscaler's history of the deployment began:
	// no scale-down before StartedAt + StableWindow, since the averages may
	// not yet cover a full window. Zero means "now".
	StartedAt time.Time
}

// InPanic reports whether the state is in panic mode.
func (s State) InPanic() bool { return !s.PanicUntil.IsZero() }

// Decision is Decide's answer.
type Decision struct {
	Desired int    // the instance count to run
	Reason  string // one of the Reason constants: why Desired is what it is
	State   State  // the state to pass to the next Decide
	// WantStable and WantPanic are the counts the stable and panic
	// averages ask for, before rate limits, cooldowns and clamping.
	WantStable, WantPanic int
}

// Decide computes one deployment's desired instance count. It is a pure
// function: everything it depends on is an argument, so every case is
// table-tested.
//
// desired = ceil(average / target) from the stable average; the step is
// rate-limited (up to ×MaxScaleUpRate of the ready instances, down to
// ÷MaxScaleDownRate of the current count). Panic mode starts when the
// panic-window want reaches PanicThreshold × ready instances: then the
// larger of both wants is used, only upwards, without the scale-up
// cooldown, and it ends a full stable window after the last crossing.
// Waiting requests keep at least one instance (and scale from zero).
// Scale-downs wait for the scale-down cooldown and, after a restart, a full
// stable window of history. No data holds the count. Finally the count is
// clamped to [Floor, Ceiling], which wins over everything (a floor the user
// just raised applies at once, even in a cooldown).
func Decide(p Policy, in Input, prev State, now time.Time) Decision {
	cur := max(prev.Desired, 0)
	st := prev
	st.Desired = cur
	if st.StartedAt.IsZero() {
		st.StartedAt = now
	}
	if p.Validate() != nil {
		return Decision{Desired: cur, Reason: ReasonInvalidPolicy, State: st}
	}

	av := in.Averages
	ready := max(in.Ready, 0)
	fromZero := cur == 0 && ready == 0 && av.Waiting > 0
	d := Decision{State: st}

	desired, reason := cur, ReasonHold
	if av.StableSeconds <= 0 && av.PanicSeconds <= 0 && !fromZero {
		desired, reason = cur, ReasonNoData
	} else {
		stable, panicAvg := av.Stable, av.Panic
		if av.StableSeconds <= 0 { // inconsistent store: only recent data
			stable = panicAvg
		}
		d.WantStable = want(stable, p.Target)
		d.WantPanic = want(panicAvg, p.Target)

		readyBase := float64(max(ready, 1))
		crossing := float64(d.WantPanic)/readyBase >= p.PanicThreshold
		switch {
		case crossing:
			st.PanicUntil = now.Add(p.StableWindow)
		case st.InPanic() && !now.Before(st.PanicUntil):
			st.PanicUntil = time.Time{}
		}

		w := d.WantStable
		if st.InPanic() {
			w = max(w, d.WantPanic)
		}
		maxUp := int(math.Ceil(p.MaxScaleUpRate * readyBase))
		maxDown := int(math.Floor(float64(max(ready, cur)) / p.MaxScaleDownRate))
		switch {
		case w > cur:
			desired = min(w, max(cur, maxUp))
		case w < cur:
			desired = max(w, min(cur, maxDown))
		}
		if fromZero || av.Waiting > 0 {
			// Requests wait for an instance: never down to zero, or
			// the instance they wait for (still starting, not ready,
			// so no concurrency) is stopped and started again.
			desired = max(desired, 1)
		}

		// Clamp what the load asks for, then hold it back if needed.
		clampReason := ""
		switch {
		case desired < p.Floor:
			desired, clampReason = p.Floor, ReasonClampFloor
		case desired > p.Ceiling:
			desired, clampReason = p.Ceiling, ReasonClampCeiling
		}
		up, down := desired > cur, desired < cur
		switch {
		case up && !fromZero && !st.InPanic() && now.Before(st.LastScaleUp.Add(p.ScaleUpCooldown)):
			desired, reason = cur, ReasonCooldown
		case down && st.InPanic():
			desired, reason = cur, ReasonPanicHold
		case down && now.Before(st.StartedAt.Add(p.StableWindow)):
			desired, reason = cur, ReasonWarmingUp
		case down && now.Before(later(st.LastScaleUp, st.LastScaleDown).Add(p.ScaleDownCooldown)):
			desired, reason = cur, ReasonCooldown
		case clampReason != "":
			reason = clampReason
		case up && fromZero:
			reason = ReasonScaleFromZero
		case up && st.InPanic():
			reason = ReasonPanic
		case up:
			reason = ReasonScaleUp
		case down:
			reason = ReasonScaleDown
		}
	}

	// The current count itself may be outside a floor or ceiling the user
	// just changed: the bounds win at once, whatever holds the count.
	switch {
	case desired < p.Floor:
		desired, reason = p.Floor, ReasonClampFloor
	case desired > p.Ceiling:
		desired, reason = p.Ceiling, ReasonClampCeiling
	}

	switch {
	case desired > cur:
		st.LastScaleUp = now
	case desired < cur:
		st.LastScaleDown = now
	}
	st.Desired = desired
	d.Desired, d.Reason, d.State = desired, reason, st
	return d
}

// want is the instance count an average load asks for: ceil(avg/target),
// 0 for no or nonsensical load, saturated at MaxCeiling.
func want(avg, target float64) int {
	if !(avg > 0) {
		return 0
	}
	n := math.Ceil(avg / target)
	if n > MaxCeiling {
		return MaxCeiling
	}
	return int(n)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
