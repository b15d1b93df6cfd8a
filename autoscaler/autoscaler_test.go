package autoscaler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler/load"
	"github.com/doraproject/dora/autoscaler/load/memory"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/bolt/bolttest"
)

// clock is a fake clock moved by the test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type scaleCall struct {
	ID     string
	Count  int
	Reason string
}

// fakeTarget records Scale calls; Ready is the last count scaled to (or the
// deployment's Desired), unless readyFn says otherwise.
type fakeTarget struct {
	mu       sync.Mutex
	calls    []scaleCall
	readies  int
	count    map[string]int
	readyFn  func(d dora.Deployment) (int, error)
	scaleErr error
}

func (f *fakeTarget) Scale(_ context.Context, d dora.Deployment, count int, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, scaleCall{d.ID, count, reason})
	if f.scaleErr != nil {
		return f.scaleErr
	}
	if f.count == nil {
		f.count = map[string]int{}
	}
	f.count[d.ID] = count
	return nil
}

func (f *fakeTarget) Ready(_ context.Context, d dora.Deployment) (int, error) {
	f.mu.Lock()
	fn := f.readyFn
	f.readies++
	n, ok := f.count[d.ID]
	f.mu.Unlock()
	if fn != nil {
		return fn(d)
	}
	if !ok {
		n = d.Desired
	}
	return n, nil
}

func (f *fakeTarget) Calls() []scaleCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]scaleCall(nil), f.calls...)
}

func (f *fakeTarget) set(fn func(f *fakeTarget)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

type harness struct {
	t      *testing.T
	ctx    context.Context
	st     store.Store
	load   *memory.Store
	target *fakeTarget
	clock  *clock
	reg    *prometheus.Registry
	a      *Autoscaler
	filled map[load.Key]time.Time // last second of load recorded
}

func newHarness(t *testing.T, mod ...func(*Config)) *harness {
	t.Helper()
	st := bolttest.Open(t, t.TempDir())
	h := &harness{t: t, ctx: context.Background(), st: st, load: memory.New(time.Hour), target: &fakeTarget{},
		clock: &clock{now: t0}, reg: prometheus.NewRegistry(), filled: map[load.Key]time.Time{}}
	cfg := Config{Store: st, Load: h.load, Target: h.target, Now: h.clock.Now, Metrics: h.reg,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, m := range mod {
		m(&cfg)
	}
	h.a = New(cfg)
	return h
}

func (h *harness) put(key string, v any) {
	h.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.st.Put(h.ctx, key, b); err != nil {
		h.t.Fatal(err)
	}
}

func depKey(d dora.Deployment) string { return store.DeploymentKey(d.Ufop, d.ID) }

func (h *harness) deployment(id string) dora.Deployment {
	h.t.Helper()
	kvs, err := h.st.List(h.ctx, store.PrefixDeployments)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, kv := range kvs {
		var d dora.Deployment
		if err := json.Unmarshal(kv.Value, &d); err != nil {
			h.t.Fatal(err)
		}
		if d.ID == id {
			return d
		}
	}
	h.t.Fatalf("no deployment %s", id)
	return dora.Deployment{}
}

// concurrency records a load of c for the seconds of the minute before now
// not recorded yet.
func (h *harness) concurrency(d dora.Deployment, c float64) {
	h.t.Helper()
	now := h.clock.Now().Truncate(time.Second)
	key := load.Key{Ufop: d.Ufop, Version: d.Version, Region: d.Region}
	from := now.Add(-60 * time.Second)
	if last, ok := h.filled[key]; ok && !last.Before(from) {
		from = last.Add(time.Second)
	}
	var ss []load.Sample
	for s := from; s.Before(now); s = s.Add(time.Second) {
		ss = append(ss, load.Sample{Key: key, Time: s, Concurrency: c})
		h.filled[key] = s
	}
	if len(ss) == 0 {
		return
	}
	if err := h.load.Record(h.ctx, ss); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) tick() {
	h.t.Helper()
	if err := h.a.Tick(h.ctx); err != nil {
		h.t.Fatal(err)
	}
}

// step moves the clock one interval, keeps the load at c and ticks.
func (h *harness) step(d dora.Deployment, c float64) {
	h.t.Helper()
	h.clock.Add(2 * time.Second)
	h.concurrency(d, c)
	h.tick()
}

func (h *harness) events(id string) []Event {
	h.t.Helper()
	evs, err := Events(h.ctx, h.st, id)
	if err != nil {
		h.t.Fatal(err)
	}
	return evs
}

func dep(id string, expect, max, desired int, status string) dora.Deployment {
	return dora.Deployment{ID: id, Ufop: "grepd", Version: "v1", Region: "z0", Expect: expect, Max: max, Desired: desired, Status: status}
}

func TestLoopScalesUpOnLoadAndActsOnlyOnChange(t *testing.T) {
	h := newHarness(t)
	d := dep("deploy-a", 1, 5, 2, dora.DeployRunning)
	h.put(depKey(d), d)
	h.concurrency(d, 30) // wants 3 with 2 ready: no panic
	h.tick()

	if got := h.target.Calls(); len(got) != 1 || got[0] != (scaleCall{"deploy-a", 3, ReasonScaleUp}) {
		t.Fatalf("calls = %+v", got)
	}
	if got := h.deployment("deploy-a"); got.Desired != 3 || !got.Updated.Equal(t0) {
		t.Errorf("stored deployment: desired %d updated %v", got.Desired, got.Updated)
	}
	evs := h.events("deploy-a")
	if len(evs) != 1 || evs[0].From != 2 || evs[0].To != 3 || evs[0].Reason != ReasonScaleUp || !evs[0].Time.Equal(t0) {
		t.Fatalf("events = %+v", evs)
	}
	kvs, _ := h.st.List(h.ctx, store.PrefixScaleEvents)
	if want := store.ScaleEventKey("deploy-a", t0); len(kvs) != 1 || kvs[0].Key != want {
		t.Errorf("event keys = %v, want %s", kvs, want)
	}
	var raw map[string]any
	if err := json.Unmarshal(kvs[0].Value, &raw); err != nil || len(raw) != 4 || raw["from"] != 2.0 || raw["to"] != 3.0 || raw["reason"] != ReasonScaleUp || raw["time"] == nil {
		t.Errorf("event JSON = %s (%v)", kvs[0].Value, err)
	}

	for i := 0; i < 5; i++ {
		h.step(d, 30)
	}
	if got := h.target.Calls(); len(got) != 1 {
		t.Errorf("acted without a change: %+v", got)
	}
	if evs := h.events("deploy-a"); len(evs) != 1 {
		t.Errorf("events = %+v", evs)
	}
}

func TestLoopSkipsDeploymentsThatDoNotRun(t *testing.T) {
	h := newHarness(t)
	for i, status := range []string{dora.DeployStopped, dora.DeployReplaced, dora.DeployFailed, "", "WEIRD"} {
		d := dep(fmt.Sprintf("deploy-%d", i), 1, 5, 1, status)
		h.put(depKey(d), d)
		h.concurrency(d, 100)
	}
	h.put(store.DeploymentKey("grepd", "garbage"), "not a deployment")
	h.tick()
	if got := h.target.Calls(); len(got) != 0 {
		t.Errorf("scaled a deployment that does not run: %+v", got)
	}
	if h.target.readies != 0 {
		t.Errorf("asked the target about %d stopped deployments", h.target.readies)
	}

	// A PENDING deployment is scaled.
	d := dep("deploy-p", 1, 5, 1, dora.DeployPending)
	d.Version = "v2"
	h.put(depKey(d), d)
	h.concurrency(d, 15)
	h.tick()
	if got := h.target.Calls(); len(got) != 1 || got[0].ID != "deploy-p" || got[0].Count != 2 {
		t.Errorf("calls = %+v", got)
	}
}

func TestLoopFloorRaisedByUserWinsAtOnce(t *testing.T) {
	h := newHarness(t, func(c *Config) {})
	d := dep("deploy-a", 1, 8, 2, dora.DeployRunning)
	d.Autoscale = &dora.AutoscalePolicy{ScaleUpCooldown: time.Hour}
	h.put(depKey(d), d)
	h.concurrency(d, 30)
	h.tick() // 2 → 3, scale-up cooldown for an hour
	h.step(d, 60)
	if got := h.target.Calls(); len(got) != 1 {
		t.Fatalf("scaled up during the cooldown: %+v", got)
	}
	// The user deploys again with --expect 5: only Expect changes.
	cur := h.deployment("deploy-a")
	cur.Expect = 5
	h.put(depKey(cur), cur)
	h.step(d, 60)
	got := h.target.Calls()
	if len(got) != 2 || got[1].Count != 5 || got[1].Reason != ReasonClampFloor {
		t.Fatalf("calls = %+v", got)
	}
	if d := h.deployment("deploy-a"); d.Desired != 5 || d.Expect != 5 {
		t.Errorf("stored: %+v", d)
	}
}

func TestLoopAdoptsAResizeAndDoesNotUndoIt(t *testing.T) {
	h := newHarness(t)
	d := dep("deploy-a", 1, 8, 3, dora.DeployRunning)
	h.put(depKey(d), d)
	h.clock.Add(time.Hour) // history: a full stable window
	h.concurrency(d, 30)
	h.tick()
	h.clock.Add(2 * time.Minute)
	h.tick()
	if got := h.target.Calls(); len(got) != 0 {
		t.Fatalf("calls = %+v", got)
	}
	// The user resizes to 6 (admin writes Desired and applies it).
	cur := h.deployment("deploy-a")
	cur.Desired = 6
	h.put(depKey(cur), cur)
	h.target.set(func(f *fakeTarget) { f.count = map[string]int{"deploy-a": 6} })
	h.step(d, 30)
	if got := h.target.Calls(); len(got) != 0 {
		t.Fatalf("undid the user's resize at once: %+v", got)
	}
	// After the scale-down cooldown the load decides again.
	for i := 0; i < 15; i++ {
		h.step(d, 30)
	}
	got := h.target.Calls()
	if len(got) != 1 || got[0].Count != 3 || got[0].Reason != ReasonScaleDown {
		t.Fatalf("calls = %+v", got)
	}
}

func TestLoopConflictingWriteWins(t *testing.T) {
	h := newHarness(t)
	d := dep("deploy-a", 1, 8, 2, dora.DeployRunning)
	h.put(depKey(d), d)
	h.concurrency(d, 30)
	// While the autoscaler decides, the user raises the floor.
	h.target.set(func(f *fakeTarget) {
		f.readyFn = func(dd dora.Deployment) (int, error) {
			cur := dd
			cur.Expect, cur.Desired = 6, 6
			h.put(depKey(cur), cur)
			return 2, nil
		}
	})
	h.tick()
	if got := h.target.Calls(); len(got) != 0 {
		t.Fatalf("scaled over a concurrent write: %+v", got)
	}
	if got := h.deployment("deploy-a"); got.Desired != 6 || got.Expect != 6 {
		t.Fatalf("the user's write was lost: %+v", got)
	}
	if evs := h.events("deploy-a"); len(evs) != 0 {
		t.Errorf("events = %+v", evs)
	}
}

func TestLoopRetriesFailedAndBusyScales(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"failure", errors.New("nomad unreachable")},
		{"busy", fmt.Errorf("job grepd: %w", ErrTargetBusy)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			d := dep("deploy-a", 1, 8, 2, dora.DeployRunning)
			d.Autoscale = &dora.AutoscalePolicy{ScaleUpCooldown: time.Hour}
			h.put(depKey(d), d)
			h.target.set(func(f *fakeTarget) { f.scaleErr = tc.err })
			h.concurrency(d, 30)
			h.tick()
			h.step(d, 30)
			got := h.target.Calls()
			if len(got) != 2 || got[0].Count != 3 || got[1].Count != 3 {
				t.Fatalf("calls = %+v", got)
			}
			if d := h.deployment("deploy-a"); d.Desired != 3 {
				t.Errorf("stored desired %d", d.Desired)
			}
			h.target.set(func(f *fakeTarget) { f.scaleErr = nil })
			h.step(d, 30)
			h.step(d, 30)
			got = h.target.Calls()
			if len(got) != 3 || got[2].Count != 3 {
				t.Fatalf("calls after recovery = %+v", got)
			}
			// A retry is the same change: it carries the reason the change
			// was decided for, not what a later evaluation says of the new
			// count (Nomad shows it as the scaling event's message).
			for _, c := range got {
				if c.Reason != ReasonScaleUp {
					t.Fatalf("retried scale with reason %q, want %q: calls = %+v", c.Reason, ReasonScaleUp, got)
				}
			}
			// A busy target started no cooldown: the next rise scales at
			// once; a failed scale did start it.
			h.step(d, 60)
			got = h.target.Calls()
			if tc.err == ErrTargetBusy || errors.Is(tc.err, ErrTargetBusy) {
				if len(got) != 4 || got[3].Count != 4 {
					t.Errorf("after busy: calls = %+v", got)
				}
			} else if len(got) != 3 {
				t.Errorf("after failure: calls = %+v", got)
			}
			if evs := h.events("deploy-a"); len(evs) != len(got)-2 {
				t.Errorf("events %+v for calls %+v", evs, got)
			}
		})
	}
}

func TestLoopRestartDoesNotScaleDown(t *testing.T) {
	h := newHarness(t)
	d := dep("deploy-a", 1, 8, 6, dora.DeployRunning)
	h.put(depKey(d), d)
	h.concurrency(d, 0.5) // a quiet minute: wants 1
	h.tick()
	for h.clock.Now().Before(t0.Add(58 * time.Second)) {
		h.step(d, 0.5)
	}
	if got := h.target.Calls(); len(got) != 0 {
		t.Fatalf("scaled down without a full window of history: %+v", got)
	}
	h.step(d, 0.5)
	if got := h.target.Calls(); len(got) != 1 || got[0].Count != 3 || got[0].Reason != ReasonScaleDown {
		t.Fatalf("calls = %+v", got)
	}
}

func TestLoopRunStartsWithoutHistory(t *testing.T) {
	// A leadership change (a new Run) forgets what an earlier term learnt.
	h := newHarness(t)
	d := dep("deploy-a", 1, 8, 6, dora.DeployRunning)
	h.put(depKey(d), d)
	h.concurrency(d, 0.5)
	h.tick()
	h.clock.Add(5 * time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.a.Run(ctx); err != nil {
		t.Fatal(err)
	}
	h.target.set(func(f *fakeTarget) { f.calls = nil })
	h.step(d, 0.5)
	if got := h.target.Calls(); len(got) != 0 {
		t.Fatalf("scaled down right after a new Run: %+v", got)
	}
}

func TestLoopCeilingBoundedByAccountLimitAndReleasePolicy(t *testing.T) {
	h := newHarness(t)
	h.put(store.AccountKey("1001"), dora.Account{ID: "1001", InstanceLimit: 4})
	h.put(store.UfopKey("grepd"), dora.Ufop{Name: "grepd", Owner: "1001"})
	h.put(store.ReleaseKey("grepd", "v1"), dora.Release{Ufop: "grepd", Version: "v1", Autoscale: &dora.AutoscalePolicy{Target: 5}})
	d := dep("deploy-a", 1, 10, 3, dora.DeployRunning)
	h.put(depKey(d), d)
	h.concurrency(d, 15) // target 5: wants 3
	h.tick()
	if got := h.target.Calls(); len(got) != 0 {
		t.Fatalf("calls = %+v", got)
	}
	h.step(d, 200) // wants 5 and more in panic, bounded by the account's 4
	got := h.target.Calls()
	if len(got) != 1 || got[0].Count != 4 || got[0].Reason != ReasonClampCeiling {
		t.Fatalf("calls = %+v", got)
	}
}

func TestLoopKeepsAtMostMaxEvents(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxEvents = 3 })
	d := dep("deploy-a", 1, 20, 1, dora.DeployRunning)
	h.put(depKey(d), d)
	for i := 1; i <= 5; i++ {
		cur := h.deployment("deploy-a")
		cur.Expect = i + 1 // each raise of the floor is a change
		h.put(depKey(cur), cur)
		h.step(d, 0)
	}
	evs := h.events("deploy-a")
	if len(evs) != 3 || evs[0].To != 4 || evs[2].To != 6 {
		t.Fatalf("events = %+v", evs)
	}
}

func TestLoopMetrics(t *testing.T) {
	h := newHarness(t)
	d := dep("deploy-a", 1, 20, 2, dora.DeployRunning)
	h.put(depKey(d), d)
	h.concurrency(d, 100) // wants 10 with 2 ready: panic
	h.tick()
	gauges := map[string]float64{}
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetGauge() != nil {
				gauges[mf.GetName()] = m.GetGauge().GetValue()
			}
			if mf.GetName() == "dora_autoscaler_scale_events_total" && m.GetCounter().GetValue() != 1 {
				t.Errorf("scale events = %v", m.GetCounter().GetValue())
			}
		}
	}
	want := map[string]float64{
		"dora_autoscaler_desired_instances":  10,
		"dora_autoscaler_ready_instances":    2,
		"dora_autoscaler_panic_mode":         1,
		"dora_autoscaler_stable_concurrency": 100,
		"dora_autoscaler_panic_concurrency":  100,
	}
	for name, v := range want {
		if gauges[name] != v {
			t.Errorf("%s = %v, want %v", name, gauges[name], v)
		}
	}
	// A stopped deployment's series go away.
	cur := h.deployment("deploy-a")
	cur.Status = dora.DeployStopped
	h.put(depKey(cur), cur)
	h.tick()
	mfs, _ = h.reg.Gather()
	for _, mf := range mfs {
		if _, ok := want[mf.GetName()]; ok && len(mf.GetMetric()) != 0 {
			t.Errorf("%s still reported for a stopped deployment", mf.GetName())
		}
	}
}

func TestRunTicksUntilCancelled(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Interval = 10 * time.Millisecond; c.Now = nil })
	d := dep("deploy-a", 1, 5, 1, dora.DeployRunning)
	h.put(depKey(d), d)
	// Real clock: the first tick has no data and holds; raising the floor
	// is seen by a later tick.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.a.Run(ctx) }()
	cur := d
	cur.Expect = 2
	h.put(depKey(cur), cur)
	deadline := time.Now().Add(10 * time.Second)
	for len(h.target.Calls()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := h.target.Calls(); len(got) != 1 || got[0].Count != 2 {
		t.Fatalf("calls = %+v", got)
	}
}

func TestRunNeedsItsDependencies(t *testing.T) {
	if err := New(Config{}).Run(context.Background()); err == nil {
		t.Fatal("Run without a store, load reader and target succeeded")
	}
}

// The owner's limit is per ufop: two versions under load share it, the
// second growing only into what the first leaves, and the total never
// goes over it.
func TestLoopDeploymentsOfAUfopShareTheLimit(t *testing.T) {
	h := newHarness(t)
	h.put(store.AccountKey("1001"), dora.Account{ID: "1001", InstanceLimit: 5})
	h.put(store.UfopKey("grepd"), dora.Ufop{Name: "grepd", Owner: "1001"})
	a := dep("deploy-a", 1, 5, 3, dora.DeployRunning)
	b := dora.Deployment{ID: "deploy-b", Ufop: "grepd", Version: "v2", Region: "z0", Expect: 1, Max: 5, Desired: 1, Status: dora.DeployRunning}
	h.put(depKey(a), a)
	h.put(depKey(b), b)
	for range 5 {
		h.clock.Add(2 * time.Second)
		h.concurrency(a, 100)
		h.concurrency(b, 100)
		h.tick()
		if total := h.deployment("deploy-a").Desired + h.deployment("deploy-b").Desired; total > 5 {
			t.Fatalf("the ufop runs %d instances, over its limit of 5", total)
		}
	}
	da, db := h.deployment("deploy-a"), h.deployment("deploy-b")
	if da.Desired+db.Desired != 5 || db.Desired < b.Expect {
		t.Fatalf("desired a=%d b=%d, want 5 in all and b at least its floor", da.Desired, db.Desired)
	}
}

// appliedTarget is a fakeTarget that tells the count it runs
// (AppliedReader): the last one scaled to, else applied's, else the
// stored one; appliedErr fails the question.
type appliedTarget struct {
	*fakeTarget
	applied    map[string]int
	appliedErr error
}

func (f *appliedTarget) Applied(_ context.Context, d dora.Deployment) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.appliedErr != nil {
		return 0, f.appliedErr
	}
	if n, ok := f.count[d.ID]; ok {
		return n, nil
	}
	if n, ok := f.applied[d.ID]; ok {
		return n, nil
	}
	return d.Desired, nil
}

// TestLoopReappliesAStoredCountTheTargetDoesNotRun: an autoscaler that
// died between storing a new count and applying it left the target on
// the old one; the next autoscaler applies the stored count at its first
// look, once, even when its own decision is to hold. A target that runs
// the stored count, or cannot tell, gets no call; one that cannot tell is
// a warning, unless it does not know the deployment yet (a runtime that
// restores its deployments after the autoscaler started): a debug line.
func TestLoopReappliesAStoredCountTheTargetDoesNotRun(t *testing.T) {
	for _, tc := range []struct {
		name      string
		applied   int
		err       error
		wantCalls []scaleCall
		wantLog   string // the level of the line about err
	}{
		{"behind", 2, nil, []scaleCall{{"deploy-a", 3, ReasonReapply}}, ""},
		{"in step", 3, nil, nil, ""},
		{"cannot tell", 2, errors.New("nomad unreachable"), nil, "level=WARN"},
		{"not restored yet", 2, fmt.Errorf("applied count of deploy-a: %w: runtime: not found", ErrUnknownToTarget), nil, "level=DEBUG"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := &appliedTarget{fakeTarget: &fakeTarget{}, applied: map[string]int{"deploy-a": tc.applied}, appliedErr: tc.err}
			var logs bytes.Buffer
			h := newHarness(t, func(c *Config) {
				c.Target = at
				c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			})
			h.target = at.fakeTarget
			d := dep("deploy-a", 1, 5, 3, dora.DeployRunning)
			h.put(depKey(d), d)
			h.concurrency(d, 30) // wants 3: the stored count holds
			h.tick()
			for range 3 {
				h.step(d, 30)
			}
			if got := h.target.Calls(); !slices.Equal(got, tc.wantCalls) {
				t.Fatalf("calls = %+v, want %+v", got, tc.wantCalls)
			}
			if got := h.deployment("deploy-a"); got.Desired != 3 {
				t.Errorf("stored count %d, want 3", got.Desired)
			}
			if tc.err != nil {
				var lines []string
				for _, l := range strings.Split(logs.String(), "\n") {
					if strings.Contains(l, "not re-applying") {
						lines = append(lines, l)
					}
				}
				if len(lines) != 1 || !strings.HasPrefix(strings.SplitN(lines[0], " ", 2)[1], tc.wantLog+" ") {
					t.Errorf("log about %v: %q, want one line at %s", tc.err, lines, tc.wantLog)
				}
			}
			if strings.Contains(logs.String(), "level=WARN") != (tc.wantLog == "level=WARN") {
				t.Errorf("warnings:\n%s", logs.String())
			}
		})
	}
}
