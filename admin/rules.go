package admin

import (
	"errors"
	"fmt"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/api"
)

// The deployment rules: what a deploy, a resize and an activation change,
// as plain functions of the ufop's deployments, the account's limit and
// now. They read and write nothing, so they are table-tested alone
// (rules_test.go); the handlers decode, read the records, call one rule,
// write what it returns in one transaction and encode the answer.

// Kinds of RuleError, which the HTTP layer maps to a status.
var (
	// ErrInvalid: the request contradicts itself or a policy (400).
	ErrInvalid = errors.New("invalid request")
	// ErrOverLimit: the request would take the ufop over its owner's
	// instance limit (403).
	ErrOverLimit = errors.New("over the instance limit")
	// ErrNotReady: what the request names is not in a state that allows
	// it, e.g. a switch to a build that has not succeeded (409).
	ErrNotReady = errors.New("not ready")
)

// RuleError is a request a rule refuses: Kind is one of ErrInvalid,
// ErrOverLimit or ErrNotReady (errors.Is matches it), the message is what
// the client is told.
type RuleError struct {
	Kind error
	Msg  string
}

// Error returns the message for the client.
func (e *RuleError) Error() string { return e.Msg }

// Unwrap returns the kind, for errors.Is.
func (e *RuleError) Unwrap() error { return e.Kind }

func refuse(kind error, format string, args ...any) error {
	return &RuleError{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

func overLimit(limit int) error {
	return refuse(ErrOverLimit, "over the account's limit of %d instances per ufop", limit)
}

// checkDeployRequest checks a deploy body on its own and against the
// account's per-ufop limit, before anything is read.
func checkDeployRequest(req api.DeployRequest, limit int) error {
	switch {
	case req.Version == "":
		return refuse(ErrInvalid, "version: required")
	case !versionRE.MatchString(req.Version):
		// The version names a release key of the caller's ufop: nothing
		// but a version name may reach the store ("../<ufop>/v1").
		return refuse(ErrInvalid, "version %q: not a version name (1 to 32 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit)", req.Version)
	case req.Expect < 0 || req.Max < 0:
		return refuse(ErrInvalid, "expect and max: must not be negative")
	case req.Target < 0 || req.Target > 1e6:
		return refuse(ErrInvalid, "target: must be 0 to 1e6 in-flight requests per instance")
	case req.Max > 0 && req.Expect > req.Max:
		return refuse(ErrInvalid, "expect (%d) must not exceed max (%d)", req.Expect, req.Max)
	case req.Expect > limit || req.Max > limit:
		return overLimit(limit)
	}
	return nil
}

// deploymentChange is the record a deploy or a resize writes: deps[Index]
// updated, or, when Index is -1, a new deployment.
type deploymentChange struct {
	Deployment dora.Deployment
	Index      int
}

// planDeploy is what POST /deployments changes: the live deployment of
// req.Version in region gets the new floor and ceiling (its desired count
// clamped into them), or a new PENDING one starts at the floor with the
// release's autoscale policy; req.Target overrides the policy's target.
// The floor must fit in what the ufop's other deployments leave of limit,
// and the policy in force must be valid. newID names a new deployment.
func planDeploy(deps []dora.Deployment, ufop string, req api.DeployRequest, region string, rel dora.Release, limit int, now time.Time, newID func() string) (deploymentChange, error) {
	j := findLive(deps, req.Version, region)
	if err := checkUfopLimit(limit, otherRunning(deps, j), req.Expect); err != nil {
		return deploymentChange{}, err
	}
	maxN := req.Max
	if maxN == 0 {
		maxN = defaultCeiling(limit, req.Expect)
	}
	var d dora.Deployment
	if j >= 0 {
		d = deps[j]
		d.Expect, d.Max = req.Expect, maxN
		d.Desired = clamp(d.Desired, d.Expect, d.Max)
		d.Updated = now
	} else {
		d = dora.Deployment{
			ID: newID(), Ufop: ufop, Version: req.Version, Region: region,
			Expect: req.Expect, Max: maxN, Desired: req.Expect, Status: dora.DeployPending,
			Created: now, Updated: now,
		}
		if rel.Autoscale != nil {
			p := *rel.Autoscale
			d.Autoscale = &p
		}
	}
	if req.Target > 0 {
		p := dora.AutoscalePolicy{}
		if d.Autoscale != nil {
			p = *d.Autoscale
		}
		p.Target = req.Target
		d.Autoscale = &p
	}
	if err := policyInForce(d, rel, limit).Validate(); err != nil {
		return deploymentChange{}, refuse(ErrInvalid, "autoscale policy of %s %s: %s", ufop, req.Version, policyProblems(err))
	}
	return deploymentChange{Deployment: d, Index: j}, nil
}

// planResize is what PUT /instances changes: the live deployment of the
// active version in region runs num instances (floor and desired count
// num, the ceiling raised to it), or a new PENDING one does, with
// autoscale (the active release's policy). num must fit in what the
// ufop's other deployments leave of limit.
func planResize(deps []dora.Deployment, ufop, version, region string, num, limit int, autoscale *dora.AutoscalePolicy, now time.Time, newID func() string) (deploymentChange, error) {
	if num > limit {
		return deploymentChange{}, overLimit(limit)
	}
	j := findLive(deps, version, region)
	if err := checkUfopLimit(limit, otherRunning(deps, j), num); err != nil {
		return deploymentChange{}, err
	}
	if j >= 0 {
		d := deps[j]
		d.Expect, d.Desired, d.Max = num, num, max(d.Max, num)
		d.Updated = now
		return deploymentChange{Deployment: d, Index: j}, nil
	}
	return deploymentChange{Index: -1, Deployment: dora.Deployment{
		ID: newID(), Ufop: ufop, Version: version, Region: region,
		Expect: num, Max: defaultCeiling(limit, num), Desired: num,
		Autoscale: autoscale, Status: dora.DeployPending, Created: now, Updated: now,
	}}, nil
}

// activation is what switching a ufop to another version changes.
type activation struct {
	// Ufop has the new ActiveVersion and PreviousVersion.
	Ufop dora.Ufop
	// Create are the new deployments of the version, one for each region
	// the old active version serves in without a live one of the new.
	Create []dora.Deployment
	// Replace are deployments (indexes into deps) of an older previous
	// version, now REPLACED: a switch begun while another is in progress
	// ends the older one at once.
	Replace []deploymentChange
}

// planActivate makes version the active one of u, blue/green: the old
// active version becomes PreviousVersion while it has serving (live, not
// FAILED) deployments, and every region it serves in gets a deployment of
// version with the same floor, ceiling, desired count and policy unless
// one is live there. deps are u's deployments; newID names a new one.
func planActivate(u dora.Ufop, deps []dora.Deployment, version string, now time.Time, newID func() string) activation {
	old := u.ActiveVersion
	var a activation
	serving := 0
	for _, od := range deps {
		if od.Version != old || old == "" || !liveDeployment(od) || od.Status == dora.DeployFailed {
			continue
		}
		serving++
		if findLive(deps, version, od.Region) >= 0 || findLive(a.Create, version, od.Region) >= 0 {
			continue
		}
		a.Create = append(a.Create, dora.Deployment{
			ID: newID(), Ufop: u.Name, Version: version, Region: od.Region,
			Expect: od.Expect, Max: od.Max, Desired: od.Desired, Autoscale: od.Autoscale,
			Status: dora.DeployPending, Created: now, Updated: now,
		})
	}
	if prev := u.PreviousVersion; prev != "" && prev != version && prev != old {
		for j, pd := range deps {
			if pd.Version == prev && liveDeployment(pd) {
				pd.Status, pd.Message, pd.Updated = dora.DeployReplaced, "replaced by "+version, now
				a.Replace = append(a.Replace, deploymentChange{Deployment: pd, Index: j})
			}
		}
	}
	u.ActiveVersion, u.PreviousVersion = version, ""
	if serving > 0 {
		u.PreviousVersion = old
	}
	a.Ufop = u
	return a
}

func clamp(v, lo, hi int) int {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

// findLive returns the index of the live deployment of version in region,
// or -1.
func findLive(deps []dora.Deployment, version, region string) int {
	for i, d := range deps {
		if d.Version == version && d.Region == region && liveDeployment(d) {
			return i
		}
	}
	return -1
}

// runningOf is what a deployment counts against its owner's per-ufop
// instance limit: the instances it is asked to run now (Desired), nothing
// when it cannot run (FAILED, STOPPED) or was replaced.
func runningOf(d dora.Deployment) int {
	switch d.Status {
	case dora.DeployFailed, dora.DeployStopped, dora.DeployReplaced:
		return 0
	}
	return max(d.Desired, 0)
}

// otherRunning sums what the ufop's deployments (every version and region)
// but deps[skip] run: the account's limit is per ufop and counts the
// instances that can actually run. Ceilings are not reserved: the
// autoscaler grows a deployment only into what the others leave
// (autoscaler.ShareOfLimit), so "deploy v2 beside v1, then switch" fits
// the default limit and a dead version never blocks.
func otherRunning(deps []dora.Deployment, skip int) int {
	total := 0
	for i, d := range deps {
		if i != skip {
			total += runningOf(d)
		}
	}
	return total
}

// checkUfopLimit refuses a floor (the instances a deployment must run)
// that would take the ufop's running total over limit, naming the current
// total.
func checkUfopLimit(limit, others, floor int) error {
	if others+floor <= limit {
		return nil
	}
	return refuse(ErrOverLimit,
		"over the account's limit of %d instances per ufop: its other deployments run %d (every version and region; failed and stopped ones do not count), this one asks for %d; resize or stop another first",
		limit, others, floor)
}

// defaultCeiling is a deployment's ceiling when the caller names none.
func defaultCeiling(limit, floor int) int {
	return max(min(dora.DefaultMaxInstances, limit), floor)
}

// observedStatus is the status and message a live deployment d takes from
// what the runtime reports (st), and whether they differ from d's. A
// deployment the runtime has stopped with no instance while it asks for
// none was scaled to zero (floor 0, no demand), not stopped by its owner:
// it stays RUNNING (message ScaledToZero), so that the autoscaler starts
// an instance when requests wait for one.
func observedStatus(d dora.Deployment, st runtime.DeploymentStatus) (status, msg string, changed bool) {
	status, msg = st.Status, st.Message
	if status == dora.DeployStopped && len(st.Instances) == 0 && d.Desired == 0 {
		status, msg = dora.DeployRunning, ScaledToZero
	}
	if status == "" || (status == d.Status && msg == d.Message) {
		return d.Status, d.Message, false
	}
	return status, msg, true
}

// switchStep is one step of a blue/green switch of u (PreviousVersion set):
// the live deployments of the previous version to replace now (a FAILED
// one, or one whose region has a RUNNING deployment of the active
// version), and whether the switch is then over (none of the previous
// version serves any more).
func switchStep(u dora.Ufop, deps []dora.Deployment) (replace []dora.Deployment, done bool) {
	remaining := 0
	for _, d := range deps {
		if d.Version != u.PreviousVersion || !liveDeployment(d) {
			continue
		}
		j := findLive(deps, u.ActiveVersion, d.Region)
		if d.Status == dora.DeployFailed || (j >= 0 && deps[j].Status == dora.DeployRunning) {
			replace = append(replace, d)
			continue
		}
		remaining++
	}
	return replace, remaining == 0
}
