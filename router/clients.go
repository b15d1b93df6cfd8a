package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/rawio"
	"github.com/doraproject/dora/internal/tick"
)

// clientKey names one instance client: an instance address with the step
// timeouts of its release.
type clientKey struct {
	addr string
	t    dora.StepTimeouts
}

// clients keeps one keep-alive instance client per instance address and
// timeouts, created on first use and swept when idle.
type clients struct {
	mu sync.RWMutex
	m  map[clientKey]*instClient
}

func newClients() *clients { return &clients{m: map[clientKey]*instClient{}} }

// get returns the client of addr with timeouts t (already defaulted).
func (c *clients) get(addr string, t dora.StepTimeouts) *instClient {
	k := clientKey{addr, t}
	c.mu.RLock()
	ic := c.m[k]
	c.mu.RUnlock()
	if ic != nil {
		return ic
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ic = c.m[k]; ic == nil {
		ic = &instClient{hc: newHostClient(addr, t), t: t}
		c.m[k] = ic
	}
	return ic
}

// instClient calls one instance. fasthttp's HostClient keeps the
// keep-alive connections and the buffer pools; the round trip itself is
// the router's (roundTrip), because HostClient.Do cannot be cancelled: it
// waits for the response headers until its timeout whatever happens to the
// request that needs them.
type instClient struct {
	hc      *fasthttp.HostClient
	t       dora.StepTimeouts
	pending atomic.Int64 // calls holding a connection (the sweep keeps busy clients)
	lastUse atomic.Int64 // unix seconds of the last call
}

// newHostClient configures the connection pool of one instance:
//   - Dial honours the connect timeout, marks dial errors (for the pool's
//     ejection) and wraps the conn so that reads after the first byte of a
//     response get the idle timeout;
//   - no retries inside fasthttp: the router decides (a step is retried on
//     another instance only while its input is untouched).
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
			return &idleConn{Conn: rawio.Wrap(conn), idle: t.Idle,
				rslack: deadlineSlack(min(t.FirstByte, t.Idle)), wslack: deadlineSlack(t.Idle)}, nil
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

// Errors of a round trip, besides the dial's (dialError) and the context's.
var (
	// errStepTimeout: no response headers within the first-byte timeout
	// (or the request could not be written within the idle timeout).
	errStepTimeout = errors.New("step timed out")
	// errNoConn: the instance's connection limit is reached.
	errNoConn = errors.New("no free connection to the instance")
)

// stepConn is a call's hold on one keep-alive connection, from writing the
// request until its response body is done with. While it is held, the
// call's watcher (its pipeline) watches it: when the pipeline's context
// ends (the client left, the deadline passed, the router shuts down,
// Process was cancelled) the connection is closed, which aborts any read
// or write in progress and tells the instance its request is cancelled.
type stepConn struct {
	ic      *instClient
	conn    net.Conn
	br      *bufio.Reader
	cc      any // fasthttp's *clientConn (unexported: see putConn)
	w       connWatcher
	watched bool
	done    bool
}

// connWatcher closes the connections it watches once its context ends
// (pipeline.watchConn: one context registration per pipeline rather than
// one per call).
type connWatcher interface {
	// watchConn watches s until unwatchConn; false when the context has
	// already ended (s is then not watched).
	watchConn(s *stepConn) bool
	// unwatchConn stops watching s; false when the watch has closed it.
	unwatchConn(s *stepConn) bool
}

// finish releases the connection: back to the pool when reuse is asked and
// the watch did not close it, else closed. Calls after the first do
// nothing.
func (s *stepConn) finish(reuse bool) {
	if s.done {
		return
	}
	s.done = true
	if s.br != nil {
		s.ic.hc.ReleaseReader(s.br)
		s.br = nil
	}
	if s.watched && !s.w.unwatchConn(s) {
		reuse = false // the watch fired: the connection is (being) closed
	}
	putConn(s.ic.hc, s.cc, reuse)
	s.ic.pending.Add(-1)
}

// putConn returns cc (HostClient.AcquireConn's) to hc's pool, or closes
// it. fasthttp's connection type is unexported, so stepConn keeps it as
// any and the method expressions' types name it here: no closure per call.
func putConn(hc *fasthttp.HostClient, cc any, reuse bool) {
	if reuse {
		hcRelease(hc, connOf(hcRelease, cc))
	} else {
		hcClose(hc, connOf(hcClose, cc))
	}
}

var (
	hcRelease = (*fasthttp.HostClient).ReleaseConn
	hcClose   = (*fasthttp.HostClient).CloseConn
)

// connOf asserts v to the connection type f takes.
func connOf[C any](_ func(*fasthttp.HostClient, C), v any) C { return v.(C) }

// roundTrip writes req to a pooled connection and reads the response
// headers into resp (StreamBody: a body of known length up to
// DefaultBufferedBodyMax is read at once, a larger or chunked one streams
// from the connection). It returns the connection, which the caller must
// finish once it is done with the body (a body read at once has already
// released it). Every wait ends when ctx does, with ctx's error: w (the
// pipeline whose context ctx is) closes the connection then. sc is the
// caller's room for the connection's state (no allocation of its own);
// it is returned on success. now is the real clock's time at the call.
func (c *instClient) roundTrip(ctx context.Context, w connWatcher, sc *stepConn, req *fasthttp.Request, resp *fasthttp.Response, now time.Time) (*stepConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	deadline, hasDeadline := ctx.Deadline()
	timeout := time.Duration(0)
	if hasDeadline {
		if timeout = deadline.Sub(now); timeout <= 0 {
			return nil, context.DeadlineExceeded
		}
	}
	c.pending.Add(1)
	c.lastUse.Store(now.Unix())
	cc, err := c.hc.AcquireConn(timeout, false)
	if err != nil {
		c.pending.Add(-1)
		if errors.Is(err, fasthttp.ErrNoFreeConns) {
			return nil, errNoConn
		}
		return nil, err
	}
	hc := c.hc
	conn := cc.Conn()
	*sc = stepConn{ic: c, conn: conn, cc: cc, w: w}
	if !w.watchConn(sc) {
		sc.finish(false)
		return nil, ctx.Err()
	}
	sc.watched = true

	fail := func(err error) (*stepConn, error) {
		sc.finish(false)
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		var te interface{ Timeout() bool }
		if errors.As(err, &te) && te.Timeout() {
			return nil, errStepTimeout
		}
		return nil, err
	}
	// Read again: AcquireConn may have waited for a free connection.
	now = time.Now()
	wd := now.Add(c.t.Idle)
	if hasDeadline && deadline.Before(wd) {
		wd = deadline
	}
	if err := conn.SetWriteDeadline(wd); err != nil {
		return fail(err)
	}
	bw := hc.AcquireWriter(conn)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if err != nil {
		return fail(err)
	}
	rd := time.Now().Add(c.t.FirstByte)
	if hasDeadline && deadline.Before(rd) {
		rd = deadline
	}
	if err := conn.SetReadDeadline(rd); err != nil {
		return fail(err)
	}
	sc.br = hc.AcquireReader(conn)
	resp.StreamBody = true
	for interim := 0; ; interim++ {
		if err := resp.ReadLimitBody(sc.br, DefaultBufferedBodyMax); err != nil {
			return fail(err)
		}
		// An informational answer (102 Processing, 103 Early Hints;
		// fasthttp skips only 100) comes before the final one, which
		// follows on the connection: read on (RFC 9110 15.2), a bounded
		// number of times. 101 is final (never asked for: an error).
		if st := resp.StatusCode(); st >= 200 || st < 100 || st == fasthttp.StatusSwitchingProtocols {
			break
		}
		if interim == maxInterim {
			return fail(errTooManyInterim)
		}
	}
	switch resp.BodyStream().(type) {
	case nil, *bytes.Reader:
		// The whole body is in memory: the connection is free at once.
		sc.finish(!resp.ConnectionClose())
	}
	return sc, nil
}

// maxInterim bounds the informational (1xx) answers an instance may send
// before its final one.
const maxInterim = 8

var errTooManyInterim = errors.New("more than 8 informational (1xx) answers before the final one")

// sweep drops clients unused for two minutes (instances come and go).
func (c *clients) sweep(ctx context.Context, now func() time.Time) {
	tick.Every(ctx, time.Minute, func() {
		cutoff := now().Add(-2 * time.Minute)
		c.mu.Lock()
		for k, ic := range c.m {
			if ic.pending.Load() == 0 && ic.lastUse.Load() < cutoff.Unix() {
				delete(c.m, k)
				ic.hc.CloseIdleConnections()
			}
		}
		c.mu.Unlock()
	})
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
//
// Deadlines are coarse: one asked for is kept when the deadline already
// set is not earlier and at most a sixteenth of the timeout (≤ 1 s) later,
// so that a connection busy with steps, or streaming, updates the
// runtime's timer about once per slack instead of at every call or read.
// A timeout fires no earlier than asked, and at most the slack later.
type idleConn struct {
	net.Conn
	idle      time.Duration
	streaming atomic.Bool
	// eof is set once a read hit the peer's close: a chunked body that
	// "ends" then was cut, not terminated (see stepBody.Read).
	eof atomic.Bool
	// The deadlines set on Conn and the slack each may have. The
	// connection has one user at a time (the call holding it), whose
	// hand-over goes through the pool's lock.
	rd, wd         time.Time
	rslack, wslack time.Duration
}

// deadlineSlack is how much later than asked a deadline of a timeout d
// may be (idleConn).
func deadlineSlack(d time.Duration) time.Duration { return min(d/16, time.Second) }

// coarseDeadline reports whether cur, the deadline set, must be replaced
// to honour want, and updates it (want + slack) when so. A zero want
// clears the deadline.
func coarseDeadline(cur *time.Time, want time.Time, slack time.Duration) bool {
	if want.IsZero() {
		if cur.IsZero() {
			return false
		}
		*cur = time.Time{}
		return true
	}
	if !cur.IsZero() && !cur.Before(want) && cur.Sub(want) <= slack {
		return false
	}
	*cur = want.Add(slack)
	return true
}

func (c *idleConn) setRead(t time.Time) error {
	if !coarseDeadline(&c.rd, t, c.rslack) {
		return nil
	}
	return c.Conn.SetReadDeadline(c.rd)
}

// peerClosed reports whether a read on c (an instance connection) has
// seen the instance close it.
func peerClosed(c net.Conn) bool {
	ic, ok := c.(*idleConn)
	return ok && ic.eof.Load()
}

func (c *idleConn) SetReadDeadline(t time.Time) error {
	c.streaming.Store(false)
	return c.setRead(t)
}

func (c *idleConn) SetWriteDeadline(t time.Time) error {
	if !coarseDeadline(&c.wd, t, c.wslack) {
		return nil
	}
	return c.Conn.SetWriteDeadline(c.wd)
}

func (c *idleConn) SetDeadline(t time.Time) error {
	c.streaming.Store(false)
	c.rd, c.wd = t, t
	return c.Conn.SetDeadline(t)
}

func (c *idleConn) Read(p []byte) (int, error) {
	if c.streaming.Load() {
		if err := c.setRead(time.Now().Add(c.idle)); err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Read(p)
	if err == io.EOF {
		c.eof.Store(true)
	}
	if n > 0 && !c.streaming.Load() {
		c.streaming.Store(true)
	}
	return n, err
}
