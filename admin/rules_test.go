package admin

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/api"
)

var ruleNow = time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)

// ids names new deployments new-1, new-2, ... in order.
func ids() func() string {
	n := 0
	return func() string { n++; return fmt.Sprintf("new-%d", n) }
}

func dep(id, version, region, status string, expect, desired, maxN int) dora.Deployment {
	return dora.Deployment{ID: id, Ufop: "grepd", Version: version, Region: region, Status: status,
		Expect: expect, Desired: desired, Max: maxN}
}

func TestCheckDeployRequest(t *testing.T) {
	for _, c := range []struct {
		name string
		req  api.DeployRequest
		want error
	}{
		{"ok", api.DeployRequest{Version: "v1", Expect: 2, Max: 4}, nil},
		{"ceiling only", api.DeployRequest{Version: "v1", Max: 5}, nil},
		{"no version", api.DeployRequest{Expect: 1}, ErrInvalid},
		{"negative floor", api.DeployRequest{Version: "v1", Expect: -1}, ErrInvalid},
		{"negative target", api.DeployRequest{Version: "v1", Target: -1}, ErrInvalid},
		{"huge target", api.DeployRequest{Version: "v1", Target: 2e6}, ErrInvalid},
		{"floor over ceiling", api.DeployRequest{Version: "v1", Expect: 3, Max: 2}, ErrInvalid},
		{"floor over limit", api.DeployRequest{Version: "v1", Expect: 6}, ErrOverLimit},
		{"ceiling over limit", api.DeployRequest{Version: "v1", Expect: 1, Max: 6}, ErrOverLimit},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := checkDeployRequest(c.req, 5)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("checkDeployRequest(%+v) = %v, want %v", c.req, err, c.want)
			}
		})
	}
}

func TestPlanDeploy(t *testing.T) {
	rel := dora.Release{Ufop: "grepd", Version: "v2", Autoscale: &dora.AutoscalePolicy{Target: 3}}
	badRel := dora.Release{Ufop: "grepd", Version: "v2", Autoscale: &dora.AutoscalePolicy{StableWindow: time.Nanosecond}}
	v1 := dep("d1", "v1", "z0", dora.DeployRunning, 2, 3, 5)
	v2 := dep("d2", "v2", "z0", dora.DeployRunning, 1, 5, 5)
	for _, c := range []struct {
		name    string
		deps    []dora.Deployment
		req     api.DeployRequest
		rel     dora.Release
		wantErr error
		// want: the index updated (-1: new) and floor, desired, ceiling
		// and target of the record.
		index                 int
		expect, desired, maxN int
		target                float64
	}{
		{name: "new beside another version", deps: []dora.Deployment{v1},
			req: api.DeployRequest{Version: "v2", Expect: 1}, rel: rel,
			index: -1, expect: 1, desired: 1, maxN: 5, target: 3},
		{name: "new, target overrides the release's", deps: nil,
			req: api.DeployRequest{Version: "v2", Expect: 2, Max: 3, Target: 7}, rel: rel,
			index: -1, expect: 2, desired: 2, maxN: 3, target: 7},
		{name: "update clamps desired into the new bounds", deps: []dora.Deployment{v1, v2},
			req: api.DeployRequest{Version: "v2", Expect: 1, Max: 2}, rel: rel,
			index: 1, expect: 1, desired: 2, maxN: 2},
		{name: "the others' running count against the floor", deps: []dora.Deployment{v1},
			req: api.DeployRequest{Version: "v2", Expect: 3}, rel: rel, wantErr: ErrOverLimit},
		{name: "failed and replaced ones do not count",
			deps: []dora.Deployment{dep("f", "v0", "z0", dora.DeployFailed, 5, 5, 5), dep("r", "v1", "z0", dora.DeployReplaced, 5, 5, 5)},
			req:  api.DeployRequest{Version: "v2", Expect: 5}, rel: rel,
			index: -1, expect: 5, desired: 5, maxN: 5, target: 3},
		{name: "another region is another deployment", deps: []dora.Deployment{v2},
			req: api.DeployRequest{Version: "v2", Region: "z1", Expect: 1}, rel: rel, wantErr: ErrOverLimit},
		{name: "invalid policy", deps: nil,
			req: api.DeployRequest{Version: "v2", Expect: 1}, rel: badRel, wantErr: ErrInvalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			region := c.req.Region
			if region == "" {
				region = "z0"
			}
			ch, err := planDeploy(c.deps, "grepd", c.req, region, c.rel, 5, ruleNow, ids())
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("planDeploy = %+v, %v; want %v", ch, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			d := ch.Deployment
			if ch.Index != c.index || d.Expect != c.expect || d.Desired != c.desired || d.Max != c.maxN {
				t.Fatalf("planDeploy = index %d %+v; want index %d expect %d desired %d max %d",
					ch.Index, d, c.index, c.expect, c.desired, c.maxN)
			}
			if d.Version != c.req.Version || d.Region != region || !d.Updated.Equal(ruleNow) {
				t.Fatalf("planDeploy record = %+v", d)
			}
			if ch.Index < 0 && (d.ID != "new-1" || d.Status != dora.DeployPending || !d.Created.Equal(ruleNow)) {
				t.Fatalf("new deployment = %+v", d)
			}
			if c.target != 0 && (d.Autoscale == nil || d.Autoscale.Target != c.target) {
				t.Fatalf("autoscale = %+v, want target %v", d.Autoscale, c.target)
			}
		})
	}
	// The release's policy is copied, not shared.
	ch, err := planDeploy(nil, "grepd", api.DeployRequest{Version: "v2", Expect: 1, Target: 9}, "z0", rel, 5, ruleNow, ids())
	if err != nil || rel.Autoscale.Target != 3 || ch.Deployment.Autoscale.Target != 9 {
		t.Fatalf("target override changed the release: %v %+v", err, rel.Autoscale)
	}
}

func TestPlanResize(t *testing.T) {
	v1 := dep("d1", "v1", "z0", dora.DeployRunning, 1, 2, 3)
	other := dep("d2", "v0", "z1", dora.DeployRunning, 2, 2, 2)
	policy := &dora.AutoscalePolicy{Target: 4}
	for _, c := range []struct {
		name                  string
		deps                  []dora.Deployment
		num                   int
		wantErr               error
		index                 int
		expect, desired, maxN int
	}{
		{name: "raises the ceiling", deps: []dora.Deployment{v1}, num: 4, index: 0, expect: 4, desired: 4, maxN: 4},
		{name: "keeps a higher ceiling", deps: []dora.Deployment{v1}, num: 0, index: 0, expect: 0, desired: 0, maxN: 3},
		{name: "new in a region without one", deps: nil, num: 2, index: -1, expect: 2, desired: 2, maxN: 5},
		{name: "over the limit alone", deps: []dora.Deployment{v1}, num: 6, wantErr: ErrOverLimit},
		{name: "over the limit with the others", deps: []dora.Deployment{v1, other}, num: 4, wantErr: ErrOverLimit},
	} {
		t.Run(c.name, func(t *testing.T) {
			ch, err := planResize(c.deps, "grepd", "v1", "z0", c.num, 5, policy, ruleNow, ids())
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("planResize = %+v, %v; want %v", ch, err, c.wantErr)
				}
				return
			}
			d := ch.Deployment
			if err != nil || ch.Index != c.index || d.Expect != c.expect || d.Desired != c.desired || d.Max != c.maxN {
				t.Fatalf("planResize = index %d %+v, %v; want index %d expect %d desired %d max %d",
					ch.Index, d, err, c.index, c.expect, c.desired, c.maxN)
			}
			if ch.Index < 0 && (d.Autoscale != policy || d.Version != "v1" || d.Status != dora.DeployPending) {
				t.Fatalf("new deployment = %+v", d)
			}
		})
	}
}

func TestPlanActivate(t *testing.T) {
	for _, c := range []struct {
		name        string
		u           dora.Ufop
		deps        []dora.Deployment
		version     string
		wantPrev    string
		wantCreate  []string // regions of the new deployments
		wantReplace []int
	}{
		{name: "first version: nothing serves",
			u: dora.Ufop{Name: "grepd"}, version: "v1"},
		{name: "old serves in two regions, new live in one",
			u: dora.Ufop{Name: "grepd", ActiveVersion: "v1"},
			deps: []dora.Deployment{
				dep("a", "v1", "z0", dora.DeployRunning, 1, 1, 2),
				dep("b", "v1", "z1", dora.DeployRunning, 1, 1, 2),
				dep("c", "v2", "z0", dora.DeployPending, 1, 1, 2),
			},
			version: "v2", wantPrev: "v1", wantCreate: []string{"z1"}},
		{name: "a failed old version does not serve",
			u: dora.Ufop{Name: "grepd", ActiveVersion: "v1"},
			deps: []dora.Deployment{
				dep("a", "v1", "z0", dora.DeployFailed, 1, 1, 2),
				dep("b", "v1", "z1", dora.DeployReplaced, 1, 1, 2),
			},
			version: "v2", wantPrev: ""},
		{name: "a stopped old version still serves (it may start again)",
			u: dora.Ufop{Name: "grepd", ActiveVersion: "v1"},
			deps: []dora.Deployment{
				dep("a", "v1", "z1", dora.DeployStopped, 1, 1, 2),
			},
			version: "v2", wantPrev: "v1", wantCreate: []string{"z1"}},
		{name: "a switch during a switch replaces the older previous version",
			u: dora.Ufop{Name: "grepd", ActiveVersion: "v2", PreviousVersion: "v1"},
			deps: []dora.Deployment{
				dep("a", "v1", "z0", dora.DeployRunning, 1, 1, 2),
				dep("b", "v2", "z0", dora.DeployRunning, 1, 1, 2),
			},
			version: "v3", wantPrev: "v2", wantCreate: []string{"z0"}, wantReplace: []int{0}},
		{name: "back to the previous version keeps it",
			u: dora.Ufop{Name: "grepd", ActiveVersion: "v2", PreviousVersion: "v1"},
			deps: []dora.Deployment{
				dep("a", "v1", "z0", dora.DeployRunning, 1, 1, 2),
				dep("b", "v2", "z0", dora.DeployRunning, 1, 1, 2),
			},
			version: "v1", wantPrev: "v2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := planActivate(c.u, c.deps, c.version, ruleNow, ids())
			if a.Ufop.ActiveVersion != c.version || a.Ufop.PreviousVersion != c.wantPrev {
				t.Fatalf("ufop = %+v, want active %s previous %q", a.Ufop, c.version, c.wantPrev)
			}
			if len(a.Create) != len(c.wantCreate) {
				t.Fatalf("create = %+v, want regions %v", a.Create, c.wantCreate)
			}
			for i, d := range a.Create {
				old := c.deps[findLive(c.deps, c.u.ActiveVersion, d.Region)]
				if d.Region != c.wantCreate[i] || d.Version != c.version || d.Status != dora.DeployPending ||
					d.Expect != old.Expect || d.Max != old.Max || d.Desired != old.Desired {
					t.Fatalf("create[%d] = %+v, want a copy of %+v in %s", i, d, old, c.wantCreate[i])
				}
			}
			if len(a.Replace) != len(c.wantReplace) {
				t.Fatalf("replace = %+v, want %v", a.Replace, c.wantReplace)
			}
			for i, r := range a.Replace {
				if r.Index != c.wantReplace[i] || r.Deployment.Status != dora.DeployReplaced || r.Deployment.Message != "replaced by "+c.version {
					t.Fatalf("replace[%d] = %+v", i, r)
				}
			}
			if c.deps != nil && c.deps[0].Status == dora.DeployReplaced {
				t.Fatal("planActivate changed its input")
			}
		})
	}
}

func TestObservedStatus(t *testing.T) {
	running := dep("a", "v1", "z0", dora.DeployRunning, 0, 0, 2)
	for _, c := range []struct {
		name        string
		d           dora.Deployment
		st          runtime.DeploymentStatus
		status, msg string
		changed     bool
	}{
		{"same", running, runtime.DeploymentStatus{Status: dora.DeployRunning}, dora.DeployRunning, "", false},
		{"runtime says nothing", running, runtime.DeploymentStatus{}, dora.DeployRunning, "", false},
		{"failed", running, runtime.DeploymentStatus{Status: dora.DeployFailed, Message: "exit 1"}, dora.DeployFailed, "exit 1", true},
		{"scaled to zero stays running", running, runtime.DeploymentStatus{Status: dora.DeployStopped}, dora.DeployRunning, ScaledToZero, true},
		{"stopped with a floor is stopped", dep("a", "v1", "z0", dora.DeployRunning, 1, 1, 2),
			runtime.DeploymentStatus{Status: dora.DeployStopped}, dora.DeployStopped, "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, msg, changed := observedStatus(c.d, c.st)
			if status != c.status || msg != c.msg || changed != c.changed {
				t.Fatalf("observedStatus = %q %q %v, want %q %q %v", status, msg, changed, c.status, c.msg, c.changed)
			}
		})
	}
}

func TestSwitchStep(t *testing.T) {
	u := dora.Ufop{Name: "grepd", ActiveVersion: "v2", PreviousVersion: "v1"}
	for _, c := range []struct {
		name    string
		deps    []dora.Deployment
		replace []string
		done    bool
	}{
		{"new not running yet", []dora.Deployment{
			dep("a", "v1", "z0", dora.DeployRunning, 1, 1, 1), dep("b", "v2", "z0", dora.DeployPending, 1, 1, 1)}, nil, false},
		{"new running: old replaced, done", []dora.Deployment{
			dep("a", "v1", "z0", dora.DeployRunning, 1, 1, 1), dep("b", "v2", "z0", dora.DeployRunning, 1, 1, 1)}, []string{"a"}, true},
		{"one region of two", []dora.Deployment{
			dep("a", "v1", "z0", dora.DeployRunning, 1, 1, 1), dep("b", "v1", "z1", dora.DeployRunning, 1, 1, 1),
			dep("c", "v2", "z0", dora.DeployRunning, 1, 1, 1), dep("d", "v2", "z1", dora.DeployPending, 1, 1, 1)}, []string{"a"}, false},
		{"a failed old one goes at once", []dora.Deployment{
			dep("a", "v1", "z0", dora.DeployFailed, 1, 1, 1)}, []string{"a"}, true},
		{"nothing of the old serves", []dora.Deployment{
			dep("a", "v1", "z0", dora.DeployReplaced, 1, 1, 1)}, nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			replace, done := switchStep(u, c.deps)
			var got []string
			for _, d := range replace {
				got = append(got, d.ID)
			}
			if fmt.Sprint(got) != fmt.Sprint(c.replace) || done != c.done {
				t.Fatalf("switchStep = %v %v, want %v %v", got, done, c.replace, c.done)
			}
		})
	}
}
