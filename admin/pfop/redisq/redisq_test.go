package redisq

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/pfop/queuetest"
	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/redisconn"
)

// TestContract runs the queue contract suite against a real redis-server;
// each subtest gets its own key prefix.
func TestContract(t *testing.T) {
	r := agenttest.StartRedis(t)
	var n atomic.Int64
	queuetest.Run(t, func(t *testing.T) pfop.Queue {
		q, err := New(Config{Server: redisconn.Config{Addr: r.Addr}, Prefix: fmt.Sprintf("test%d:", n.Add(1))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
		return q
	})
}

func TestConfig(t *testing.T) {
	for _, c := range []Config{{}, {Server: redisconn.Config{URL: "http://x"}}} {
		if _, err := New(c); err == nil {
			t.Fatalf("New(%+v) accepted", c)
		}
	}
	if _, err := New(Config{Server: redisconn.Config{URL: "redis://127.0.0.1:1/0"}}); err != nil {
		t.Fatal(err)
	}
}
