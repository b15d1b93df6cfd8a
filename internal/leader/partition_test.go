package leader

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"

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

// TestConsulPartitionedLeaderStepsDown: a leader cut off from its Consul
// agent (silent connections: a partition, a hung agent) whose session
// Consul then ends must stop running the task once another process takes
// the lock, rather than wait forever on a query that will never answer
// and lead alongside the new leader.
func TestConsulPartitionedLeaderStepsDown(t *testing.T) {
	agent := agenttest.StartConsul(t)
	cfg := api.DefaultConfig()
	cfg.Address = agent.Addr
	direct, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := newPartitioner(t, agent.Addr)
	cfg.Address = p.ln.Addr().String()
	proxied, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const key = "dora-test/locks/partition"
	a := campaign(t, proxied, key, "a")
	waitFor(t, "a to lead", a.leading.Load)
	b := campaign(t, direct, key, "b")
	t.Cleanup(p.heal) // runs before the candidates' cleanups: frees a stuck a

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
	waitFor(t, "b to lead", b.leading.Load)
	waitFor(t, "a to stop leading", func() bool { return !a.leading.Load() })
}
