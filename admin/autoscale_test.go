package admin

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/autoscaler"
)

// TestAutoscalePolicy: a release's autoscale block is validated with the
// autoscaler's own rules (400 naming every problem), and the deployment and
// ufop views answer the policy in force: defaults, the release's block and
// the deployment's --target merged.
func TestAutoscalePolicy(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 4)
	e.ufop(alice, "scaler", dora.ModePrivate)
	e.push(alice, "scaler:v1")
	rel := func(ver string, as map[string]any) map[string]any {
		return map[string]any{"ufopname": "scaler", "verstr": ver, "image": "scaler:v1", "flavor": "C1M1", "autoscale": as}
	}

	r := e.req(alice, "POST", "/v1/releases", rel("v0", map[string]any{
		"stableWindow": int64(2 * time.Second), "panicWindow": int64(5 * time.Second), // panic longer than stable
		"panicThreshold":     0.5,                     // below 1
		"evaluationInterval": int64(time.Millisecond), // below the tick
		"maxScaleUpRate":     1,                       // not above 1
	}))
	if r.Status != http.StatusBadRequest {
		t.Fatalf("bad policy: status %d %s", r.Status, r.Body)
	}
	for _, want := range []string{"panic window", "panic threshold", "evaluation interval", "scale-up rate"} {
		if !strings.Contains(r.errMsg(), want) {
			t.Errorf("error %q does not name %q", r.errMsg(), want)
		}
	}

	stable := 6 * time.Second
	e.must(http.StatusCreated, alice, "POST", "/v1/releases", rel("v1", map[string]any{
		"stableWindow": int64(stable), "panicWindow": int64(time.Second), "scaleDownCooldown": int64(time.Second),
	}), nil)
	// Floor 0 is a valid deployment: nothing runs until demand comes.
	var d dora.Deployment
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/scaler/deployments",
		map[string]any{"version": "v1", "expect": 0, "max": 4, "target": 2}, &d)
	if d.Expect != 0 || d.Desired != 0 || d.Max != 4 {
		t.Fatalf("floor-0 deployment = %+v", d)
	}

	want := autoscaler.DefaultPolicy(0, 4)
	want.Target, want.StableWindow, want.PanicWindow, want.ScaleDownCooldown = 2, stable, time.Second, time.Second
	wantView := *policyView(want)

	var info DeploymentInfo
	e.must(http.StatusOK, alice, "GET", "/v1/ufops/scaler/deployments/"+d.ID, nil, &info)
	if info.Autoscale == nil || *info.Autoscale != wantView {
		t.Fatalf("deployment policy in force = %+v, want %+v", info.Autoscale, wantView)
	}
	var ui UfopInfo
	e.must(http.StatusOK, alice, "GET", "/v1/ufops/scaler", nil, &ui)
	if ui.Autoscale == nil || *ui.Autoscale != wantView {
		t.Fatalf("info policy in force = %+v, want %+v", ui.Autoscale, wantView)
	}
	// The runtime reports a deployment without instances as STOPPED; with
	// floor 0 and nothing desired it is scaled to zero, still live for the
	// autoscaler.
	e.rt.setStatus(d.ID, runtime.DeploymentStatus{Status: dora.DeployStopped, Instances: []runtime.InstanceStatus{}})
	if err := e.srv.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := e.deployment("scaler", d.ID); st.Status != dora.DeployRunning || st.Message != ScaledToZero {
		t.Fatalf("floor-0 deployment without instances: %s %q", st.Status, st.Message)
	}
	// The stored deployment keeps only the overrides.
	if st := e.deployment("scaler", d.ID); st.Autoscale == nil || st.Autoscale.Target != 2 || st.Autoscale.PanicThreshold != 0 {
		t.Fatalf("stored overrides = %+v", st.Autoscale)
	}
}

func TestPolicyProblems(t *testing.T) {
	p := autoscaler.DefaultPolicy(3, 2)
	p.Target = 0
	got := policyProblems(p.Validate())
	if strings.Count(got, ";") != 1 || !strings.Contains(got, "floor 3 is above ceiling 2") || !strings.Contains(got, "target") ||
		strings.Contains(got, autoscaler.ErrInvalidPolicy.Error()) {
		t.Fatalf("problems = %q", got)
	}
}

// setStatus sets the status the fake runtime reports for a deployment.
func (f *fakeRuntime) setStatus(id string, st runtime.DeploymentStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status[id] = st
}
