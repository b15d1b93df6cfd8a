package agenttest

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// FaultProxy is a TCP proxy on loopback in front of an agent (Consul,
// Redis), for the faults a network or a hung agent causes that stopping
// the agent does not: connections that go silent (what is sent either way
// is dropped, the connection stays open: a partition, a hung agent, a NAT
// that forgot the flow) and a reply lost after its command ran. It is
// closed when the test ends.
type FaultProxy struct {
	ln      net.Listener
	backend string
	cut     atomic.Bool // every connection silent, new ones included
	marker  atomic.Pointer[[]byte]
	dropped atomic.Int32 // replies lost by DropReplyTo
	wg      sync.WaitGroup
	mu      sync.Mutex
	pairs   []*proxyPair
	closed  bool // the test ended: no more connections
}

// proxyPair is one proxied connection: the client's and the agent's side.
type proxyPair struct {
	client, server net.Conn
	frozen         atomic.Bool
	dropReply      atomic.Bool
}

// StartFaultProxy starts a FaultProxy in front of backend (host:port).
func StartFaultProxy(t testing.TB, backend string) *FaultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("agenttest: proxy: %v", err)
	}
	p := &FaultProxy{ln: ln, backend: backend}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.Heal()
		p.wg.Wait()
	})
	return p
}

// Addr is the proxy's address, host:port, to give clients instead of the
// agent's.
func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

// Conns is how many connections the proxy carries (since the last Heal).
func (p *FaultProxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pairs)
}

// Freeze silences every connection open now; new ones work.
func (p *FaultProxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.pairs {
		c.frozen.Store(true)
	}
}

// Partition silences every connection, open or new, until Heal.
func (p *FaultProxy) Partition() { p.cut.Store(true) }

// Heal closes every connection (the silent ones are dead for good) and
// lets new ones through.
func (p *FaultProxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut.Store(false)
	for _, c := range p.pairs {
		c.client.Close()
		c.server.Close()
	}
	p.pairs = nil
}

// DropReplyTo arms the proxy: the next request holding marker reaches the
// agent, and the client's connection is then closed instead of passing
// the reply on: the command ran, but the client cannot know (a connection
// reset, an agent killed right after it answered).
func (p *FaultProxy) DropReplyTo(marker string) { b := []byte(marker); p.marker.Store(&b) }

// Dropped is how many replies DropReplyTo lost so far.
func (p *FaultProxy) Dropped() int { return int(p.dropped.Load()) }

func (p *FaultProxy) accept() {
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
		pair := &proxyPair{client: c, server: s}
		p.mu.Lock()
		if p.closed { // accepted as the test ended
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.pairs = append(p.pairs, pair)
		p.mu.Unlock()
		p.wg.Go(func() { p.pump(pair, s, c, true) })
		p.wg.Go(func() { p.pump(pair, c, s, false) })
	}
}

// pump copies src to dst until either fails, dropping what a silent
// connection carries; up is the client → agent direction.
func (p *FaultProxy) pump(pair *proxyPair, dst, src net.Conn, up bool) {
	defer dst.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if up {
				if m := p.marker.Load(); m != nil && bytes.Contains(buf[:n], *m) && p.marker.CompareAndSwap(m, nil) {
					pair.dropReply.Store(true)
				}
			} else if pair.dropReply.Load() {
				p.dropped.Add(1)
				return // the command ran; its reply is lost
			}
			if !p.cut.Load() && !pair.frozen.Load() {
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}
