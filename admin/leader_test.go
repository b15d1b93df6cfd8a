package admin

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
)

// switchElector is a fake Elector honouring the contract: fn runs only
// between lead() and follow(), and its context ends at follow().
type switchElector struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	ctx    context.Context
	fn     func(context.Context)
	done   chan struct{}
}

func (e *switchElector) Run(ctx context.Context, fn func(context.Context)) error {
	e.mu.Lock()
	e.ctx, e.fn = ctx, fn
	e.mu.Unlock()
	<-ctx.Done()
	e.follow()
	return nil
}

func (e *switchElector) lead() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fn == nil || e.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(e.ctx)
	e.cancel, e.done = cancel, make(chan struct{})
	fn, done := e.fn, e.done
	go func() { defer close(done); fn(ctx) }()
}

func (e *switchElector) follow() {
	e.mu.Lock()
	cancel, done := e.cancel, e.done
	e.cancel = nil
	e.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (e *switchElector) ready() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fn != nil
}

func putBuild(t *testing.T, st store.Store, b dora.Build) {
	t.Helper()
	if _, err := st.Put(context.Background(), store.BuildKey(b.Ufop, b.Number), mustJSON(b)); err != nil {
		t.Fatal(err)
	}
}

func getBuild(t *testing.T, st store.Store, ufop string, n int) dora.Build {
	t.Helper()
	b, _, err := store.Get[dora.Build](context.Background(), st, store.BuildKey(ufop, n))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBackgroundWorkOnlyWhileLeading: an admin that does not lead neither
// reconciles nor touches builds; once it leads it fails the builds of a
// dead admin (no heartbeat for BuildStaleAfter beats) and of an older
// admin (no owner), keeps a build whose admin still beats, and follows
// deployment statuses; when it stops leading the passes stop.
func TestBackgroundWorkOnlyWhileLeading(t *testing.T) {
	el := &switchElector{}
	e := newEnv(t, func(c *Config) {
		c.Leader = el
		// A build is stale after BuildStaleAfter (6) heartbeats: 3 s,
		// which the beating goroutine's fsynced writes keep up with on a
		// loaded disk (50 ms, a 300 ms bound, did not always).
		c.BuildHeartbeat = 500 * time.Millisecond
	})
	alice := e.user("alice", 0)
	d := e.deployGrepd(alice, 1)

	now := time.Now().UTC()
	putBuild(t, e.st, dora.Build{Ufop: "grepd", Number: 1, Status: dora.BuildRunning, Created: now.Add(-time.Hour),
		Owner: "dead-admin", Heartbeat: now.Add(-time.Minute)})
	putBuild(t, e.st, dora.Build{Ufop: "grepd", Number: 2, Status: dora.BuildRunning, Created: now.Add(-time.Hour)})
	alive := dora.Build{Ufop: "grepd", Number: 3, Status: dora.BuildRunning, Created: now.Add(-time.Hour),
		Owner: "live-admin", Heartbeat: now}
	putBuild(t, e.st, alive)
	// Another admin runs build 3 and beats for it until stopBeat.
	beatCtx, stopBeat := context.WithCancel(context.Background())
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		for beatCtx.Err() == nil {
			b, ver, err := store.Get[dora.Build](beatCtx, e.st, store.BuildKey("grepd", 3))
			if err == nil && b.Status == dora.BuildRunning {
				b.Heartbeat = time.Now().UTC()
				_, _ = e.st.CAS(beatCtx, store.BuildKey("grepd", 3), mustJSON(b), ver)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	defer func() { stopBeat(); <-beating }()

	defer e.runLoops()()
	waitUntil(t, "Run to campaign", el.ready)

	// Not leading: nothing moves.
	e.rt.setRunning(d.ID, 1)
	time.Sleep(300 * time.Millisecond) // several poll intervals; a leader fails build 1 in its first pass
	if e.srv.Leading() || counterValue(t, e.srv.passes) != 0 {
		t.Fatalf("a follower ran background work: leading=%v passes=%v", e.srv.Leading(), counterValue(t, e.srv.passes))
	}
	if got := e.deployment("grepd", d.ID).Status; got == dora.DeployRunning {
		t.Fatal("a follower reconciled a deployment status")
	}
	if b := getBuild(t, e.st, "grepd", 1); b.Status != dora.BuildRunning {
		t.Fatalf("a follower failed a build: %+v", b)
	}

	// Leading: the work runs.
	el.lead()
	waitUntil(t, "the status followed by the leader", func() bool {
		return e.deployment("grepd", d.ID).Status == dora.DeployRunning
	})
	waitUntil(t, "the dead admin's build failed", func() bool {
		return getBuild(t, e.st, "grepd", 1).Status == dora.BuildFailed
	})
	if b := getBuild(t, e.st, "grepd", 1); !strings.Contains(b.Error, "admin running the build stopped") {
		t.Fatalf("build 1 error = %q", b.Error)
	}
	if b := getBuild(t, e.st, "grepd", 2); b.Status != dora.BuildFailed || !strings.Contains(b.Error, "interrupted") {
		t.Fatalf("ownerless build = %+v", b)
	}
	if b := getBuild(t, e.st, "grepd", 3); b.Status != dora.BuildRunning {
		t.Fatalf("a build whose admin beats was failed: %+v", b)
	}
	if !e.srv.Leading() {
		t.Fatal("Leading() = false while leading")
	}

	// Its owner stops beating: failed after BuildStaleAfter beats.
	stopBeat()
	<-beating
	waitUntil(t, "the build of an admin that stopped beating failed", func() bool {
		return getBuild(t, e.st, "grepd", 3).Status == dora.BuildFailed
	})

	// A new term (as after a takeover) deploys nothing twice: the runtime
	// still runs the deployment.
	e.rt.mu.Lock()
	e.rt.applyCh = make(chan string, 16)
	e.rt.mu.Unlock()
	el.follow()
	el.lead()
	waitUntil(t, "the new term's first pass", func() bool { return counterValue(t, e.srv.terms) == 2 && e.srv.Leading() })
	p := counterValue(t, e.srv.passes)
	waitUntil(t, "a pass of the new term", func() bool { return counterValue(t, e.srv.passes) > p })
	select {
	case id := <-e.rt.applyCh:
		t.Fatalf("a new term applied %s again, though the runtime runs it", id)
	default:
	}

	// Leadership lost: the passes stop.
	el.follow()
	if e.srv.Leading() {
		t.Fatal("Leading() = true after the term ended")
	}
	n := counterValue(t, e.srv.passes)
	if n == 0 {
		t.Fatal("no pass counted while leading")
	}
	time.Sleep(100 * time.Millisecond)
	if m := counterValue(t, e.srv.passes); m != n {
		t.Fatalf("passes went on after the term ended: %v → %v", n, m)
	}
}
