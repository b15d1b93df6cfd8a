package consul

import (
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/agenttest"
	"github.com/hashicorp/consul/api"
)

// freezer is a TCP proxy in front of a Consul agent whose freeze makes
// every connection open at that moment go silent (what is sent either way
// is dropped, the connection stays open: a partition, a hung agent, a
// NAT that forgot the flow), while new connections work.
type freezer struct {
	ln      net.Listener
	backend string
	wg      sync.WaitGroup
	mu      sync.Mutex
	pairs   []*frozenPair
	closed  bool // the test ended: no more connections
}

type frozenPair struct {
	client, server net.Conn
	frozen         atomic.Bool
}

func newFreezer(t *testing.T, backend string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, backend: backend}
	f.wg.Go(f.accept)
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		f.closed = true
		for _, p := range f.pairs {
			p.client.Close()
			p.server.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

// freeze silences every connection open now.
func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.pairs {
		p.frozen.Store(true)
	}
}

func (f *freezer) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", f.backend)
		if err != nil {
			c.Close()
			continue
		}
		p := &frozenPair{client: c, server: s}
		f.mu.Lock()
		if f.closed { // accepted as the test ended
			f.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		f.pairs = append(f.pairs, p)
		f.mu.Unlock()
		pump := func(dst, src net.Conn) {
			defer dst.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 && !p.frozen.Load() {
					if _, err := dst.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}
		f.wg.Go(func() { pump(s, c) })
		f.wg.Go(func() { pump(c, s) })
	}
}

// A blocking query whose connection goes silent (the agent hangs, the
// network drops the flow) must not freeze the set for good: each query is
// bounded by its wait time plus Consul's jitter and a margin, then retried
// on a new connection, so an instance registered meanwhile arrives.
func TestWatchSurvivesSilentConnection(t *testing.T) {
	a := agenttest.StartConsul(t)
	direct := clientFor(t, a)
	f := newFreezer(t, a.Addr)
	cfg := api.DefaultConfig()
	cfg.Address = f.ln.Addr().String()
	proxied, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	registerTTL(t, direct, "ufop-grepd", "g1", 9101, []string{"version=v1"}, nil, "passing")
	d := New(Config{
		Client:     proxied,
		Logger:     slog.New(slog.NewTextHandler(&syncBuffer{}, nil)),
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
		WaitTime:   time.Second,
	})
	w := startWatch(t, d)
	const g1 = "g1@127.0.0.1:9101/grepd/v1/z0"
	w.waitFor("[" + g1 + "]")
	// The catalog and the health watch each hold a connection while
	// they block: silence both.
	poll(t, "two connections", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.pairs) >= 2
	})
	f.freeze()
	registerTTL(t, direct, "ufop-grepd", "g2", 9102, []string{"version=v1"}, nil, "passing")
	registerTTL(t, direct, "ufop-wordcount", "w1", 9201, []string{"version=v2"}, nil, "passing")
	w.waitFor("[" + g1 + ",g2@127.0.0.1:9102/grepd/v1/z0,w1@127.0.0.1:9201/wordcount/v2/z0]")
}
