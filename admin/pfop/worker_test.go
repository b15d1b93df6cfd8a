package pfop_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/pfop/boltq"
	"github.com/doraproject/dora/admin/pfop/redisq"
	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/redisconn"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/bolt"
	"github.com/doraproject/dora/internal/store/bolt/bolttest"
	"github.com/doraproject/dora/router"
	"github.com/doraproject/dora/router/origin"
)

// hangingProc is the Processor of a worker about to die: its Process
// signals that the job is under way, then hangs until the worker is killed.
type hangingProc struct{ started chan struct{} }

func (h hangingProc) Process(ctx context.Context, _, _, _ string, _ io.Writer) (router.Result, error) {
	h.started <- struct{}{}
	<-ctx.Done()
	return router.Result{}, ctx.Err()
}

func waitStarted(t *testing.T, c chan struct{}) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(30 * time.Second):
		t.Fatal("the job never started")
	}
}

// checkRan: the job ends successfully with its result ("ABC") written
// once, after runs runs (2 after a crash: the crashed one and the re-run).
func checkRan(t *testing.T, e *env, id string, runs int) {
	t.Helper()
	s, _ := e.waitFinal(id)
	if s.Code != 0 || s.Items[0].Code != 0 || s.Items[0].ReturnOld != 0 {
		t.Fatalf("job ended %+v", s)
	}
	key := s.Items[0].Key
	if got, ok := e.read("photos", key); !ok || got != "ABC" {
		t.Fatalf("result %q %v", got, ok)
	}
	if n := e.objs.putCount("photos", key); n != 1 {
		t.Fatalf("result written %d times", n)
	}
	j, _, err := e.jobs.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if j.Attempts != runs {
		t.Fatalf("job attempted %d times, want %d", j.Attempts, runs)
	}
}

// TestWorkerCrashBolt: the embedded worker dies mid-job (its queue file is
// closed under it); after reopening the file, a new worker completes the
// job and the result is written once.
func TestWorkerCrashBolt(t *testing.T) {
	e := newEnv(t)
	e.object("photos", "a.txt", "abc")
	hang := hangingProc{started: make(chan struct{}, 1)}
	stopA := e.startWorker(e.q, func(c *pfop.WorkerConfig) { c.Processor, c.Grace = hang, time.Millisecond })
	id := e.submit(url.Values{"bucket": {"photos"}, "key": {"a.txt"}, "fops": {"upper/x"}})
	waitStarted(t, hang.started)
	if err := e.q.(*boltq.Queue).Close(); err != nil { // the process "dies": no ack, no hand back
		t.Fatal(err)
	}
	stopA()
	if _, st := e.prefop(id); st.Code != pfop.CodeProcessing {
		t.Fatalf("after the crash the job is %d, want processing", st.Code)
	}
	q2, err := boltq.Open(e.qPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q2.Close() })
	e.startWorker(q2, nil)
	checkRan(t, e, id, 2)
}

// TestWorkerCrashRedis: a Redis worker dies mid-job (its connection is
// gone: no heartbeat, no ack); another worker takes the job over with
// XAUTOCLAIM and completes it; the result is written once.
func TestWorkerCrashRedis(t *testing.T) {
	e := newEnv(t)
	_, newQ := redisQueues(t)
	qA, qB, qSubmit := newQ(), newQ(), newQ()
	e.object("photos", "a.txt", "abc")
	const reclaim = 300 * time.Millisecond
	hang := hangingProc{started: make(chan struct{}, 1)}
	stopA := e.startWorker(qA, func(c *pfop.WorkerConfig) {
		c.Consumer, c.ReclaimAfter, c.Grace, c.Processor = "A", reclaim, time.Millisecond, hang
	})
	j := e.submitUpper(qSubmit)
	waitStarted(t, hang.started)
	qA.Close() // worker A is cut off from Redis: it can neither touch, ack nor hand back
	stopA()
	e.startWorker(qB, func(c *pfop.WorkerConfig) { c.Consumer, c.ReclaimAfter = "B", reclaim })
	checkRan(t, e, j.ID, 2)
}

// countingProc is a Processor that tracks jobs in flight per pipeline (the
// key's prefix names it).
type countingProc struct {
	mu       sync.Mutex
	cur, max map[string]int
}

func (p *countingProc) Process(_ context.Context, _, key, _ string, _ io.Writer) (router.Result, error) {
	pl, _, _ := strings.Cut(key, "-")
	p.mu.Lock()
	p.cur[pl]++
	p.max[pl] = max(p.max[pl], p.cur[pl])
	p.mu.Unlock()
	time.Sleep(time.Millisecond) // the work
	p.mu.Lock()
	p.cur[pl]-- // before the ack: the queue still counts the job
	p.mu.Unlock()
	return router.Result{Saved: &origin.Object{ETag: "etag"}}, nil
}

type noObjects struct{}

func (noObjects) Stat(context.Context, string, string) (origin.Object, error) {
	return origin.Object{}, origin.ErrNotFound
}

// TestPipelineLimits: 200 jobs on two pipelines with limits 2 and 4, run by
// two workers of 8 slots each: never more in flight per pipeline than its
// limit, every job done once.
func TestPipelineLimits(t *testing.T) {
	queues := map[string]func(t *testing.T) (pfop.Queue, pfop.Queue){
		"bolt": func(t *testing.T) (pfop.Queue, pfop.Queue) {
			q, err := boltq.Open(filepath.Join(t.TempDir(), "q.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { q.Close() })
			return q, q
		},
		"redis": func(t *testing.T) (pfop.Queue, pfop.Queue) {
			rs := agenttest.StartRedis(t)
			var qs [2]pfop.Queue
			for i := range qs {
				q, err := redisq.New(redisq.Config{Server: redisconn.Config{Addr: rs.Addr}})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { q.Close() })
				qs[i] = q
			}
			return qs[0], qs[1]
		},
	}
	for name, open := range queues {
		t.Run(name, func(t *testing.T) {
			st := bolttest.Open(t, t.TempDir())
			q1, q2 := open(t)
			ctx := context.Background()
			jobs := pfop.Jobs{Store: st}
			limits := map[string]int{"p2": 2, "p4": 4}
			for i := range 200 {
				pl := "p2"
				if i%2 == 1 {
					pl = "p4"
				}
				id, err := pfop.NewID("z0")
				if err != nil {
					t.Fatal(err)
				}
				j := pfop.Job{ID: id, Code: pfop.CodeWaiting, Bucket: "b", Key: fmt.Sprintf("%s-%d", pl, i), Pipeline: pl,
					Type: i % 7 / 6, Items: []pfop.Item{{Cmd: "x/y", Code: pfop.CodeWaiting}}}
				if err := jobs.Create(ctx, j); err != nil {
					t.Fatal(err)
				}
				if err := q1.Enqueue(ctx, pl, id, j.Type == 1); err != nil {
					t.Fatal(err)
				}
			}
			proc := &countingProc{cur: map[string]int{}, max: map[string]int{}}
			var wg sync.WaitGroup
			wctx, cancel := context.WithCancel(ctx)
			for i, q := range []pfop.Queue{q1, q2} {
				w, err := pfop.NewWorker(pfop.WorkerConfig{
					Store: st, Queue: q, Processor: proc, Objects: noObjects{}, Limits: limits,
					Concurrency: 8, PollInterval: 2 * time.Millisecond, Consumer: fmt.Sprintf("w%d", i), Logger: testLogger(),
				})
				if err != nil {
					t.Fatal(err)
				}
				wg.Go(func() { w.Run(wctx) })
			}
			t.Cleanup(func() { cancel(); wg.Wait() })
			waitUntil(t, "all 200 jobs done", func() bool {
				kvs, err := st.List(ctx, store.PrefixJobs)
				if err != nil {
					t.Fatal(err)
				}
				done := 0
				for _, kv := range kvs {
					var j pfop.Job
					if err := json.Unmarshal(kv.Value, &j); err != nil {
						t.Fatal(err)
					}
					if j.Code == pfop.CodeSuccess {
						if j.Attempts != 1 {
							t.Fatalf("job %s attempted %d times", j.ID, j.Attempts)
						}
						done++
					}
				}
				return done == 200
			})
			proc.mu.Lock()
			defer proc.mu.Unlock()
			for pl, lim := range limits {
				if proc.max[pl] > lim || proc.max[pl] == 0 {
					t.Fatalf("pipeline %s: %d in flight at most, limit %d", pl, proc.max[pl], lim)
				}
			}
			t.Logf("max in flight: %v", proc.max)
		})
	}
}

var _ store.Store = (*bolt.Store)(nil)

// TestReclaimTakesNoMoreThanFreeSlots: a worker with one free slot that
// finds two jobs of a dead worker takes over only the one it can start.
// The other, left with the dead worker, stays reclaimable by a worker with
// room; taken but not started (so never heartbeated) it would be
// reclaimed again by another worker while this one still meant to start
// it, and run twice.
func TestReclaimTakesNoMoreThanFreeSlots(t *testing.T) {
	e := newEnv(t)
	e.object("photos", "a.txt", "abc")
	ctx := context.Background()
	j1, j2 := e.submitUpper(e.q), e.submitUpper(e.q)
	var dead []pfop.Message
	for range 2 {
		m, ok, err := e.q.Claim(ctx, j1.Pipeline, "dead", 10)
		if err != nil || !ok {
			t.Fatalf("claim: %v %v", ok, err)
		}
		dead = append(dead, m)
	}
	if j2.Pipeline != j1.Pipeline {
		t.Fatalf("pipelines %s and %s", j1.Pipeline, j2.Pipeline)
	}
	hang := hangingProc{started: make(chan struct{}, 2)}
	e.startWorker(e.q, func(c *pfop.WorkerConfig) {
		c.Consumer, c.Concurrency, c.ReclaimAfter, c.Grace, c.Processor = "B", 1, 100*time.Millisecond, time.Millisecond, hang
	})
	waitStarted(t, hang.started) // B took over one job and runs it: no slot left
	// Touch the dead worker's claims as the dead worker: ErrLost for the
	// one B took over, nil for the one it could not start.
	held := 0
	for _, m := range dead {
		if err := e.q.Touch(ctx, m, "dead"); err == nil {
			held++
		}
	}
	if held != 1 {
		t.Fatalf("the worker with one slot took over %d of the dead worker's 2 jobs, want 1", 2-held)
	}
}
