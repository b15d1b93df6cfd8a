package autoscaler

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler/lock"
	"github.com/doraproject/dora/internal/agenttest"
)

// TestHighAvailability runs two autoscalers on one store, elected by a
// Consul lock on a real agent: only the leader scales, and when it stops the
// other one takes over.
func TestHighAvailability(t *testing.T) {
	agent := agenttest.StartConsul(t)
	cfg := api.DefaultConfig()
	cfg.Address = agent.Addr
	cl, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	d := dep("deploy-a", 1, 8, 1, dora.DeployRunning)
	h.put(depKey(d), d)

	type member struct {
		target *fakeTarget
		cancel context.CancelFunc
		done   chan error
	}
	start := func() *member {
		m := &member{target: &fakeTarget{}, done: make(chan error, 1)}
		a := New(Config{Store: h.st, Load: h.load, Target: m.target, Interval: 20 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		ctx, cancel := context.WithCancel(context.Background())
		m.cancel = cancel
		go func() {
			m.done <- lock.RunWith(ctx, cl, "dora/autoscaler/leader", lock.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
				func(ctx context.Context) { _ = a.Run(ctx) })
		}()
		t.Cleanup(func() { cancel(); <-m.done })
		return m
	}
	m1, m2 := start(), start()

	raiseFloor := func(n int) {
		cur := h.deployment("deploy-a")
		cur.Expect = n
		h.put(depKey(cur), cur)
	}
	scaledTo := func(m *member, n int) bool {
		for _, c := range m.target.Calls() {
			if c.Count == n {
				return true
			}
		}
		return false
	}
	bound := lock.DefaultTTL + 10*time.Second
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(bound)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("not within %v: %s", bound, what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	raiseFloor(2)
	wait("the leader to scale to 2", func() bool { return scaledTo(m1, 2) || scaledTo(m2, 2) })
	leader, standby := m1, m2
	if scaledTo(m2, 2) {
		leader, standby = m2, m1
	}
	if n := len(standby.target.Calls()); n != 0 {
		t.Fatalf("the standby scaled too: %+v", standby.target.Calls())
	}

	leader.cancel()
	if err := <-leader.done; err != nil {
		t.Fatalf("leader's lock.Run = %v", err)
	}
	leader.done <- nil
	raiseFloor(3)
	wait("the standby to take over and scale to 3", func() bool { return scaledTo(standby, 3) })
	if got := h.deployment("deploy-a"); got.Desired != 3 {
		t.Errorf("stored desired %d", got.Desired)
	}
	// The scale event is written while the target scales (evaluate
	// waits for both), so it may land just after the call seen above.
	wait("the two scale events", func() bool { return len(h.events("deploy-a")) >= 2 })
	if evs := h.events("deploy-a"); len(evs) != 2 || evs[0].To != 2 || evs[1].To != 3 {
		t.Errorf("events = %+v", evs)
	}
}
