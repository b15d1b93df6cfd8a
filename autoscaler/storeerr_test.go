package autoscaler

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler/load"
	"github.com/doraproject/dora/autoscaler/load/memory"
	"github.com/doraproject/dora/internal/store"
)

// flakyStore fails Get of one key with an error other than ErrNotFound
// (Consul KV unreachable) while failing is set.
type flakyStore struct {
	store.Store
	key     string
	failing atomic.Bool
}

func (f *flakyStore) Get(ctx context.Context, key string) (store.KV, error) {
	if f.failing.Load() && key == f.key {
		return store.KV{}, errors.New("consul: connection refused")
	}
	return f.Store.Get(ctx, key)
}

// A release that cannot be read (the store fails, the key exists) is no
// reason to decide on the default policy: the count holds. Deciding with
// the default target of 10 instead of the release's 1 scaled the
// deployment down from what its load needs.
func TestLoopReleaseUnreadableHoldsTheCount(t *testing.T) {
	var fs *flakyStore
	h := newHarness(t, func(c *Config) {
		fs = &flakyStore{Store: c.Store, key: store.ReleaseKey("grepd", "v1")}
		c.Store = fs
	})
	h.put(store.ReleaseKey("grepd", "v1"), dora.Release{Ufop: "grepd", Version: "v1", Autoscale: &dora.AutoscalePolicy{Target: 1}})
	d := dep("deploy-a", 1, 20, 8, dora.DeployRunning)
	h.put(depKey(d), d)
	h.clock.Add(2 * DefaultStableWindow) // past warming up
	h.concurrency(d, 8)                  // target 1: wants 8, as it runs
	h.tick()
	fs.failing.Store(true)
	for range 40 {
		h.step(d, 8)
	}
	if got := h.target.Calls(); len(got) != 0 {
		t.Fatalf("scaled on the default policy while the release was unreadable: %+v", got)
	}
}

// An account that cannot be read is not an account without a limit: the
// deployment does not grow past the limit to its own --max.
func TestLoopAccountUnreadableHoldsTheCount(t *testing.T) {
	var fs *flakyStore
	h := newHarness(t, func(c *Config) {
		fs = &flakyStore{Store: c.Store, key: store.AccountKey("1001")}
		c.Store = fs
	})
	h.put(store.AccountKey("1001"), dora.Account{ID: "1001", InstanceLimit: 4})
	h.put(store.UfopKey("grepd"), dora.Ufop{Name: "grepd", Owner: "1001"})
	d := dep("deploy-a", 1, 10, 4, dora.DeployRunning)
	h.put(depKey(d), d)
	fs.failing.Store(true)
	for range 5 {
		h.step(d, 200)
	}
	if got := h.deployment("deploy-a").Desired; got != 4 {
		t.Fatalf("desired %d while the account was unreadable, over its limit of 4; calls %+v", got, h.target.Calls())
	}
}

// flakyLoad fails Averages while failing is set (Redis unreachable).
type flakyLoad struct {
	load.Reader
	failing atomic.Bool
}

func (f *flakyLoad) Averages(ctx context.Context, key load.Key, now time.Time, stable, panic time.Duration) (load.Averages, error) {
	if f.failing.Load() {
		return load.Averages{}, errors.New("redis: connection refused")
	}
	return f.Reader.Averages(ctx, key, now, stable, panic)
}

// A load store outage leaves a hole in the windows: the routers could not
// record either. Once it answers again, the few seconds recorded since are
// no full stable window, and a steady load must not read as a drop (a
// scale-down, and up again once the window fills).
func TestLoopLoadOutageDoesNotScaleDownOnThePartialWindow(t *testing.T) {
	var fl *flakyLoad
	h := newHarness(t, func(c *Config) {
		fl = &flakyLoad{Reader: c.Load}
		c.Load = fl
	})
	d := dep("deploy-a", 1, 20, 8, dora.DeployRunning)
	h.put(depKey(d), d)
	h.clock.Add(2 * DefaultStableWindow) // past warming up
	h.concurrency(d, 80)                 // target 10: wants 8, as it runs
	h.tick()
	fl.failing.Store(true)
	h.clock.Add(50 * time.Second) // nothing recorded meanwhile
	h.tick()
	fl.failing.Store(false)
	key := load.Key{Ufop: d.Ufop, Version: d.Version, Region: d.Region}
	back := h.clock.Now()
	h.filled[key] = back.Truncate(time.Second).Add(-time.Second)
	for range 40 { // the same load, recorded again
		h.step(d, 80)
		if got := h.target.Calls(); len(got) != 0 {
			t.Fatalf("%v after the outage: scaled on a partial window: %+v", h.clock.Now().Sub(back), got)
		}
	}
}

// swapLoad reads from whichever store it holds (a Redis restarted
// without its data is a new, empty store).
type swapLoad struct {
	mu sync.Mutex
	r  load.Reader
}

func (s *swapLoad) Averages(ctx context.Context, key load.Key, now time.Time, stable, panic time.Duration) (load.Averages, error) {
	s.mu.Lock()
	r := s.r
	s.mu.Unlock()
	return r.Averages(ctx, key, now, stable, panic)
}

// The load store lost its data between two ticks (a Redis without
// persistence restarted): the seconds recorded since are no full stable
// window, and a steady load must not read as a drop.
func TestLoopLoadStoreLostItsDataDoesNotScaleDown(t *testing.T) {
	var sl *swapLoad
	h := newHarness(t, func(c *Config) {
		sl = &swapLoad{r: c.Load}
		c.Load = sl
	})
	d := dep("deploy-a", 1, 20, 8, dora.DeployRunning)
	h.put(depKey(d), d)
	for range 35 { // past warming up
		h.step(d, 80) // target 10: wants 8, as it runs
	}
	if got := h.target.Calls(); len(got) != 0 {
		t.Fatalf("steady load: %+v", got)
	}
	fresh := memory.New(time.Hour)
	sl.mu.Lock()
	sl.r = fresh
	sl.mu.Unlock()
	key := load.Key{Ufop: d.Ufop, Version: d.Version, Region: d.Region}
	back := h.clock.Now()
	for i := range 40 { // the same load, recorded in the new store
		h.clock.Add(2 * time.Second)
		now := h.clock.Now().Truncate(time.Second)
		var ss []load.Sample
		from := now.Add(-2 * time.Second)
		if from.Before(back) {
			from = back.Truncate(time.Second)
		}
		for s := from; s.Before(now); s = s.Add(time.Second) {
			ss = append(ss, load.Sample{Key: key, Time: s, Concurrency: 80})
		}
		if err := fresh.Record(h.ctx, ss); err != nil {
			t.Fatal(err)
		}
		h.tick()
		if got := h.target.Calls(); len(got) != 0 {
			t.Fatalf("tick %d after the data was lost: scaled on a partial window: %+v", i, got)
		}
	}
}
