package router

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler"
	"github.com/doraproject/dora/autoscaler/load"
	"github.com/doraproject/dora/autoscaler/load/memory"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/pool"
)

// startingTarget is an autoscaler.Target that "starts" instances the way a
// runtime does: Scale to n>0 brings up a real instance in the background
// and, once it answers, publishes it to the pool (the discovery of a
// passing health check); Ready counts the published ones.
type startingTarget struct {
	t    *testing.T
	pool *pool.Pool
	addr string // the instance that starts

	mu      sync.Mutex
	ready   int
	scaleTo []int
}

func (s *startingTarget) Scale(_ context.Context, d dora.Deployment, count int, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scaleTo = append(s.scaleTo, count)
	if count > 0 && s.ready == 0 {
		go func() {
			s.pool.Update([]pool.Instance{poolInst("w0", d.Ufop, d.Version, s.addr)})
			s.mu.Lock()
			s.ready = 1
			s.mu.Unlock()
		}()
	}
	return nil
}

func (s *startingTarget) Ready(context.Context, dora.Deployment) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready, nil
}

// TestWakeFromZero: a deployment with floor 0 and no instance serves its
// first request without waiting for the autoscaler's next tick: the held
// request wakes the autoscaler through the load store at once, and is
// released as soon as the instance is in the pool. The tick is an hour
// away, so an answer at all can only come from the wake-up (the wait is
// bounded only to catch a hang; no timing is asserted).
func TestWakeFromZero(t *testing.T) {
	loads := memory.New(time.Minute)
	e := newEnv(t, func(c *Config) {
		c.Load = loads
		c.HoldTimeout = time.Minute
	})
	e.ufop(dora.Ufop{Name: "sleeper", Owner: alice.ID}, dora.ProtocolDora)
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	now := time.Now().UTC()
	e.put(store.DeploymentKey("sleeper", "deploy-w"), dora.Deployment{ID: "deploy-w", Ufop: "sleeper", Version: "v1", Region: "z0",
		Expect: 0, Max: 2, Desired: 0, Status: dora.DeployRunning, Created: now, Updated: now})
	target := &startingTarget{t: t, pool: e.pool, addr: capsInstance(t)}
	const interval = time.Hour
	scaler := autoscaler.New(autoscaler.Config{Store: e.st, Load: loads, Target: target, Interval: interval, Logger: testLogger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); scaler.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(100 * time.Millisecond) // Run's first tick is most likely over: the next is an hour away

	start := time.Now()
	res := e.getAsync("/k?sleeper/x")
	select {
	case r := <-res:
		if r.status != 200 || r.body != "ABC" {
			t.Fatalf("first request: %+v", r)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("no answer after %v: the request waited for the autoscaler's tick", time.Since(start))
	}
	target.mu.Lock()
	defer target.mu.Unlock()
	if len(target.scaleTo) != 1 || target.scaleTo[0] != 1 {
		t.Fatalf("scale calls %v, want one to 1", target.scaleTo)
	}
}

// wakeRecorder is a load store that carries wake-ups (load.Waker) and
// hands each one to the test.
type wakeRecorder struct {
	recLoad
	wakes chan load.Key
}

func (w *wakeRecorder) Wake(_ context.Context, k load.Key) error {
	w.wakes <- k
	return nil
}

func (w *wakeRecorder) Wakes(context.Context) <-chan load.Key { return w.wakes }

// TestWakeEachWait: a wait for an instance that starts shortly after an
// earlier one was answered (the deployment went back to zero meanwhile)
// wakes the autoscaler again at once; the once-per-second bound of
// wake-ups applies within a wait. The router's clock stands still but for
// the 100 ms the test moves it, so only a wake-up sent because the second
// wait started can arrive (the repeats within a wait are a second apart
// on that clock).
func TestWakeEachWait(t *testing.T) {
	wr := &wakeRecorder{wakes: make(chan load.Key, 16)}
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	e := newEnv(t, func(c *Config) {
		c.Load = wr
		c.HoldTimeout = time.Minute
		c.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	})
	e.ufop(dora.Ufop{Name: "sleeper", Owner: alice.ID}, dora.ProtocolDora)
	e.scaledToZero("d1", "sleeper", "v1")
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	inst := capsInstance(t)
	awaitWake := func(what string) {
		t.Helper()
		select {
		case k := <-wr.wakes:
			if k.Ufop != "sleeper" || k.Version != "v1" || k.Region != "z0" {
				t.Fatalf("%s: woke %+v", what, k)
			}
		case <-time.After(30 * time.Second): // a hang bound, not a timing assertion
			t.Fatalf("%s: no wake-up", what)
		}
	}
	for i, what := range []string{"first wait", "second wait"} {
		res := e.getAsync("/k?sleeper/x")
		awaitWake(what)
		e.pool.Update([]pool.Instance{poolInst("s0", "sleeper", "v1", inst)})
		if r := <-res; r.status != 200 || r.body != "ABC" {
			t.Fatalf("%s: %+v", what, r)
		}
		// Scaled back to zero, 100 ms later.
		e.pool.Update([]pool.Instance{})
		clock.Add(int64(100 * time.Millisecond))
		if i == 0 {
			select {
			case k := <-wr.wakes:
				t.Fatalf("a wake-up %+v with nothing held", k)
			default:
			}
		}
	}
}

// TestWakeNotPerAbandonedWait: waits that end without an instance (the
// hold timing out here; a client giving up is the same) do not wake the
// autoscaler each: only a wait answered by an instance lets the next one
// wake within wakeEvery. Otherwise a stream of requests abandoned while
// held, on many keys, would be a stream of load-store writes (a Redis
// PUBLISH each) and of autoscaler evaluations. The router's clock moves
// only as the test moves it; the decision to wake is taken before the
// request waits, so the last wake-up's time is known once it answers.
func TestWakeNotPerAbandonedWait(t *testing.T) {
	wr := &wakeRecorder{wakes: make(chan load.Key, 16)}
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	e := newEnv(t, func(c *Config) {
		c.Load = wr
		c.HoldTimeout = 20 * time.Millisecond
		c.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	})
	e.ufop(dora.Ufop{Name: "sleeper", Owner: alice.ID}, dora.ProtocolDora)
	e.scaledToZero("d1", "sleeper", "v1")
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	c := e.r.load.counter(loadKey(sleeperKey))
	first := clock.Load()
	for i := range 5 {
		if r := <-e.getAsync("/k?sleeper/x"); r.status != 503 {
			t.Fatalf("request %d: %+v, want 503 after the hold", i, r)
		}
		if got := c.lastWake.Load(); got != first {
			t.Fatalf("request %d: a wake-up %v after the first request's (at %v), want none", i,
				time.Unix(0, got).Sub(time.Unix(0, first)), time.Unix(0, first))
		}
		clock.Add(int64(100 * time.Millisecond))
	}
	select {
	case <-wr.wakes:
	case <-time.After(30 * time.Second): // a hang bound
		t.Fatal("the first wait sent no wake-up")
	}
}
