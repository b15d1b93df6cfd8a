package redisq

import (
	"context"
	"errors"
	"testing"

	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/redisconn"
)

// count returns how many of ids are id.
func count(ids []string, id string) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

// TestEnqueueLostReplyQueuesOnce: Redis ran an Enqueue but its reply was
// lost; the job must be in the queue once, not twice (a job queued twice
// is run twice, possibly by two workers at once).
func TestEnqueueLostReplyQueuesOnce(t *testing.T) {
	r := agenttest.StartRedis(t)
	p := agenttest.StartFaultProxy(t, r.Addr)
	q, err := New(Config{Server: redisconn.Config{Addr: p.Addr()}, Prefix: "lost-enqueue:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	ctx := context.Background()
	if err := q.Enqueue(ctx, "p", "job-warm", false); err != nil { // loads the script
		t.Fatal(err)
	}
	p.DropReplyTo("job-once")
	err = q.Enqueue(ctx, "p", "job-once", false)
	t.Logf("Enqueue with its reply lost: %v", err)
	if p.Dropped() == 0 {
		t.Fatal("no reply was lost: the test tells nothing")
	}
	ids, jerr := q.JobIDs(ctx, "p")
	if jerr != nil {
		t.Fatal(jerr)
	}
	if n := count(ids, "job-once"); n != 1 {
		t.Fatalf("job-once is %d times in the queue (%v), want once", n, ids)
	}
}

// TestClaimLostReplyStrandsNothing: Redis ran a Claim but its reply was
// lost; the consumer must not end up holding an entry it does not know
// of (counted in flight against the pipeline's limit, run by nobody until
// reclaimed) while it is handed another.
func TestClaimLostReplyStrandsNothing(t *testing.T) {
	r := agenttest.StartRedis(t)
	p := agenttest.StartFaultProxy(t, r.Addr)
	q, err := New(Config{Server: redisconn.Config{Addr: p.Addr()}, Prefix: "lost-claim:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	ctx := context.Background()
	for _, id := range []string{"job-1", "job-2"} {
		if err := q.Enqueue(ctx, "p", id, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := q.Claim(ctx, "other", "warm", 1); err != nil { // loads the script
		t.Fatal(err)
	}
	p.DropReplyTo("worker-lost")
	m, ok, err := q.Claim(ctx, "p", "worker-lost", 10)
	t.Logf("Claim with its reply lost: %+v, %v, %v", m, ok, err)
	if p.Dropped() == 0 {
		t.Fatal("no reply was lost: the test tells nothing")
	}
	_, inFlight, derr := q.Depth(ctx, "p")
	if derr != nil {
		t.Fatal(derr)
	}
	held := int64(0)
	if ok {
		held = 1
	}
	if inFlight != held {
		t.Fatalf("%d entries in flight, the caller holds %d (claim = %+v, %v, %v)", inFlight, held, m, ok, err)
	}
}

// TestTouchAfterRedisLostItsData: Redis restarted without its data (no
// persistence, a replica promoted before it had the stream) while a job
// ran. Its claim is gone, and the worker's recovery will queue the job
// again; Touch must say ErrLost so that the worker stops, rather than a
// plain error it only logs while another worker runs the job again.
func TestTouchAfterRedisLostItsData(t *testing.T) {
	r := agenttest.StartRedis(t)
	q, err := New(Config{Server: redisconn.Config{Addr: r.Addr}, Prefix: "touch-lost:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	ctx := context.Background()
	if err := q.Enqueue(ctx, "p", "job-1", false); err != nil {
		t.Fatal(err)
	}
	m, ok, err := q.Claim(ctx, "p", "w1", 1)
	if err != nil || !ok {
		t.Fatalf("Claim = %v, %v", ok, err)
	}
	if err := q.Touch(ctx, m, "w1"); err != nil {
		t.Fatalf("Touch before the restart: %v", err)
	}
	r.Stop()
	r.Start() // comes back empty
	if err := q.Touch(ctx, m, "w1"); !errors.Is(err, pfop.ErrLost) {
		t.Fatalf("Touch after Redis lost the stream: %v, want ErrLost", err)
	}
	// The stream is back (another job) but the group's record of the
	// claim is not.
	if err := q.Enqueue(ctx, "p", "job-2", false); err != nil {
		t.Fatal(err)
	}
	if err := q.Touch(ctx, m, "w1"); !errors.Is(err, pfop.ErrLost) {
		t.Fatalf("Touch of a claim the new stream never had: %v, want ErrLost", err)
	}
	n, _ := q.streams("p")
	if err := q.client.XGroupDestroy(ctx, n, Group).Err(); err != nil {
		t.Fatal(err)
	}
	if err := q.Touch(ctx, m, "w1"); !errors.Is(err, pfop.ErrLost) {
		t.Fatalf("Touch on a stream without the group: %v, want ErrLost", err)
	}
}
