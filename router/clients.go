package router

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
)

// clientKey names one HostClient: an instance address with the step
// timeouts of its release.
type clientKey struct {
	addr string
	t    dora.StepTimeouts
}

// clients keeps one keep-alive fasthttp.HostClient per instance address
// and timeouts, created on first use and swept when idle.
type clients struct {
	mu sync.RWMutex
	m  map[clientKey]*fasthttp.HostClient
}

func newClients() *clients { return &clients{m: map[clientKey]*fasthttp.HostClient{}} }

// get returns the client of addr with timeouts t (already defaulted).
func (c *clients) get(addr string, t dora.StepTimeouts) *fasthttp.HostClient {
	k := clientKey{addr, t}
	c.mu.RLock()
	hc := c.m[k]
	c.mu.RUnlock()
	if hc != nil {
		return hc
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if hc = c.m[k]; hc == nil {
		hc = newHostClient(addr, t)
		c.m[k] = hc
	}
	return hc
}

// newHostClient configures a client for one instance:
//   - Dial honours the connect timeout and marks dial errors (for the
//     pool's ejection) and wraps the conn so that reads after the first
//     byte of a response get the idle timeout;
//   - ReadTimeout is the first-byte timeout (the time to the response
//     headers);
//   - StreamResponseBody with MaxResponseBodySize as the buffering limit:
//     bodies of known length up to it are read at once, larger or chunked
//     ones stream;
//   - no retries inside fasthttp: the router decides (a step is retried
//     on another instance only while its input is untouched).
func newHostClient(addr string, t dora.StepTimeouts) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr: addr,
		Name: "dora-router",
		Dial: func(a string) (net.Conn, error) {
			d := net.Dialer{Timeout: t.Connect}
			conn, err := d.Dial("tcp", a)
			if err != nil {
				return nil, &dialError{err: err}
			}
			return &idleConn{Conn: conn, idle: t.Idle}, nil
		},
		ReadTimeout:               t.FirstByte,
		WriteTimeout:              t.Idle,
		MaxIdleConnDuration:       30 * time.Second,
		MaxConns:                  4096,
		MaxResponseBodySize:       DefaultBufferedBodyMax,
		StreamResponseBody:        true,
		ReadBufferSize:            16 << 10,
		WriteBufferSize:           16 << 10,
		MaxIdemponentCallAttempts: 1,
		RetryIfErr:                func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		DisablePathNormalizing:    true,
	}
}

// sweep drops clients unused for two minutes (instances come and go).
func (c *clients) sweep(ctx context.Context, now func() time.Time) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cutoff := now().Add(-2 * time.Minute)
		c.mu.Lock()
		for k, hc := range c.m {
			if hc.PendingRequests() == 0 && hc.LastUseTime().Before(cutoff) {
				delete(c.m, k)
				hc.CloseIdleConnections()
			}
		}
		c.mu.Unlock()
	}
}

// dialError marks a failure to connect to an instance.
type dialError struct{ err error }

func (e *dialError) Error() string { return "connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// isDialError reports whether a client error is a failed connect.
func isDialError(err error) bool {
	var de *dialError
	if errors.As(err, &de) {
		return true
	}
	return errors.Is(err, fasthttp.ErrDialTimeout)
}

// idleConn turns a per-request read deadline into first-byte + idle
// timeouts: fasthttp sets one read deadline before reading a response
// (now + the first-byte timeout) and never again, even while a streamed
// body is read for minutes. After the first byte has arrived, every read
// pushes the deadline to now + idle instead.
type idleConn struct {
	net.Conn
	idle      time.Duration
	streaming atomic.Bool
}

func (c *idleConn) SetReadDeadline(t time.Time) error {
	c.streaming.Store(false)
	return c.Conn.SetReadDeadline(t)
}

func (c *idleConn) SetDeadline(t time.Time) error {
	c.streaming.Store(false)
	return c.Conn.SetDeadline(t)
}

func (c *idleConn) Read(p []byte) (int, error) {
	if c.streaming.Load() {
		if err := c.Conn.SetReadDeadline(time.Now().Add(c.idle)); err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Read(p)
	if n > 0 && !c.streaming.Load() {
		c.streaming.Store(true)
	}
	return n, err
}
