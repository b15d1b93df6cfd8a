package consul

import (
	"log/slog"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/agenttest"
	"github.com/hashicorp/consul/api"
)

// A blocking query whose connection goes silent (the agent hangs, the
// network drops the flow) must not freeze the set for good: each query is
// bounded by its wait time plus Consul's jitter and a margin, then retried
// on a new connection, so an instance registered meanwhile arrives.
func TestWatchSurvivesSilentConnection(t *testing.T) {
	a := agenttest.StartConsul(t)
	direct := clientFor(t, a)
	f := agenttest.StartFaultProxy(t, a.Addr)
	cfg := api.DefaultConfig()
	cfg.Address = f.Addr()
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
	poll(t, "two connections", func() bool { return f.Conns() >= 2 })
	f.Freeze()
	registerTTL(t, direct, "ufop-grepd", "g2", 9102, []string{"version=v1"}, nil, "passing")
	registerTTL(t, direct, "ufop-wordcount", "w1", 9201, []string{"version=v2"}, nil, "passing")
	w.waitFor("[" + g1 + ",g2@127.0.0.1:9102/grepd/v1/z0,w1@127.0.0.1:9201/wordcount/v2/z0]")
}
