// Package autoscaler moves each deployment's instance count between its
// floor (the user's --expect) and its ceiling (--max, bounded by the account
// limit) following the load the routers report.
//
// The decision is a pure function (Decide) of the policy, the ready
// instances, the stable and panic load averages, the previous state and the
// time, in the manner of Knative's KPA; the loop (Autoscaler) reads the
// metadata store and the load store every interval, decides, and applies
// changes through a Target (the local runtime or Nomad). Several autoscaler
// processes may run; autoscaler/lock elects the one that acts.
package autoscaler

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/doraproject/dora"
)

// Policy defaults (docs/api.md, "Autoscale policy").
const (
	DefaultTarget             = 10.0 // in-flight requests per instance
	DefaultStableWindow       = 60 * time.Second
	DefaultPanicWindow        = 6 * time.Second
	DefaultPanicThreshold     = 2.0  // panic when the panic-window want is ≥ 2× ready
	DefaultMaxScaleUpRate     = 10.0 // at most ×10 per tick
	DefaultMaxScaleDownRate   = 2.0  // at most ÷2 per tick
	DefaultScaleUpCooldown    = 0    // under-provisioning hurts; scale-ups are only rate-limited
	DefaultScaleDownCooldown  = 30 * time.Second
	DefaultEvaluationInterval = 2 * time.Second
)

// Bounds that keep a policy sane; Validate rejects values beyond them.
const (
	MaxCeiling = 10000          // instances
	MaxWindow  = time.Hour      // stable and panic windows
	MaxPeriod  = 24 * time.Hour // cooldowns
	MaxRate    = 1000.0         // scale up/down rates
	MinWindow  = time.Second    // the load store has one-second resolution
	MinTick    = 100 * time.Millisecond
)

// ErrInvalidPolicy is wrapped by every problem Validate reports.
var ErrInvalidPolicy = errors.New("invalid autoscale policy")

// Policy is one deployment's effective scaling policy.
type Policy struct {
	Floor   int     // never fewer instances (the deployment's Expect)
	Ceiling int     // never more instances (the deployment's Max, bounded by the account limit)
	Target  float64 // in-flight requests per instance
	// StableWindow is the averaging window of normal operation, and how
	// long panic mode lasts after the last panic crossing.
	StableWindow time.Duration
	// PanicWindow is the short window whose average detects bursts.
	PanicWindow time.Duration
	// PanicThreshold: panic mode starts when the panic-window want is at
	// least this many times the ready instances.
	PanicThreshold float64
	// MaxScaleUpRate bounds one step up to ×rate of the ready instances.
	MaxScaleUpRate float64
	// MaxScaleDownRate bounds one step down to ÷rate of the current count.
	MaxScaleDownRate float64
	// ScaleUpCooldown is the pause after a scale-up before another one
	// (panic mode and scale-from-zero skip it).
	ScaleUpCooldown time.Duration
	// ScaleDownCooldown is the pause after any scaling before a scale-down.
	ScaleDownCooldown time.Duration
	// EvaluationInterval is how often the deployment is evaluated.
	EvaluationInterval time.Duration
}

// DefaultPolicy returns the platform defaults with the given floor and
// ceiling.
func DefaultPolicy(floor, ceiling int) Policy {
	return Policy{
		Floor:              floor,
		Ceiling:            ceiling,
		Target:             DefaultTarget,
		StableWindow:       DefaultStableWindow,
		PanicWindow:        DefaultPanicWindow,
		PanicThreshold:     DefaultPanicThreshold,
		MaxScaleUpRate:     DefaultMaxScaleUpRate,
		MaxScaleDownRate:   DefaultMaxScaleDownRate,
		ScaleUpCooldown:    DefaultScaleUpCooldown,
		ScaleDownCooldown:  DefaultScaleDownCooldown,
		EvaluationInterval: DefaultEvaluationInterval,
	}
}

// PolicyFrom merges the defaults, then the release's autoscale block
// (dora.yaml), then the deployment's (deploy --target ...): each non-zero
// field overrides. Floor is d.Expect; Ceiling is d.Max, or
// dora.DefaultMaxInstances when unset. The account limit is applied by the
// caller (WithLimit), since neither argument carries it.
func PolicyFrom(d dora.Deployment, r dora.Release) Policy {
	ceiling := d.Max
	if ceiling <= 0 {
		ceiling = dora.DefaultMaxInstances
	}
	p := DefaultPolicy(d.Expect, ceiling)
	p.merge(r.Autoscale)
	p.merge(d.Autoscale)
	return p
}

// merge overrides p's fields with o's non-zero ones.
func (p *Policy) merge(o *dora.AutoscalePolicy) {
	if o == nil {
		return
	}
	p.Target = cmp.Or(o.Target, p.Target)
	p.StableWindow = cmp.Or(o.StableWindow, p.StableWindow)
	p.PanicWindow = cmp.Or(o.PanicWindow, p.PanicWindow)
	p.PanicThreshold = cmp.Or(o.PanicThreshold, p.PanicThreshold)
	p.MaxScaleUpRate = cmp.Or(o.MaxScaleUpRate, p.MaxScaleUpRate)
	p.MaxScaleDownRate = cmp.Or(o.MaxScaleDownRate, p.MaxScaleDownRate)
	p.ScaleUpCooldown = cmp.Or(o.ScaleUpCooldown, p.ScaleUpCooldown)
	p.ScaleDownCooldown = cmp.Or(o.ScaleDownCooldown, p.ScaleDownCooldown)
	p.EvaluationInterval = cmp.Or(o.EvaluationInterval, p.EvaluationInterval)
}

// WithLimit lowers the ceiling to the account's instance limit (and the
// floor with it, so that an over-limit --expect does not make the policy
// invalid). A limit ≤ 0 changes nothing.
func (p Policy) WithLimit(limit int) Policy {
	if limit <= 0 {
		return p
	}
	p.Ceiling = min(p.Ceiling, limit)
	p.Floor = min(p.Floor, p.Ceiling)
	return p
}

// Validate reports every problem of the policy at once (errors.Join); each
// wraps ErrInvalidPolicy.
func (p Policy) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidPolicy}, args...)...))
	}
	if p.Floor < 0 {
		bad("floor %d is negative", p.Floor)
	}
	if p.Ceiling < 1 || p.Ceiling > MaxCeiling {
		bad("ceiling %d must be between 1 and %d", p.Ceiling, MaxCeiling)
	}
	if p.Floor > p.Ceiling {
		bad("floor %d is above ceiling %d", p.Floor, p.Ceiling)
	}
	if !(p.Target > 0) || math.IsInf(p.Target, 0) {
		bad("target %v must be a positive number", p.Target)
	}
	if p.StableWindow < MinWindow || p.StableWindow > MaxWindow {
		bad("stable window %v must be between %v and %v", p.StableWindow, MinWindow, MaxWindow)
	}
	if p.PanicWindow < MinWindow || p.PanicWindow > MaxWindow {
		bad("panic window %v must be between %v and %v", p.PanicWindow, MinWindow, MaxWindow)
	}
	if p.PanicWindow > p.StableWindow {
		bad("panic window %v is longer than the stable window %v", p.PanicWindow, p.StableWindow)
	}
	if !(p.PanicThreshold >= 1) || p.PanicThreshold > MaxRate {
		bad("panic threshold %v must be between 1 and %v", p.PanicThreshold, MaxRate)
	}
	if !(p.MaxScaleUpRate > 1) || p.MaxScaleUpRate > MaxRate {
		bad("max scale-up rate %v must be above 1 and at most %v", p.MaxScaleUpRate, MaxRate)
	}
	if !(p.MaxScaleDownRate > 1) || p.MaxScaleDownRate > MaxRate {
		bad("max scale-down rate %v must be above 1 and at most %v", p.MaxScaleDownRate, MaxRate)
	}
	if p.ScaleUpCooldown < 0 || p.ScaleUpCooldown > MaxPeriod {
		bad("scale-up cooldown %v must be between 0 and %v", p.ScaleUpCooldown, MaxPeriod)
	}
	if p.ScaleDownCooldown < 0 || p.ScaleDownCooldown > MaxPeriod {
		bad("scale-down cooldown %v must be between 0 and %v", p.ScaleDownCooldown, MaxPeriod)
	}
	if p.EvaluationInterval < MinTick || p.EvaluationInterval > MaxWindow {
		bad("evaluation interval %v must be between %v and %v", p.EvaluationInterval, MinTick, MaxWindow)
	}
	return errors.Join(errs...)
}
