package pfop_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/pfop/boltq"
	"github.com/doraproject/dora/admin/pfop/redisq"
	"github.com/doraproject/dora/internal/agenttest"
)

// TestLostEnqueueRecoveredRedis reproduces the job lost by a Redis that
// goes down after acknowledging its XADD (no persistence, as the soak's
// Redis): the job is acknowledged to the client and stored as waiting, the
// restarted Redis holds nothing, and a worker started afterwards must still
// run it to the end, once.
func TestLostEnqueueRecoveredRedis(t *testing.T) {
	e := newEnv(t)
	rs := agenttest.StartRedis(t)
	newQ := func() *redisq.Queue {
		q, err := redisq.New(redisq.Config{Addr: rs.Addr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
		return q
	}
	qSubmit := newQ()
	h, err := pfop.NewHandler(pfop.HandlerConfig{Store: e.st, Queue: qSubmit, Objects: e.objs})
	if err != nil {
		t.Fatal(err)
	}
	e.object("photos", "a.txt", "abc")
	j, err := h.Submit(context.Background(), pfop.Submission{Bucket: "photos", Key: "a.txt", Fops: "upper/x", Owner: alice.ID})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := qSubmit.JobIDs(context.Background(), j.Pipeline)
	if err != nil || len(ids) != 1 || ids[0] != j.ID {
		t.Fatalf("queued before the outage: %v %v, want [%s]", ids, err, j.ID)
	}
	rs.Stop()
	rs.Start()
	ids, err = qSubmit.JobIDs(context.Background(), j.Pipeline)
	if err != nil || len(ids) != 0 {
		t.Fatalf("queued after the restart: %v %v, want none (the loss this test reproduces)", ids, err)
	}
	if _, st := e.prefop(j.ID); st.Code != pfop.CodeWaiting {
		t.Fatalf("job after the loss: code %d, want waiting", st.Code)
	}
	// The worker's clock runs two leases ahead, so that its first sweep
	// (at start) finds the job a lease old without the test waiting for
	// it; the lease stays long (the default minute), so nothing but the
	// recovery enqueues or takes over the job.
	e.startWorker(newQ(), func(c *pfop.WorkerConfig) {
		c.Now = func() time.Time { return time.Now().Add(2 * pfop.DefaultReclaimAfter) }
	})
	s, _ := e.waitFinal(j.ID)
	if s.Code != pfop.CodeSuccess || s.Items[0].Code != pfop.CodeSuccess {
		t.Fatalf("recovered job ended %+v", s)
	}
	if got, ok := e.read("photos", s.Items[0].Key); !ok || got != "ABC" {
		t.Fatalf("result %q %v", got, ok)
	}
	stored, _, err := e.jobs.Get(context.Background(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Attempts != 1 {
		t.Fatalf("job attempted %d times, want 1", stored.Attempts)
	}
}

// TestRecoverLostIsIdempotent drives RecoverLost with a clock of its own:
// a job in no queue is enqueued once it is a lease old, and only once, even
// by two workers sweeping at the same moment; a job the queue holds (waiting
// or in flight) and a finished job are left alone.
func TestRecoverLostIsIdempotent(t *testing.T) {
	e := newEnv(t)
	q, err := boltq.Open(filepath.Join(t.TempDir(), "q.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	ctx := context.Background()
	t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	const lease = time.Minute
	var mu sync.Mutex
	now := t0
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	setNow := func(d time.Duration) { mu.Lock(); now = t0.Add(d); mu.Unlock() }
	newWorker := func() *pfop.Worker {
		w, err := pfop.NewWorker(pfop.WorkerConfig{Store: e.st, Queue: q, Processor: e.r, Objects: e.objs, Now: clock, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w1, w2 := newWorker(), newWorker()
	create := func(code int) string {
		id, err := pfop.NewID("z0")
		if err != nil {
			t.Fatal(err)
		}
		if err := e.jobs.Create(ctx, pfop.Job{ID: id, Code: code, Bucket: "photos", Key: "a.txt", Pipeline: "p",
			Created: t0, Updated: t0, Items: []pfop.Item{{Cmd: "upper/x", Code: code}}}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	queued := func() map[string]int {
		ids, err := q.JobIDs(ctx, "p")
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]int{}
		for _, id := range ids {
			m[id]++
		}
		return m
	}
	recoverBoth := func() int {
		var wg sync.WaitGroup
		var n [2]int
		for i, w := range []*pfop.Worker{w1, w2} {
			wg.Go(func() {
				var err error
				n[i], err = w.RecoverLost(ctx, lease)
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		return n[0] + n[1]
	}

	lost := create(pfop.CodeWaiting)
	create(pfop.CodeSuccess)
	create(pfop.CodeFailed)
	inQueue := create(pfop.CodeWaiting)
	if err := q.Enqueue(ctx, "p", inQueue, false); err != nil {
		t.Fatal(err)
	}
	inFlight := create(pfop.CodeProcessing)
	if err := q.Enqueue(ctx, "p", inFlight, false); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := q.Claim(ctx, "p", "someone", 10); !ok || err != nil {
		t.Fatal("claim", ok, err)
	}

	setNow(lease / 2)
	if n := recoverBoth(); n != 0 {
		t.Fatalf("half a lease in: %d jobs enqueued, want 0", n)
	}
	setNow(lease)
	if n := recoverBoth(); n != 1 {
		t.Fatalf("a lease in, two workers sweeping: %d jobs enqueued, want 1", n)
	}
	if got := queued(); len(got) != 3 || got[lost] != 1 || got[inQueue] != 1 || got[inFlight] != 1 {
		t.Fatalf("queue after the sweep: %v", got)
	}
	for _, d := range []time.Duration{lease, 5 * lease, time.Hour} {
		setNow(d)
		if n := recoverBoth(); n != 0 {
			t.Fatalf("sweep at +%v: %d jobs enqueued again, want 0 (all are queued)", d, n)
		}
	}
	j, _, err := e.jobs.Get(ctx, lost)
	if err != nil {
		t.Fatal(err)
	}
	if !j.Updated.Equal(t0.Add(lease)) || j.Code != pfop.CodeWaiting {
		t.Fatalf("recovered job: code %d updated %v, want waiting, updated at the sweep", j.Code, j.Updated)
	}
}
