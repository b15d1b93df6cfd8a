package leader

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/doraproject/dora/autoscaler/lock"
	"github.com/doraproject/dora/internal/agenttest"
)

// failover bounds a takeover: the session TTL (Consul may stretch it to
// twice) plus the lock delay and a margin for a loaded machine. It only
// bounds a failure; a passing takeover is quicker.
const failover = 2*lock.DefaultTTL + 10*time.Second

func TestAlwaysLeadsUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Always{}.Run(ctx, func(ctx context.Context) { close(ran) }) // returns at once
	}()
	<-ran
	select {
	case <-done:
		t.Fatal("Always.Run returned before its context ended")
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// candidate runs a Consul elector whose task counts its ticks while it
// leads, as the admin's reconcile loop does.
type candidate struct {
	ticks   atomic.Int64
	leading atomic.Bool
	cancel  context.CancelFunc
	done    chan error
}

func campaign(t *testing.T, cl *api.Client, key, name string) *candidate {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &candidate{cancel: cancel, done: make(chan error, 1)}
	e := Consul{Client: cl, Key: key, Options: lock.Options{
		Value: []byte(name), LockDelay: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}}
	go func() {
		c.done <- e.Run(ctx, func(ctx context.Context) {
			c.leading.Store(true)
			defer c.leading.Store(false)
			tk := time.NewTicker(10 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tk.C:
					c.ticks.Add(1)
				}
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-c.done })
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(failover)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", failover, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConsulOneLeaderAndTakeover: of two candidates on a real Consul only
// one runs the task; when its session dies (destroyed, as Consul does to
// a dead process's session when its TTL runs out) the other takes over and
// the first stops counting.
func TestConsulOneLeaderAndTakeover(t *testing.T) {
	agent := agenttest.StartConsul(t)
	cfg := api.DefaultConfig()
	cfg.Address = agent.Addr
	cl, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const key = "dora-test/locks/admin"
	a := campaign(t, cl, key, "a")
	b := campaign(t, cl, key, "b")
	waitFor(t, "a leader", func() bool { return a.leading.Load() || b.leading.Load() })
	first, second := a, b
	if b.leading.Load() {
		first, second = b, a
	}
	waitFor(t, "the leader's task to run", func() bool { return first.ticks.Load() > 5 })
	if second.leading.Load() || second.ticks.Load() != 0 {
		t.Fatalf("both candidates ran the task: %d and %d ticks", first.ticks.Load(), second.ticks.Load())
	}

	kv, _, err := cl.KV().Get(key, nil)
	if err != nil || kv == nil || kv.Session == "" {
		t.Fatalf("lock key = %+v, %v", kv, err)
	}
	if _, err := cl.Session().Destroy(kv.Session, nil); err != nil {
		t.Fatal(err)
	}
	// The new term is the one whose session holds the key; its holder
	// (the key's value names it) must lead, and the other must not. A
	// look at the flags alone could catch the old leader before it
	// noticed the loss.
	byName := map[string]*candidate{"a": a, "b": b}
	var now, idle *candidate
	waitFor(t, "a leader after the session died", func() bool {
		cur, _, err := cl.KV().Get(key, nil)
		if err != nil || cur == nil || cur.Session == "" || cur.Session == kv.Session {
			return false
		}
		now = byName[string(cur.Value)]
		if now == nil {
			t.Fatalf("lock key holds an unknown value %q", cur.Value)
		}
		idle = a
		if now == a {
			idle = b
		}
		return now.leading.Load() && !idle.leading.Load()
	})
	n, m := idle.ticks.Load(), now.ticks.Load()
	waitFor(t, "the new leader's task to run", func() bool { return now.ticks.Load() > m+5 })
	if idle.leading.Load() || idle.ticks.Load() != n {
		t.Fatalf("the candidate that does not lead still runs the task (%d → %d ticks)", n, idle.ticks.Load())
	}
}
