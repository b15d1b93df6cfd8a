package router

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doraproject/dora/pool"
)

// TestServeShutdownWithListenerClosed is `dorad dev`'s Ctrl-C: the context
// ends and the listener is closed right after, before Serve's select may
// have seen the context. Serve must report a clean shutdown, never "use of
// closed network connection" (which made dorad exit 1 now and then).
func TestServeShutdownWithListenerClosed(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 30; i++ {
		r, err := New(Config{Store: e.st, Objects: e.objs, Writer: e.objs, Pool: pool.New(pool.Options{}), Load: &recLoad{},
			Region: "z0", DomainSuffix: "localhost", Metrics: prometheus.NewRegistry(), Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- r.Serve(ctx, ln) }()
		// Wait until it accepts, so the listener is really being served.
		for {
			c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
			if err == nil {
				c.Close()
				break
			}
		}
		cancel()
		ln.Close()
		if err := <-errc; err != nil {
			t.Fatalf("round %d: Serve after cancel + listener close: %v", i, err)
		}
	}
}
