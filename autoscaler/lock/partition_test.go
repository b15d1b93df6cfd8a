package lock

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/doraproject/dora/internal/agenttest"
)

// partitioner is a TCP proxy in front of a Consul agent; partition makes
// every connection, open or new, go silent (what is sent either way is
// dropped, connections stay open), as a network partition or a hung agent
// does; heal lets new connections through again and drops the silent ones.
type partitioner struct {
	ln      net.Listener
	backend string
	cut     atomic.Bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   []net.Conn
	closed  bool // the test ended: no more connections
}

func newPartitioner(t *testing.T, backend string) *partitioner {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &partitioner{ln: ln, backend: backend}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.heal()
		p.wg.Wait()
	})
	return p
}

func (p *partitioner) partition() { p.cut.Store(true) }

// heal closes every connection (the silent ones are dead for good) and
// lets new ones through.
func (p *partitioner) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut.Store(false)
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *partitioner) accept() {
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
		pump := func(dst, src net.Conn) {
			defer dst.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 && !p.cut.Load() {
					if _, err := dst.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}
		p.wg.Go(func() { pump(s, c) })
		p.wg.Go(func() { pump(c, s) })
	}
}

// TestPartitionedLeaderStepsDown: an autoscaler cut off from its Consul
// agent (silent connections: a partition, a hung agent) whose session
// Consul then ends must stop leading once another takes the lock, rather
// than wait forever on the lock's watch and scale alongside the new
// leader; and, still cut off, its Run must return when its context ends
// rather than hang releasing the lock or campaigning on a silent
// connection.
func TestPartitionedLeaderStepsDown(t *testing.T) {
	agent := agenttest.StartConsul(t)
	direct := client(t, agent)
	p := newPartitioner(t, agent.Addr)
	cfg := api.DefaultConfig()
	cfg.Address = p.ln.Addr().String()
	proxied, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const key = "dora/autoscaler/partition"
	b := &board{}
	opts := Options{LockDelay: 100 * time.Millisecond}
	a := start(t, proxied, key, "a", b, opts)
	waitFor(t, failover, "a to lead", a.leading.Load)
	// c on its own board: a's would see the overlap this test is about.
	c := start(t, direct, key, "c", &board{}, opts)
	t.Cleanup(p.heal) // runs before the contenders' cleanups: frees a stuck a

	kv, _, err := direct.KV().Get(key, nil)
	if err != nil || kv == nil || kv.Session == "" || string(kv.Value) != "a" {
		t.Fatalf("lock key = %+v, %v; want a's", kv, err)
	}
	p.partition()
	// Consul ends a's session, as it does once a's renewals stop for the
	// TTL or a's node is declared dead.
	if _, err := direct.Session().Destroy(kv.Session, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, failover, "c to lead", c.leading.Load)
	waitFor(t, failover, "a to stop leading", func() bool { return !a.leading.Load() })

	a.cancel()
	waitReturn(t, a.done, "a's Run, cut off")
	a.done <- nil // for its cleanup
}

func TestJudge(t *testing.T) {
	t0 := time.Unix(1000, 0)
	budget := 5 * time.Second
	failed := errors.New("read timed out")
	cases := []struct {
		name             string
		now, start, conf time.Time
		holder           string
		err              error
		wantConf         time.Time
		want             verdict
	}{
		{"ours", t0.Add(2 * time.Second), t0.Add(time.Second), t0, "s1", nil, t0.Add(time.Second), held},
		{"another session", t0.Add(time.Second), t0, t0, "s2", nil, t0, taken},
		{"no holder", t0.Add(time.Second), t0, t0, "", nil, t0, taken},
		{"error within the budget", t0.Add(4 * time.Second), t0, t0, "", failed, t0, held},
		{"error past the budget", t0.Add(5 * time.Second), t0, t0, "", failed, t0, unconfirmed},
	}
	for _, c := range cases {
		conf, v := judge(c.now, c.start, c.conf, budget, "s1", c.holder, c.err)
		if !conf.Equal(c.wantConf) || v != c.want {
			t.Errorf("%s: judge = %v, %v; want %v, %v", c.name, conf, v, c.wantConf, c.want)
		}
	}
}
