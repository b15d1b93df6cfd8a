package admin

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/store"
)

func TestDeploy(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice", 3), e.user("bob", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	e.release(alice, "grepd", "v1")

	cases := []struct {
		name string
		acct dora.Account
		body map[string]any
		want int
		msg  string
	}{
		{"unknown region", alice, map[string]any{"version": "v1", "region": "mars", "expect": 1}, http.StatusUnprocessableEntity, "region"},
		{"unknown version", alice, map[string]any{"version": "v9", "expect": 1}, http.StatusUnprocessableEntity, "v9"},
		{"no version", alice, map[string]any{"expect": 1}, http.StatusBadRequest, "version"},
		{"negative expect", alice, map[string]any{"version": "v1", "expect": -1}, http.StatusBadRequest, "expect"},
		{"expect over max", alice, map[string]any{"version": "v1", "expect": 3, "max": 2}, http.StatusBadRequest, "max"},
		{"max over limit", alice, map[string]any{"version": "v1", "expect": 1, "max": 4}, http.StatusForbidden, "limit of 3 instances"},
		{"expect over limit", alice, map[string]any{"version": "v1", "expect": 4}, http.StatusForbidden, "limit of 3 instances"},
		{"other user's ufop", bob, map[string]any{"version": "v1", "expect": 1}, http.StatusForbidden, "another account"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.req(tc.acct, "POST", "/v1/ufops/grepd/deployments", tc.body)
			if r.Status != tc.want || !strings.Contains(r.errMsg(), tc.msg) {
				t.Fatalf("status %d %q, want %d %q", r.Status, r.errMsg(), tc.want, tc.msg)
			}
		})
	}
	if ids := e.rt.appliedIDs(); len(ids) != 0 {
		t.Fatalf("refused deployments reached the runtime: %v", ids)
	}

	var d dora.Deployment
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/deployments", map[string]any{"version": "v1", "expect": 2, "target": 7}, &d)
	if !strings.HasPrefix(d.ID, "deploy-") || d.Region != "z0" || d.Expect != 2 || d.Max != 3 || d.Desired != 2 ||
		d.Status != dora.DeployPending || d.Autoscale == nil || d.Autoscale.Target != 7 {
		t.Fatalf("deployment = %+v", d)
	}
	spec, ok := e.rt.lastSpec(d.ID)
	if !ok || spec.OCIImage != "admin.test:8090/"+alice.ID+"/grepd:v1" || spec.Package != nil ||
		spec.Owner != alice.ID || spec.Flavor.Name != "C1M1" || spec.Release.Version != "v1" {
		t.Fatalf("spec = %+v", spec)
	}
	if u := e.ufopRecord("grepd"); u.ActiveVersion != "v1" {
		t.Fatalf("first deployed version not active: %+v", u)
	}

	// Deploying the same version in the same region updates it.
	var d2 dora.Deployment
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/deployments", map[string]any{"version": "v1", "expect": 1, "max": 2}, &d2)
	if d2.ID != d.ID || d2.Expect != 1 || d2.Max != 2 || d2.Desired != 2 {
		t.Fatalf("redeploy = %+v", d2)
	}
	var list []dora.Deployment
	e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/deployments", nil, &list)
	if len(list) != 1 {
		t.Fatalf("list = %+v", list)
	}
	e.must(http.StatusForbidden, bob, "GET", "/v1/ufops/grepd/deployments", nil, nil)

	// The status loop copies the runtime's view.
	e.rt.setRunning(d.ID, 2)
	if err := e.srv.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	var info DeploymentInfo
	e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/deployments/"+d.ID, nil, &info)
	if info.Status != dora.DeployRunning || len(info.Instances) != 2 || info.Instances[1].Index != 2 {
		t.Fatalf("info = %+v", info)
	}
	e.must(http.StatusNotFound, alice, "GET", "/v1/ufops/grepd/deployments/deploy-nope", nil, nil)
	var ui UfopInfo
	e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd", nil, &ui)
	if ui.InstanceNum != 2 || ui.Flavor != "C1M1" || ui.MaxInstanceNum != 3 {
		t.Errorf("ufop info = %+v", ui)
	}
}

func TestDeployRuntimeFailure(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	e.release(alice, "grepd", "v1")
	e.rt.applyErr = func(s runtime.Spec) error {
		if s.OCIImage != "" {
			return fmt.Errorf("%w: OCI images need a container runtime", runtime.ErrUnsupported)
		}
		return nil
	}
	var d dora.Deployment
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/deployments", map[string]any{"version": "v1", "expect": 1}, &d)
	if d.Status != dora.DeployFailed || !strings.Contains(d.Message, "unsupported") {
		t.Fatalf("deployment = %+v", d)
	}
	if got := e.deployment("grepd", d.ID); got.Status != dora.DeployFailed || got.Message != d.Message {
		t.Fatalf("stored = %+v", got)
	}
	// Max defaults to min(5, limit).
	if d.Max != dora.DefaultMaxInstances {
		t.Errorf("max = %d", d.Max)
	}
}

func TestResizeInstancesLogsEvents(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice", 4), e.user("bob", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	e.release(alice, "grepd", "v1")

	// Its answer names how to activate a version, for the CLI and the console.
	if r := e.req(alice, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 1}); r.Status != http.StatusConflict ||
		!strings.Contains(r.errMsg(), "activate a version first (qdoractl ufopver grepd -c <build>, or qdoractl deploy grepd <version>") ||
		!strings.Contains(r.errMsg(), `"Use as active version"`) || strings.Contains(r.errMsg(), "POST /version") {
		t.Fatalf("resize without an active version: %d %s", r.Status, r.Body)
	}
	e.must(http.StatusBadRequest, alice, "POST", "/v1/ufops/grepd/resize", map[string]any{}, nil)
	e.must(http.StatusBadRequest, alice, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": -1}, nil)

	var d dora.Deployment
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/deployments", map[string]any{"version": "v1", "expect": 1, "max": 2}, &d)
	var rd dora.Deployment
	e.must(http.StatusOK, alice, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 3}, &rd)
	if rd.ID != d.ID || rd.Expect != 3 || rd.Desired != 3 || rd.Max != 3 {
		t.Fatalf("resize = %+v", rd)
	}
	if spec, _ := e.rt.lastSpec(d.ID); spec.Deployment.Desired != 3 {
		t.Errorf("runtime desired = %d", spec.Deployment.Desired)
	}
	e.must(http.StatusForbidden, alice, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 5}, nil)
	if r := e.req(alice, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 1, "region": "mars"}); r.Status != http.StatusUnprocessableEntity ||
		r.errMsg() != `region "mars": unknown (qdoractl region lists the regions; GET /v1/regions)` {
		t.Fatalf("resize in an unknown region: %d %s", r.Status, r.Body)
	}
	e.must(http.StatusForbidden, bob, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 1}, nil)
	// Resize in a region without a deployment creates one, within what the
	// limit leaves (it is per ufop: z0 already runs 3 of 4).
	r := e.req(alice, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 2, "region": "z1"})
	if r.Status != http.StatusForbidden || !strings.Contains(r.errMsg(), "run 3") {
		t.Fatalf("resize z1 over the ufop's limit: %d %s", r.Status, r.Body)
	}
	var z1 dora.Deployment
	e.must(http.StatusOK, alice, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 1, "region": "z1"}, &z1)
	if z1.ID == d.ID || z1.Region != "z1" || z1.Version != "v1" || z1.Expect != 1 || z1.Max != 4 {
		t.Fatalf("z1 = %+v", z1)
	}

	e.rt.setRunning(d.ID, 2)
	var insts []runtime.InstanceStatus
	e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/instances", nil, &insts)
	if len(insts) != 2 || !insts[0].Healthy {
		t.Fatalf("instances = %+v", insts)
	}
	e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/instances?region=z1", nil, &insts)
	if len(insts) != 0 {
		t.Fatalf("z1 instances = %+v", insts)
	}
	e.must(http.StatusUnprocessableEntity, alice, "GET", "/v1/ufops/grepd/instances?region=mars", nil, nil)

	e.must(http.StatusNoContent, alice, "POST", "/v1/ufops/grepd/instances/stop", map[string]any{"indexes": []int{1, 2}}, nil)
	e.must(http.StatusNoContent, alice, "POST", "/v1/ufops/grepd/instances/start", map[string]any{"indexes": []int{}}, nil)
	e.must(http.StatusBadRequest, alice, "POST", "/v1/ufops/grepd/instances/stop", map[string]any{"indexes": []int{0}}, nil)
	e.must(http.StatusForbidden, bob, "POST", "/v1/ufops/grepd/instances/stop", map[string]any{}, nil)
	e.rt.mu.Lock()
	stopped, started := e.rt.stopped[d.ID], e.rt.started[d.ID]
	e.rt.mu.Unlock()
	if len(stopped) != 2 || stopped[1] != 2 || len(started) != 0 {
		t.Errorf("stopped %v started %v", stopped, started)
	}

	r = e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/instances/1/logs?type=stderr&tail=10", nil, nil)
	if !strings.Contains(string(r.Body), "stderr line one of 1") {
		t.Errorf("logs = %q", r.Body)
	}
	e.must(http.StatusBadRequest, alice, "GET", "/v1/ufops/grepd/instances/1/logs?type=stdin", nil, nil)
	e.must(http.StatusBadRequest, alice, "GET", "/v1/ufops/grepd/instances/1/logs?tail=0", nil, nil)
	e.must(http.StatusBadRequest, alice, "GET", "/v1/ufops/grepd/instances/0/logs", nil, nil)
	e.must(http.StatusNotFound, alice, "GET", "/v1/ufops/grepd/instances/9/logs", nil, nil)

	r = e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/logs?k=two&from=2026-01-02T03:05:00Z", nil, nil)
	if got := string(r.Body); !strings.Contains(got, "[1] 2026-01-02T03:05:05Z stdout line two of 1") || strings.Contains(got, "one") {
		t.Errorf("ufop logs = %q", got)
	}
	if got := string(r.Body); !strings.Contains(got, "[2] app.log: request two served by 2") || strings.Contains(got, "idle") {
		t.Errorf("ufop logs lack the collected log_file_paths lines filtered by k: %q", got)
	}
	e.must(http.StatusBadRequest, alice, "GET", "/v1/ufops/grepd/logs?from=yesterday", nil, nil)

	// Events written by the autoscaler are listed in key order.
	for i, ev := range []string{`{"time":"2026-01-02T03:04:05Z","from":1,"to":3,"reason":"load"}`, `{"time":"2026-01-02T03:04:07Z","from":3,"to":2,"reason":"calm"}`} {
		key := store.ScaleEventKey(d.ID, time.Unix(0, int64(1e18)+int64(i)))
		if _, err := e.st.Put(context.Background(), key, []byte(ev)); err != nil {
			t.Fatal(err)
		}
	}
	var evs []struct {
		From, To int
		Reason   string
	}
	e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/deployments/"+d.ID+"/events", nil, &evs)
	if len(evs) != 2 || evs[0].Reason != "load" || evs[1].To != 2 {
		t.Fatalf("events = %+v", evs)
	}
	e.must(http.StatusForbidden, bob, "GET", "/v1/ufops/grepd/deployments/"+d.ID+"/events", nil, nil)
}

func TestBlueGreenSwitch(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 20) // both versions' ceilings count against it
	e.ufop(alice, "grepd", dora.ModePrivate)
	e.release(alice, "grepd", "v1")
	e.release(alice, "grepd", "v2")
	ctx := context.Background()

	var v1z0, v1z1 dora.Deployment
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/deployments", map[string]any{"version": "v1", "expect": 2, "max": 4}, &v1z0)
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/deployments", map[string]any{"version": "v1", "region": "z1", "expect": 1}, &v1z1)
	e.rt.setRunning(v1z0.ID, 2)
	e.rt.setRunning(v1z1.ID, 1)

	// Deploying v2 without activate leaves v1 active.
	var v2z0 dora.Deployment
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/deployments", map[string]any{"version": "v2", "expect": 2, "max": 4}, &v2z0)
	if u := e.ufopRecord("grepd"); u.ActiveVersion != "v1" || u.PreviousVersion != "" {
		t.Fatalf("ufop = %+v", u)
	}
	// Now activate: v1 becomes previous; z1 gets a v2 deployment too.
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/deployments", map[string]any{"version": "v2", "expect": 2, "max": 4, "activate": true}, nil)
	u := e.ufopRecord("grepd")
	if u.ActiveVersion != "v2" || u.PreviousVersion != "v1" {
		t.Fatalf("after activate: %+v", u)
	}
	deps, err := e.srv.deployments(ctx, "grepd")
	if err != nil {
		t.Fatal(err)
	}
	j := findLive(deps, "v2", "z1")
	if j < 0 || deps[j].Expect != 1 {
		t.Fatalf("no v2 deployment in z1: %+v", deps)
	}
	v2z1 := deps[j]

	// Nothing is replaced until v2 runs.
	if err := e.srv.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if len(e.rt.removedIDs()) != 0 {
		t.Fatalf("removed too early: %v", e.rt.removedIDs())
	}
	e.rt.setRunning(v2z0.ID, 2)
	if err := e.srv.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if rm := e.rt.removedIDs(); len(rm) != 1 || rm[0] != v1z0.ID {
		t.Fatalf("removed %v, want [%s]", rm, v1z0.ID)
	}
	if d := e.deployment("grepd", v1z0.ID); d.Status != dora.DeployReplaced {
		t.Fatalf("v1 z0 = %+v", d)
	}
	if u := e.ufopRecord("grepd"); u.PreviousVersion != "v1" {
		t.Fatalf("previous cleared while z1 still serves v1: %+v", u)
	}
	e.rt.setRunning(v2z1.ID, 1)
	if err := e.srv.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if u := e.ufopRecord("grepd"); u.PreviousVersion != "" || u.ActiveVersion != "v2" {
		t.Fatalf("switch not finished: %+v", u)
	}
	if d := e.deployment("grepd", v1z1.ID); d.Status != dora.DeployReplaced {
		t.Fatalf("v1 z1 = %+v", d)
	}
	// A replaced deployment is not followed any more, and resize acts on v2.
	var rd dora.Deployment
	e.must(http.StatusOK, alice, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 3}, &rd)
	if rd.ID != v2z0.ID {
		t.Fatalf("resize hit %s, want %s", rd.ID, v2z0.ID)
	}
}

func TestRestartReappliesDeployments(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	d := e.deployGrepd(alice, 2)

	// A build that was running when the server stopped.
	stale := dora.Build{Ufop: "grepd", Number: 1, Status: dora.BuildRunning, Image: "grepd.v1", Created: time.Now()}
	if _, err := e.st.Put(context.Background(), store.BuildKey("grepd", 1), mustJSON(stale)); err != nil {
		t.Fatal(err)
	}

	// A new server and a fresh runtime (the old processes are gone).
	e.ts.Close()
	e.srv.Close()
	e.rt = newFakeRuntime()
	e.rt.applyCh = make(chan string, 4)
	e.start()
	defer e.runLoops()()
	select {
	case id := <-e.rt.applyCh:
		if id != d.ID {
			t.Fatalf("re-applied %s, want %s", id, d.ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the deployment was not re-applied")
	}
	spec, _ := e.rt.lastSpec(d.ID)
	if spec.Deployment.Desired != 2 || spec.OCIImage == "" {
		t.Fatalf("spec = %+v", spec)
	}
	// Builds are recovered before deployments are re-applied.
	if b, _, err := store.Get[dora.Build](context.Background(), e.st, store.BuildKey("grepd", 1)); err != nil ||
		b.Status != dora.BuildFailed || !strings.Contains(b.Error, "interrupted") {
		t.Fatalf("stale build = %+v, %v", b, err)
	}
	// Run follows the status into the store.
	e.rt.setRunning(d.ID, 2)
	deadline := time.Now().Add(10 * time.Second)
	for e.deployment("grepd", d.ID).Status != dora.DeployRunning {
		if time.Now().After(deadline) {
			t.Fatal("status never became RUNNING in the store")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestReconcileReappliesLostDeployment(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	d := e.deployGrepd(alice, 1)
	if err := e.rt.Remove(context.Background(), d.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.rt.lastSpec(d.ID); !ok {
		t.Fatal("a deployment the runtime lost was not applied again")
	}
}

func TestDeployRuntimeBusyIsRetried(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	e.release(alice, "grepd", "v1")
	busy := true
	e.rt.applyErr = func(runtime.Spec) error {
		if busy {
			return fmt.Errorf("nomad: %w", runtime.ErrBusy)
		}
		return nil
	}
	var d dora.Deployment
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/deployments", map[string]any{"version": "v1", "expect": 1}, &d)
	if d.Status != dora.DeployPending {
		t.Fatalf("busy runtime made the deployment %s: %s", d.Status, d.Message)
	}
	if _, ok := e.rt.lastSpec(d.ID); ok {
		t.Fatal("applied while busy")
	}
	e.rt.mu.Lock()
	busy = false
	e.rt.mu.Unlock()
	if err := e.srv.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.rt.lastSpec(d.ID); !ok {
		t.Fatal("not applied again once the runtime was free")
	}
}

func TestArtifactURLIsStableWithinAWeek(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	e := newEnv(t, func(c *Config) { c.Now = func() time.Time { return now } })
	a := e.srv.artifactURL("grepd", 1)
	now = now.Add(time.Hour)
	if b := e.srv.artifactURL("grepd", 1); a != b {
		t.Errorf("artifact URL changed within the hour: %s vs %s", a, b)
	}
	q := a[strings.Index(a, "?e=")+3 : strings.Index(a, "&token=")]
	var deadline int64
	if _, err := fmt.Sscan(q, &deadline); err != nil {
		t.Fatal(err)
	}
	if d := time.Unix(deadline, 0).Sub(now); d < 7*24*time.Hour || d > 14*24*time.Hour {
		t.Errorf("artifact URL valid for %s", d)
	}
	noKeys := newEnv(t, func(c *Config) { c.RootAK, c.RootSK = "", "" })
	if u := noKeys.srv.artifactURL("grepd", 1); u != "" {
		t.Errorf("artifact URL without root keys: %q", u)
	}
}

// The account's instance limit is per ufop and counts what can actually
// run: the instances its deployments (every version and region) are asked
// to run, not their ceilings; failed ones count nothing. Seed 000's
// "deploy v2 beside v1, then switch" fits the defaults.
func TestInstanceLimitIsPerUfop(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0) // the default limit, 5
	e.ufop(alice, "grepd", dora.ModePrivate)
	e.release(alice, "grepd", "v1")
	e.release(alice, "grepd", "v2")
	deploy := func(body map[string]any) resp {
		return e.req(alice, "POST", "/v1/ufops/grepd/deployments", body)
	}
	var v1, v2 dora.Deployment
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/deployments", map[string]any{"version": "v1", "expect": 1}, &v1)
	if v1.Max != dora.DefaultMaxInstances {
		t.Fatalf("v1 default ceiling = %d", v1.Max)
	}
	// Defaults, no --max: v2 beside v1 is accepted, with the full default ceiling.
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/deployments", map[string]any{"version": "v2", "expect": 1}, &v2)
	if v2.Max != dora.DefaultMaxInstances {
		t.Fatalf("v2 default ceiling = %d", v2.Max)
	}
	// Floors still add up: 1 + 1 + 4 > 5.
	if r := deploy(map[string]any{"version": "v1", "region": "z1", "expect": 4}); r.Status != http.StatusForbidden ||
		!strings.Contains(r.errMsg(), "limit of 5") || !strings.Contains(r.errMsg(), "run 2") {
		t.Fatalf("deploy over the limit: %d %s, want 403 naming the 2 running", r.Status, r.Body)
	}
	// Updating a deployment does not count its own count.
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/deployments", map[string]any{"version": "v1", "expect": 4}, nil)
	if r := deploy(map[string]any{"version": "v1", "expect": 5}); r.Status != http.StatusForbidden {
		t.Fatalf("raising v1 to 5 with v2 at 1: %d %s", r.Status, r.Body)
	}
	// Resizing the active version (v1) is bounded the same way.
	if r := e.req(alice, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 5}); r.Status != http.StatusForbidden {
		t.Fatalf("resize v1 to 5 with v2 at 1: %d %s", r.Status, r.Body)
	}
	// A crashed version does not block: once v2 failed, v1 may take all 5.
	d := e.deployment("grepd", v2.ID)
	d.Status, d.Message = dora.DeployFailed, "crashed"
	if _, err := e.st.Put(t.Context(), store.DeploymentKey("grepd", v2.ID), mustJSON(d)); err != nil {
		t.Fatal(err)
	}
	var rd dora.Deployment
	e.must(http.StatusOK, alice, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 5}, &rd)
	if rd.ID != v1.ID || rd.Expect != 5 {
		t.Fatalf("resize after v2 failed = %+v", rd)
	}
}
