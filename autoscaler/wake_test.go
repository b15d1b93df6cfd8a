package autoscaler

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler/load"
	"github.com/doraproject/dora/internal/store"
)

// listCounter is the harness's store, counting the listings of the
// deployments (each one a full read of them: a Consul call in production).
type listCounter struct {
	store.Store
	deps atomic.Int64
}

func (l *listCounter) List(ctx context.Context, prefix string) ([]store.KV, error) {
	if prefix == store.PrefixDeployments {
		l.deps.Add(1)
	}
	return l.Store.List(ctx, prefix)
}

// blockingTarget holds its first Scale call until released.
type blockingTarget struct {
	*fakeTarget
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (b *blockingTarget) Scale(ctx context.Context, d dora.Deployment, count int, reason string) error {
	b.once.Do(func() {
		close(b.entered)
		<-b.release
	})
	return b.fakeTarget.Scale(ctx, d, count, reason)
}

// TestRunWakesTogether: wake-ups that queue while the autoscaler is busy
// (many keys held at once) are handled with one listing of the
// deployments, not one each, and every woken deployment at zero scales.
func TestRunWakesTogether(t *testing.T) {
	var lc *listCounter
	bt := &blockingTarget{fakeTarget: &fakeTarget{}, entered: make(chan struct{}), release: make(chan struct{})}
	h := newHarness(t, func(c *Config) {
		lc = &listCounter{Store: c.Store}
		c.Store = lc
		c.Target = bt
		c.Interval = time.Hour
	})
	keys := []load.Key{}
	for _, u := range []string{"u0", "u1", "u2", "u3"} {
		d := dep("deploy-"+u, 0, 2, 0, dora.DeployRunning)
		d.Ufop = u
		h.put(depKey(d), d)
		keys = append(keys, load.Key{Ufop: u, Version: "v1", Region: "z0"})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	releaseOnce := sync.OnceFunc(func() { close(bt.release) })
	defer releaseOnce()

	// Run has subscribed once its first tick lists the deployments.
	waitFor(t, "the first tick", func() bool { return lc.deps.Load() >= 1 })
	if err := h.load.Wake(ctx, keys[0]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-bt.entered:
	case <-time.After(30 * time.Second): // a hang bound
		t.Fatal("the first wake-up did not scale")
	}
	before := lc.deps.Load()
	for _, k := range keys[1:] {
		if err := h.load.Wake(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	releaseOnce()
	waitFor(t, "every woken deployment scaled", func() bool { return len(bt.Calls()) == len(keys) })
	if n := lc.deps.Load() - before; n != 1 {
		t.Fatalf("%d listings of the deployments for %d wake-ups queued together, want 1", n, len(keys)-1)
	}
	for _, c := range bt.Calls() {
		if c.Count != 1 {
			t.Fatalf("scale calls %+v, want each to 1", bt.Calls())
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // a hang bound
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30 s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
