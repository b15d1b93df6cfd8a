package redisq

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/redisconn"
)

// replyDropper is a TCP proxy in front of a real Redis that, once armed
// with a marker, lets the first request holding it through to Redis and
// then closes the client's connection instead of passing Redis's reply
// on: the command ran, but the client cannot know (a connection reset or
// a Redis killed right after it answered).
type replyDropper struct {
	ln      net.Listener
	backend string
	marker  atomic.Pointer[[]byte]
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
	closed  bool // the test ended: no more connections
}

func newReplyDropper(t *testing.T, backend string) *replyDropper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &replyDropper{ln: ln, backend: backend}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		p.closed = true
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *replyDropper) addr() string { return p.ln.Addr().String() }

// arm makes the next request holding marker lose its reply.
func (p *replyDropper) arm(marker string) { b := []byte(marker); p.marker.Store(&b) }

func (p *replyDropper) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.backend)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed { // accepted as the test ended
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		var drop atomic.Bool
		p.wg.Go(func() { // client → Redis
			defer s.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if m := p.marker.Load(); m != nil && bytes.Contains(buf[:n], *m) && p.marker.CompareAndSwap(m, nil) {
						drop.Store(true)
					}
					if _, werr := s.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		})
		p.wg.Go(func() { // Redis → client
			defer c.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 {
					if drop.Load() {
						return // the command ran; its reply is lost
					}
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		})
	}
}

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
	p := newReplyDropper(t, r.Addr)
	q, err := New(Config{Server: redisconn.Config{Addr: p.addr()}, Prefix: "lost-enqueue:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	ctx := context.Background()
	if err := q.Enqueue(ctx, "p", "job-warm", false); err != nil { // loads the script
		t.Fatal(err)
	}
	p.arm("job-once")
	err = q.Enqueue(ctx, "p", "job-once", false)
	t.Logf("Enqueue with its reply lost: %v", err)
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
	p := newReplyDropper(t, r.Addr)
	q, err := New(Config{Server: redisconn.Config{Addr: p.addr()}, Prefix: "lost-claim:"})
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
	p.arm("worker-lost")
	m, ok, err := q.Claim(ctx, "p", "worker-lost", 10)
	t.Logf("Claim with its reply lost: %+v, %v, %v", m, ok, err)
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
