package pfop_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/pfop/boltq"
	"github.com/doraproject/dora/internal/store"
)

// TestLostEnqueueRecoveredRedis reproduces the job lost by a Redis that
// goes down after acknowledging its XADD (no persistence, as the soak's
// Redis): the job is acknowledged to the client and stored as waiting, the
// restarted Redis holds nothing, and a worker started afterwards must still
// run it to the end, once.
func TestLostEnqueueRecoveredRedis(t *testing.T) {
	e := newEnv(t)
	rs, newQ := redisQueues(t)
	qSubmit := newQ()
	e.object("photos", "a.txt", "abc")
	j := e.submitUpper(qSubmit)
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
	checkRan(t, e, j.ID, 1)
}

// sweepRig is what the recovery and retention tests drive: an env, a bolt
// queue of their own, and a clock that stays at t0 until set.
type sweepRig struct {
	*env
	t  *testing.T
	q  *boltq.Queue
	t0 time.Time
	mu sync.Mutex
	d  time.Duration // now is t0 + d
}

func newSweepRig(t *testing.T) *sweepRig {
	q, err := boltq.Open(filepath.Join(t.TempDir(), "q.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return &sweepRig{env: newEnv(t), t: t, q: q, t0: time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)}
}

func (r *sweepRig) now() time.Time { r.mu.Lock(); defer r.mu.Unlock(); return r.t0.Add(r.d) }

// setNow moves the clock to t0 + d.
func (r *sweepRig) setNow(d time.Duration) { r.mu.Lock(); r.d = d; r.mu.Unlock() }

// worker is a worker on st (the env's store, or one wrapping it) with the
// rig's queue and clock.
func (r *sweepRig) worker(st store.Store, retention time.Duration) *pfop.Worker {
	w, err := pfop.NewWorker(pfop.WorkerConfig{Store: st, Queue: r.q, Processor: r.env.r, Objects: r.objs, Now: r.now,
		JobRetention: retention, Logger: testLogger()})
	if err != nil {
		r.t.Fatal(err)
	}
	return w
}

// job is a new job with code on pipeline p, written at t0 (not stored).
func (r *sweepRig) job(code int) pfop.Job {
	id, err := pfop.NewID("z0")
	if err != nil {
		r.t.Fatal(err)
	}
	return pfop.Job{ID: id, Code: code, Bucket: "photos", Key: "a.txt", Pipeline: "p",
		Created: r.t0, Updated: r.t0, Items: []pfop.Item{{Cmd: "upper/x", Code: code}}}
}

// create stores a new job with code and returns its id.
func (r *sweepRig) create(code int) string {
	j := r.job(code)
	if err := r.jobs.Create(context.Background(), j); err != nil {
		r.t.Fatal(err)
	}
	return j.ID
}

// TestRecoverLostIsIdempotent drives RecoverLost with a clock of its own:
// a job in no queue is enqueued once it is a lease old, and only once, even
// by two workers sweeping at the same moment; a job the queue holds (waiting
// or in flight) and a finished job are left alone.
func TestRecoverLostIsIdempotent(t *testing.T) {
	r := newSweepRig(t)
	e, q, t0, setNow, create := r.env, r.q, r.t0, r.setNow, r.create
	ctx := context.Background()
	const lease = time.Minute
	w1, w2 := r.worker(e.st, 0), r.worker(e.st, 0)
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

// readLog is a store recording the lists and gets made through it.
type readLog struct {
	store.Store
	mu    sync.Mutex
	lists []string
	gets  []string
}

func (s *readLog) List(ctx context.Context, prefix string) ([]store.KV, error) {
	s.mu.Lock()
	s.lists = append(s.lists, prefix)
	s.mu.Unlock()
	return s.Store.List(ctx, prefix)
}

func (s *readLog) Get(ctx context.Context, key string) (store.KV, error) {
	s.mu.Lock()
	s.gets = append(s.gets, key)
	s.mu.Unlock()
	return s.Store.Get(ctx, key)
}

// TestJobRetentionAndOpenIndex: finished job records expire after the
// retention and PruneJobs deletes them (unfinished ones never); the
// recovery reads only the unfinished jobs (the index), never a finished
// job's record; an unfinished job stored before the index existed is
// indexed by PruneJobs and then recovered.
func TestJobRetentionAndOpenIndex(t *testing.T) {
	r := newSweepRig(t)
	e, q, setNow, newJob, create := r.env, r.q, r.setNow, r.job, r.create
	ctx := context.Background()
	const retention = 7 * 24 * time.Hour
	st := &readLog{Store: e.st}
	w := r.worker(st, retention)
	open := func() map[string]bool {
		kvs, err := e.st.List(ctx, "pfop/open/")
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, kv := range kvs {
			m[strings.TrimPrefix(kv.Key, "pfop/open/")] = true
		}
		return m
	}
	exists := func(id string) bool {
		_, _, err := e.jobs.Get(ctx, id)
		if err != nil && !errors.Is(err, pfop.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}

	done := create(pfop.CodeSuccess)
	failed := create(pfop.CodeFailed)
	waiting := create(pfop.CodeWaiting)
	if err := q.Enqueue(ctx, "p", waiting, false); err != nil {
		t.Fatal(err)
	}
	ending := create(pfop.CodeProcessing)
	if err := q.Enqueue(ctx, "p", ending, false); err != nil {
		t.Fatal(err)
	}
	// Stored before the index existed: no entry, in no queue.
	legacy := newJob(pfop.CodeWaiting)
	b, _ := json.Marshal(legacy)
	if _, err := e.st.CAS(ctx, store.JobKey(legacy.ID), b, 0); err != nil {
		t.Fatal(err)
	}
	if got := open(); len(got) != 2 || !got[waiting] || !got[ending] {
		t.Fatalf("index of unfinished jobs %v, want exactly %s and %s", got, waiting, ending)
	}
	// Ending a job takes it out of the index, in the same write.
	if _, err := e.jobs.Update(ctx, ending, func(j *pfop.Job) error { j.Code = pfop.CodeSuccess; return nil }); err != nil {
		t.Fatal(err)
	}
	if got := open(); len(got) != 1 || !got[waiting] {
		t.Fatalf("index after %s ended: %v, want only %s", ending, got, waiting)
	}

	// The recovery reads the index and the unfinished jobs only.
	setNow(time.Hour)
	if n, err := w.RecoverLost(ctx, time.Minute); err != nil || n != 0 {
		t.Fatalf("RecoverLost = %d, %v; want 0 (the legacy job is not indexed yet)", n, err)
	}
	for _, p := range st.lists {
		if p == store.PrefixJobs {
			t.Fatal("RecoverLost listed every job record")
		}
	}
	for _, k := range st.gets {
		if k == store.JobKey(done) || k == store.JobKey(failed) || k == store.JobKey(ending) {
			t.Fatalf("RecoverLost read the finished job %s", k)
		}
	}

	// Within the retention nothing is deleted; the legacy job gets its entry.
	setNow(retention - time.Second)
	if n, err := w.PruneJobs(ctx, retention); err != nil || n != 0 {
		t.Fatalf("PruneJobs within the retention = %d, %v; want 0", n, err)
	}
	if got := open(); len(got) != 2 || !got[legacy.ID] {
		t.Fatalf("index after PruneJobs %v, want %s and %s", got, waiting, legacy.ID)
	}
	if n, err := w.RecoverLost(ctx, time.Minute); err != nil || n != 1 {
		t.Fatalf("RecoverLost after the repair = %d, %v; want the legacy job", n, err)
	}
	ids, err := q.JobIDs(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ids, legacy.ID) {
		t.Fatalf("queue %v lacks the recovered legacy job", ids)
	}

	// A retention after their last write, the finished records go; the
	// unfinished ones stay however old. A negative retention keeps all.
	setNow(2 * retention)
	if n, err := w.PruneJobs(ctx, -1); err != nil || n != 0 {
		t.Fatalf("PruneJobs with a negative retention = %d, %v; want 0", n, err)
	}
	if n, err := w.PruneJobs(ctx, retention); err != nil || n != 3 {
		t.Fatalf("PruneJobs past the retention = %d, %v; want 3", n, err)
	}
	for id, want := range map[string]bool{done: false, failed: false, ending: false, waiting: true, legacy.ID: true} {
		if exists(id) != want {
			t.Errorf("job %s exists = %v, want %v", id, !want, want)
		}
	}
	if n, err := w.PruneJobs(ctx, retention); err != nil || n != 0 {
		t.Fatalf("PruneJobs again = %d, %v; want 0", n, err)
	}
}
