package lock

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/doraproject/dora/internal/agenttest"
)

// failover bounds how long a takeover may take: the session TTL plus a
// margin for a loaded 2-core machine. It only bounds a failure; a passing
// takeover is much quicker.
const failover = DefaultTTL + 10*time.Second

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func client(t *testing.T, c *agenttest.Consul) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = c.Addr
	cl, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// contender is one Run campaigning in its own goroutine.
type contender struct {
	name    string
	cancel  context.CancelFunc
	done    chan error
	terms   atomic.Int32 // times fn started
	leading atomic.Bool
}

// board watches that at most one contender leads at any time.
type board struct {
	mu      sync.Mutex
	leaders int
	overlap bool
}

func (b *board) enter() {
	b.mu.Lock()
	b.leaders++
	if b.leaders > 1 {
		b.overlap = true
	}
	b.mu.Unlock()
}

func (b *board) leave() { b.mu.Lock(); b.leaders--; b.mu.Unlock() }

func start(t *testing.T, cl *api.Client, key, name string, b *board, opts Options) *contender {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &contender{name: name, cancel: cancel, done: make(chan error, 1)}
	opts.Logger = quiet()
	opts.Value = []byte(name)
	go func() {
		c.done <- RunWith(ctx, cl, key, opts, func(ctx context.Context) {
			b.enter()
			c.terms.Add(1)
			c.leading.Store(true)
			<-ctx.Done()
			c.leading.Store(false)
			b.leave()
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-c.done
	})
	return c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func leader(cs ...*contender) *contender {
	for _, c := range cs {
		if c.leading.Load() {
			return c
		}
	}
	return nil
}

func TestOneLeaderAndFailoverOnStop(t *testing.T) {
	agent := agenttest.StartConsul(t)
	cl := client(t, agent)
	b := &board{}
	a := start(t, cl, "dora/autoscaler/leader", "a", b, Options{})
	c := start(t, cl, "dora/autoscaler/leader", "c", b, Options{})

	waitFor(t, failover, "a leader", func() bool { return leader(a, c) != nil })
	first := leader(a, c)
	other := a
	if first == a {
		other = c
	}
	kv, _, err := cl.KV().Get("dora/autoscaler/leader", nil)
	if err != nil || kv == nil || string(kv.Value) != first.name || kv.Session == "" {
		t.Fatalf("lock key = %+v, %v; want held by %s", kv, err, first.name)
	}
	if other.terms.Load() != 0 {
		t.Fatalf("both contenders led")
	}

	// The leader stops: the other takes over.
	first.cancel()
	if err := <-first.done; err != nil {
		t.Fatalf("leader's Run = %v", err)
	}
	first.done <- nil // for its cleanup
	waitFor(t, failover, "the other contender to take over", func() bool { return other.leading.Load() })
	if b.overlap {
		t.Fatal("two leaders at once")
	}
	if n := first.terms.Load(); n != 1 {
		t.Errorf("stopped leader led %d times", n)
	}
}

func TestLostLockCancelsAndRecampaigns(t *testing.T) {
	agent := agenttest.StartConsul(t)
	cl := client(t, agent)
	b := &board{}
	key := "dora/autoscaler/lost"
	a := start(t, cl, key, "a", b, Options{LockDelay: 10 * time.Millisecond, LockWait: 500 * time.Millisecond, RetryInterval: 50 * time.Millisecond})
	waitFor(t, failover, "a to lead", func() bool { return a.leading.Load() })

	// An operator (or Consul, for a dead leader) invalidates the session.
	kv, _, err := cl.KV().Get(key, nil)
	if err != nil || kv == nil || kv.Session == "" {
		t.Fatalf("lock key = %+v, %v", kv, err)
	}
	if _, err := cl.Session().Destroy(kv.Session, nil); err != nil {
		t.Fatal(err)
	}
	// fn's context is cancelled, then the lock is won again in a new term.
	waitFor(t, failover, "a second term", func() bool { return a.terms.Load() >= 2 && a.leading.Load() })
	kv2, _, err := cl.KV().Get(key, nil)
	if err != nil || kv2 == nil || kv2.Session == "" || kv2.Session == kv.Session {
		t.Fatalf("lock key after re-election = %+v, %v", kv2, err)
	}
	if b.overlap {
		t.Fatal("two terms at once")
	}
}

func TestFnReturningReleasesTheLock(t *testing.T) {
	agent := agenttest.StartConsul(t)
	cl := client(t, agent)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var terms atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- RunWith(ctx, cl, "dora/once", Options{RetryInterval: 20 * time.Millisecond, Logger: quiet()}, func(context.Context) {
			if terms.Add(1) == 2 {
				cancel()
			}
		})
	}()
	waitReturn(t, done, "Run")
	if n := terms.Load(); n != 2 {
		t.Errorf("fn ran %d times, want 2", n)
	}
	kv, _, err := cl.KV().Get("dora/once", nil)
	if err != nil {
		t.Fatal(err)
	}
	if kv != nil && kv.Session != "" {
		t.Errorf("lock still held by session %s after Run returned", kv.Session)
	}
}

func TestCancelWhileWaiting(t *testing.T) {
	agent := agenttest.StartConsul(t)
	cl := client(t, agent)
	b := &board{}
	a := start(t, cl, "dora/wait", "a", b, Options{})
	waitFor(t, failover, "a to lead", func() bool { return a.leading.Load() })

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunWith(ctx, cl, "dora/wait", Options{Logger: quiet()}, func(context.Context) { t.Error("second contender led") })
	}()
	cancel()
	waitReturn(t, done, "a waiting Run")
}

// waitReturn fails the test unless a Run whose context has ended sends a
// nil error on done within failover (a hang detector, not a timing
// assertion).
func waitReturn(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s = %v", what, err)
		}
	case <-time.After(failover):
		t.Fatalf("%s did not return after its context ended", what)
	}
}

func TestBadArgs(t *testing.T) {
	cl, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	fn := func(context.Context) {}
	for name, run := range map[string]func() error{
		"nil client": func() error { return Run(context.Background(), nil, "k", fn) },
		"empty key":  func() error { return Run(context.Background(), cl, "", fn) },
		"nil fn":     func() error { return Run(context.Background(), cl, "k", nil) },
		"short TTL":  func() error { return RunWith(context.Background(), cl, "k", Options{TTL: time.Second}, fn) },
	} {
		if err := run(); !errors.Is(err, ErrBadArgs) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}
