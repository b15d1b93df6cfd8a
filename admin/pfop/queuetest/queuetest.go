// Package queuetest is the contract suite every pfop.Queue must pass
// (boltq, redisq): order, per-pipeline limits, idle jobs, release, touch
// and reclaim, concurrent claimers.
package queuetest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/pfop"
)

// Run runs the suite; open returns a new, empty queue for each subtest.
func Run(t *testing.T, open func(t *testing.T) pfop.Queue) {
	t.Run("FIFOAndAck", func(t *testing.T) { testFIFO(t, open(t)) })
	t.Run("Limit", func(t *testing.T) { testLimit(t, open(t)) })
	t.Run("IdleJobs", func(t *testing.T) { testIdle(t, open(t)) })
	t.Run("Release", func(t *testing.T) { testRelease(t, open(t)) })
	t.Run("TouchAndReclaim", func(t *testing.T) { testReclaim(t, open(t)) })
	t.Run("ReleaseByFormerHolder", func(t *testing.T) { testReleaseLost(t, open(t)) })
	t.Run("ReclaimAtMost", func(t *testing.T) { testReclaimMax(t, open(t)) })
	t.Run("Pipelines", func(t *testing.T) { testPipelines(t, open(t)) })
	t.Run("JobIDs", func(t *testing.T) { testJobIDs(t, open(t)) })
	t.Run("BadInput", func(t *testing.T) { testBadInput(t, open(t)) })
	t.Run("ConcurrentClaimers", func(t *testing.T) { testConcurrent(t, open(t)) })
}

func enqueue(t *testing.T, q pfop.Queue, pipeline, job string, idle bool) {
	t.Helper()
	if err := q.Enqueue(context.Background(), pipeline, job, idle); err != nil {
		t.Fatalf("enqueue %s: %v", job, err)
	}
}

func claim(t *testing.T, q pfop.Queue, pipeline, consumer string, limit int) (pfop.Message, bool) {
	t.Helper()
	m, ok, err := q.Claim(context.Background(), pipeline, consumer, limit)
	if err != nil {
		t.Fatalf("claim on %s: %v", pipeline, err)
	}
	if ok && (m.Pipeline != pipeline || m.ID == "") {
		t.Fatalf("claimed %+v from %s", m, pipeline)
	}
	return m, ok
}

func mustClaim(t *testing.T, q pfop.Queue, pipeline, consumer string, limit int, wantJob string) pfop.Message {
	t.Helper()
	m, ok := claim(t, q, pipeline, consumer, limit)
	if !ok {
		t.Fatalf("claim on %s: nothing, want %s", pipeline, wantJob)
	}
	if m.JobID != wantJob {
		t.Fatalf("claim on %s: job %s, want %s", pipeline, m.JobID, wantJob)
	}
	return m
}

func mustNotClaim(t *testing.T, q pfop.Queue, pipeline string, limit int, why string) {
	t.Helper()
	if m, ok := claim(t, q, pipeline, "w-none", limit); ok {
		t.Fatalf("claim on %s gave %s, want nothing (%s)", pipeline, m.JobID, why)
	}
}

func ack(t *testing.T, q pfop.Queue, m pfop.Message) {
	t.Helper()
	if err := q.Ack(context.Background(), m); err != nil {
		t.Fatalf("ack %s: %v", m.JobID, err)
	}
}

func testFIFO(t *testing.T, q pfop.Queue) {
	mustNotClaim(t, q, "p", 10, "unknown pipeline")
	for _, j := range []string{"a", "b", "c"} {
		enqueue(t, q, "p", j, false)
	}
	ma := mustClaim(t, q, "p", "w1", 10, "a")
	mb := mustClaim(t, q, "p", "w1", 10, "b")
	ack(t, q, ma)
	ack(t, q, ma) // twice: not an error
	mc := mustClaim(t, q, "p", "w2", 10, "c")
	mustNotClaim(t, q, "p", 10, "queue drained")
	ack(t, q, mb)
	ack(t, q, mc)
	mustNotClaim(t, q, "p", 10, "queue drained")
	if ma.ID == mb.ID || mb.ID == mc.ID {
		t.Fatalf("message ids not distinct: %s %s %s", ma.ID, mb.ID, mc.ID)
	}
}

func testLimit(t *testing.T, q pfop.Queue) {
	for i := range 5 {
		enqueue(t, q, "lim", fmt.Sprintf("j%d", i), false)
	}
	m0 := mustClaim(t, q, "lim", "w1", 2, "j0")
	mustClaim(t, q, "lim", "w2", 2, "j1")
	mustNotClaim(t, q, "lim", 2, "two in flight, limit 2 (counted across consumers)")
	ack(t, q, m0)
	mustClaim(t, q, "lim", "w1", 2, "j2")
	mustNotClaim(t, q, "lim", 2, "limit 2 again")
	mustClaim(t, q, "lim", "w1", 3, "j3") // the claimer's limit decides
	// Another pipeline is not limited by this one.
	enqueue(t, q, "other", "o0", false)
	mustClaim(t, q, "other", "w1", 1, "o0")
}

func testIdle(t *testing.T, q pfop.Queue) {
	enqueue(t, q, "p", "idle1", true)
	enqueue(t, q, "p", "norm1", false)
	enqueue(t, q, "p", "norm2", false)
	m1 := mustClaim(t, q, "p", "w1", 5, "norm1") // normal jobs first, although idle1 came earlier
	m2 := mustClaim(t, q, "p", "w1", 5, "norm2")
	mustNotClaim(t, q, "p", 5, "idle job while the pipeline is busy")
	ack(t, q, m1)
	mustNotClaim(t, q, "p", 5, "idle job while one job is still in flight")
	ack(t, q, m2)
	mi := mustClaim(t, q, "p", "w1", 5, "idle1")
	if !mi.Idle {
		t.Fatalf("idle job claimed as %+v", mi)
	}
	enqueue(t, q, "p", "norm3", false)
	mustClaim(t, q, "p", "w1", 5, "norm3") // normal jobs still run beside an idle one, within the limit
	enqueue(t, q, "p", "idle2", true)
	mustNotClaim(t, q, "p", 5, "second idle job while busy")
}

func testRelease(t *testing.T, q pfop.Queue) {
	enqueue(t, q, "p", "a", false)
	enqueue(t, q, "p", "i", true)
	m := mustClaim(t, q, "p", "w1", 1, "a")
	mustNotClaim(t, q, "p", 1, "limit 1")
	if err := q.Release(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	m = mustClaim(t, q, "p", "w2", 1, "a") // back, and claimable by anyone
	ack(t, q, m)
	mi := mustClaim(t, q, "p", "w1", 1, "i")
	if err := q.Release(context.Background(), mi); err != nil {
		t.Fatal(err)
	}
	mi = mustClaim(t, q, "p", "w1", 1, "i")
	if !mi.Idle {
		t.Fatalf("released idle job came back as %+v", mi)
	}
	ack(t, q, mi)
	mustNotClaim(t, q, "p", 1, "drained")
}

func testReclaim(t *testing.T, q pfop.Queue) {
	ctx := context.Background()
	enqueue(t, q, "p", "a", false)
	m := mustClaim(t, q, "p", "dead", 1, "a")
	if got, err := q.Reclaim(ctx, "p", "alive", time.Hour, 10); err != nil || len(got) != 0 {
		t.Fatalf("reclaim of a fresh claim: %v %v", got, err)
	}
	if err := q.Touch(ctx, m, "dead"); err != nil {
		t.Fatalf("touch by the holder: %v", err)
	}
	if err := q.Touch(ctx, m, "someone-else"); !errors.Is(err, pfop.ErrLost) {
		t.Fatalf("touch by a non-holder: %v, want ErrLost", err)
	}
	var got []pfop.Message
	deadline := time.Now().Add(10 * time.Second)
	for len(got) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the message was never reclaimed")
		}
		var err error
		got, err = q.Reclaim(ctx, "p", "alive", time.Millisecond, 10)
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 1 || got[0].JobID != "a" || got[0].ID != m.ID {
		t.Fatalf("reclaimed %+v, want the message of a", got)
	}
	if err := q.Touch(ctx, m, "dead"); !errors.Is(err, pfop.ErrLost) {
		t.Fatalf("touch by the former holder: %v, want ErrLost", err)
	}
	if err := q.Touch(ctx, got[0], "alive"); err != nil {
		t.Fatalf("touch by the new holder: %v", err)
	}
	mustNotClaim(t, q, "p", 1, "the reclaimed message still counts against the limit")
	ack(t, q, got[0])
	mustNotClaim(t, q, "p", 1, "drained")
	if got, err := q.Reclaim(ctx, "p", "alive", time.Millisecond, 10); err != nil || len(got) != 0 {
		t.Fatalf("reclaim after ack: %v %v", got, err)
	}
	if got, err := q.Reclaim(ctx, "never-used", "alive", time.Millisecond, 10); err != nil || len(got) != 0 {
		t.Fatalf("reclaim on an unknown pipeline: %v %v", got, err)
	}
}

// reclaimAll reclaims pipeline's messages for consumer until it gets
// some (a claim must have been idle for a millisecond).
func reclaimAll(t *testing.T, q pfop.Queue, pipeline, consumer string) []pfop.Message {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := q.Reclaim(context.Background(), pipeline, consumer, time.Millisecond, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing was ever reclaimed")
		}
	}
}

// testReleaseLost: a worker that hands back a message another has
// reclaimed since (it shuts down just after the takeover) must not put it
// back in the queue, where a third would claim and run it again while the
// new holder runs it; nor one that is no longer in flight.
func testReleaseLost(t *testing.T, q pfop.Queue) {
	ctx := context.Background()
	enqueue(t, q, "p", "a", false)
	m := mustClaim(t, q, "p", "slow", 2, "a")
	got := reclaimAll(t, q, "p", "alive")
	if len(got) != 1 || got[0].ID != m.ID {
		t.Fatalf("reclaimed %+v, want the message of a", got)
	}
	if err := q.Release(ctx, m); !errors.Is(err, pfop.ErrLost) {
		t.Fatalf("release by the former holder: %v, want ErrLost", err)
	}
	mustNotClaim(t, q, "p", 2, "the former holder's release must leave a with its new holder")
	if err := q.Touch(ctx, got[0], "alive"); err != nil {
		t.Fatalf("touch by the new holder after the former's release: %v", err)
	}
	ack(t, q, got[0])
	if err := q.Release(ctx, got[0]); !errors.Is(err, pfop.ErrLost) {
		t.Fatalf("release of an acknowledged message: %v, want ErrLost", err)
	}
	mustNotClaim(t, q, "p", 2, "drained")
}

// testReclaimMax: Reclaim takes no more than max messages (what the
// consumer can start), oldest first; the others stay with their holder.
func testReclaimMax(t *testing.T, q pfop.Queue) {
	ctx := context.Background()
	var dead []pfop.Message
	for _, j := range []string{"a", "b", "c"} {
		enqueue(t, q, "p", j, false)
		dead = append(dead, mustClaim(t, q, "p", "dead", 10, j))
	}
	time.Sleep(5 * time.Millisecond) // idle for longer than minIdle below
	if got, err := q.Reclaim(ctx, "p", "alive", time.Millisecond, 0); err != nil || len(got) != 0 {
		t.Fatalf("reclaim of at most 0: %v %v", got, err)
	}
	got, err := q.Reclaim(ctx, "p", "alive", time.Millisecond, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].JobID != "a" || got[1].JobID != "b" {
		t.Fatalf("reclaim of at most 2: %+v, want a and b", got)
	}
	if err := q.Touch(ctx, dead[2], "dead"); err != nil {
		t.Fatalf("touch of c by its holder after the others were reclaimed: %v", err)
	}
	if err := q.Touch(ctx, dead[0], "dead"); !errors.Is(err, pfop.ErrLost) {
		t.Fatalf("touch of a by its former holder: %v, want ErrLost", err)
	}
	mustNotClaim(t, q, "p", 3, "all three still in flight")
}

func testPipelines(t *testing.T, q pfop.Queue) {
	ps, err := q.Pipelines(context.Background())
	if err != nil || len(ps) != 0 {
		t.Fatalf("pipelines of an empty queue: %v %v", ps, err)
	}
	enqueue(t, q, "0.default", "a", false)
	enqueue(t, q, "video-1", "b", true)
	enqueue(t, q, "video-1", "c", false)
	ps, err = q.Pipelines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, p := range ps {
		seen[p] = true
	}
	if len(ps) != 2 || !seen["0.default"] || !seen["video-1"] {
		t.Fatalf("pipelines %v", ps)
	}
}

// testJobIDs: JobIDs lists the jobs waiting and in flight, not the
// acknowledged ones; a released job is still listed.
func testJobIDs(t *testing.T, q pfop.Queue) {
	ctx := context.Background()
	ids := func() map[string]int {
		t.Helper()
		got, err := q.JobIDs(ctx, "p")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, id := range got {
			out[id]++
		}
		return out
	}
	if got := ids(); len(got) != 0 {
		t.Fatalf("jobs of an unknown pipeline: %v", got)
	}
	enqueue(t, q, "p", "a", false)
	enqueue(t, q, "p", "b", true)
	enqueue(t, q, "p", "c", false)
	enqueue(t, q, "other", "x", false)
	ma := mustClaim(t, q, "p", "w1", 4, "a")
	mc := mustClaim(t, q, "p", "w1", 4, "c")
	if got := ids(); len(got) != 3 || got["a"] != 1 || got["b"] != 1 || got["c"] != 1 {
		t.Fatalf("jobs with a and c in flight: %v", got)
	}
	ack(t, q, ma)
	if err := q.Release(ctx, mc); err != nil {
		t.Fatal(err)
	}
	if got := ids(); len(got) != 2 || got["b"] != 1 || got["c"] != 1 {
		t.Fatalf("jobs after a was acked and c released: %v", got)
	}
	for i := range 250 { // more than one page of a paged listing
		enqueue(t, q, "p", fmt.Sprintf("m%d", i), false)
	}
	if got := ids(); len(got) != 252 || got["m249"] != 1 || got["m0"] != 1 {
		t.Fatalf("%d jobs listed after 250 more were enqueued, want 252", len(got))
	}
}

func testBadInput(t *testing.T, q pfop.Queue) {
	ctx := context.Background()
	for _, p := range []string{"", "has space", "a/b", string(make([]byte, 65))} {
		if err := q.Enqueue(ctx, p, "j", false); err == nil {
			t.Fatalf("enqueue on pipeline %q accepted", p)
		}
	}
	if err := q.Enqueue(ctx, "p", "", false); err == nil {
		t.Fatal("empty job id accepted")
	}
}

func testConcurrent(t *testing.T, q pfop.Queue) {
	const jobs, workers, limit = 60, 6, 3
	for i := range jobs {
		enqueue(t, q, "conc", fmt.Sprintf("j%03d", i), i%10 == 0)
	}
	var mu sync.Mutex
	inFlight, maxInFlight := 0, 0
	seen := map[string]int{}
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			consumer := fmt.Sprintf("w%d", w)
			deadline := time.Now().Add(30 * time.Second)
			for {
				mu.Lock()
				done := len(seen) == jobs
				mu.Unlock()
				if done {
					return
				}
				if time.Now().After(deadline) {
					errc <- errors.New("jobs never all delivered")
					return
				}
				m, ok, err := q.Claim(context.Background(), "conc", consumer, limit)
				if err != nil {
					errc <- err
					return
				}
				if !ok {
					time.Sleep(time.Millisecond) // polling, as a worker does
					continue
				}
				mu.Lock()
				inFlight++
				maxInFlight = max(maxInFlight, inFlight)
				seen[m.JobID]++
				mu.Unlock()
				runtime.Gosched() // let other claimers try while this one holds a message
				mu.Lock()
				inFlight-- // before the ack: the queue counts it until then
				mu.Unlock()
				if err := q.Ack(context.Background(), m); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if maxInFlight > limit {
		t.Fatalf("%d in flight at once, limit %d", maxInFlight, limit)
	}
	for j, n := range seen {
		if n != 1 {
			t.Fatalf("job %s delivered %d times", j, n)
		}
	}
	if len(seen) != jobs {
		t.Fatalf("%d jobs delivered, want %d", len(seen), jobs)
	}
}
