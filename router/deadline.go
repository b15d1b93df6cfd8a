package router

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// deadlines hands out contexts that end Config.Deadline after a request's
// start, shared by the requests starting within one granule: a request
// gets a deadline between Deadline and Deadline + granule from now, and
// no timer or context of its own (context.WithTimeout per request costs a
// timer and four allocations on the hot path). The granule is a sixteenth
// of the deadline, at most a second.
type deadlines struct {
	parent  context.Context
	d       time.Duration
	granule time.Duration
	cur     atomic.Pointer[sharedDeadline]
	mu      sync.Mutex // serialises the creation of a new shared context
}

type sharedDeadline struct {
	ctx      context.Context
	deadline time.Time
	// cancel is never called early: requests still use the context. It
	// is kept so that the context's resources are owned somewhere; the
	// context ends by itself at its deadline (or with the parent).
	cancel context.CancelFunc

	// The pipelines' contexts hanging on this one (pipeCtx.initShared),
	// ended by endAll when it ends: an intrusive list, so that a
	// request's registration allocates nothing (a context.AfterFunc per
	// pipeline costs three allocations).
	mu    sync.Mutex
	head  *pipeCtx
	ended bool
}

// add registers c, to be ended with the shared context; false when that
// has already ended (c is not registered).
func (s *sharedDeadline) add(c *pipeCtx) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false
	}
	c.next, c.prev, c.listed = s.head, nil, true
	if s.head != nil {
		s.head.prev = c
	}
	s.head = c
	return true
}

// remove unregisters c (nothing when endAll has ended it already; when
// endAll is running, remove waits for it).
func (s *sharedDeadline) remove(c *pipeCtx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !c.listed {
		return
	}
	c.listed = false
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		s.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.next, c.prev = nil, nil
}

// endAll ends every registered context with the shared one's error. It
// holds mu throughout, so that a remove that returns has seen the end of
// its context finished (its pipeline may be recycled then: Router.pipelines).
// (end takes only the context's own lock, and nothing it runs takes mu.)
func (s *sharedDeadline) endAll() {
	err := s.ctx.Err()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended = true
	for c := s.head; c != nil; {
		next := c.next
		c.next, c.prev, c.listed = nil, nil, false
		c.end(err)
		c = next
	}
	s.head = nil
}

func newDeadlines(parent context.Context, d time.Duration) *deadlines {
	return &deadlines{parent: parent, d: d, granule: min(d/16, time.Second)}
}

// get returns a context that ends between d and d + granule after now
// (the real clock: timers are real), or when the parent does.
func (s *deadlines) get(now time.Time) context.Context { return s.shared(now).ctx }

// shared returns the shared deadline get's context belongs to.
func (s *deadlines) shared(now time.Time) *sharedDeadline {
	want := now.Add(s.d)
	if c := s.cur.Load(); c != nil && !c.deadline.Before(want) && c.deadline.Sub(want) <= s.granule {
		return c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.cur.Load(); c != nil && !c.deadline.Before(want) && c.deadline.Sub(want) <= s.granule {
		return c
	}
	dl := want.Add(s.granule)
	ctx, cancel := context.WithDeadline(s.parent, dl)
	sd := &sharedDeadline{ctx: ctx, deadline: dl, cancel: cancel}
	context.AfterFunc(ctx, sd.endAll)
	s.cur.Store(sd)
	return sd
}

// Server connections keep their own deadlines (srvConn): fasthttp's
// server, given ReadTimeout, IdleTimeout and WriteTimeout, re-arms the
// connection's deadline three times per request (idle wait, request head,
// response), each a clock read plus a runtime timer update, which on a
// two-core VM was a measurable share of a small request. Serve runs the
// server without those timeouts and wraps every accepted connection in a
// srvConn that enforces the same three bounds from its own reads and
// writes, arming the descriptor's deadline lazily.

// srvTimeouts are the bounds a srvConn enforces: read bounds a request
// (from its first byte, or from the accept for a connection's first
// request), idle the wait for the first byte of a keep-alive connection's
// next request, write the writing of one response.
type srvTimeouts struct {
	read, idle, write                time.Duration
	readSlack, idleSlack, writeSlack time.Duration
}

func newSrvTimeouts(read, idle, write time.Duration) *srvTimeouts {
	return &srvTimeouts{read: read, idle: idle, write: write,
		readSlack: deadlineSlack(read), idleSlack: deadlineSlack(idle), writeSlack: deadlineSlack(write)}
}

// srvListener wraps the accepted connections in srvConns.
type srvListener struct {
	net.Listener
	t *srvTimeouts
}

// Accept waits for the next connection and wraps it in a srvConn.
func (l *srvListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &srvConn{Conn: c, t: l.t}, nil
}

// Phases of a server connection, told apart by the order of its reads
// and writes: HTTP/1 answers a request after reading it, and reads the
// next one after writing the answer.
const (
	phaseNew   uint8 = iota // accepted, nothing read yet
	phaseIdle               // the previous answer written; waiting for the next request
	phaseRead               // reading a request (its first bytes have arrived)
	phaseWrite              // writing the answer
)

// srvConn is a server connection that bounds its reads and writes as
// fasthttp's ReadTimeout, IdleTimeout and WriteTimeout would, with at most
// two clock reads per request and almost no deadline updates:
//
//   - a connection's first request must arrive within read of its first
//     read; a keep-alive connection's next request must start within idle
//     of the previous answer's end, and must then arrive within read of
//     the first read that saw it (fasthttp: from the peek of its first
//     byte);
//   - an answer must be written within write of its first write.
//
// The deadline armed on the descriptor is only moved when it is later
// than the bound plus a slack (a sixteenth of the timeout, at most a
// second); when it is earlier, it stays, and a read or write it cuts short
// before the bound is retried with the deadline moved to the bound. So a
// timeout fires no earlier than the bound and at most the slack later, and
// a busy connection arms its timer about once per timeout.
//
// A connection has one user at a time (the server goroutine serving it);
// the hang-up peek (connClosed) only uses SyscallConn. An explicit
// Set*Deadline call (a hijacker) hands the deadlines back to the caller
// for good.
type srvConn struct {
	net.Conn
	t      *srvTimeouts
	phase  uint8
	manual bool
	// rwant, wwant: the bound of the current read or write phase (zero in
	// phaseRead: not computed yet, see Read). rset, wset: the deadlines
	// armed on Conn.
	rwant, wwant time.Time
	rset, wset   time.Time
}

// Unwrap returns the wrapped connection (headsize.LineTooLong looks
// through it).
func (c *srvConn) Unwrap() net.Conn { return c.Conn }

// SyscallConn exposes the descriptor (connClosed peeks at it).
func (c *srvConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

// SetDeadline sets both deadlines of the wrapped connection and hands
// them to the caller for good: srvConn no longer arms its own.
func (c *srvConn) SetDeadline(t time.Time) error {
	c.manual = true
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline sets the wrapped connection's read deadline and, as
// SetDeadline, hands the deadlines to the caller for good.
func (c *srvConn) SetReadDeadline(t time.Time) error {
	c.manual = true
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the wrapped connection's write deadline and, as
// SetDeadline, hands the deadlines to the caller for good.
func (c *srvConn) SetWriteDeadline(t time.Time) error {
	c.manual = true
	return c.Conn.SetWriteDeadline(t)
}

// armed reports whether set, the deadline armed, honours want within
// slack: not later than want + slack (earlier is fine: a read or write cut
// short before want is retried).
func armed(set, want time.Time, slack time.Duration) bool {
	return !set.IsZero() && !set.After(want.Add(slack))
}

// cutShort reports whether err is a timeout of the armed deadline that
// came before the bound want (now: the clock).
func cutShort(err error, want time.Time) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(want)
}

// Read reads from the wrapped connection within the bound of the
// current phase (a request's read bound or a keep-alive idle wait),
// retrying a read that an earlier deadline cut short before that bound.
func (c *srvConn) Read(p []byte) (int, error) {
	if c.manual {
		return c.Conn.Read(p)
	}
	switch {
	case c.phase == phaseWrite:
		c.phase = phaseIdle
		c.rwant = time.Now().Add(c.t.idle)
	case c.phase == phaseNew, c.phase == phaseRead && c.rwant.IsZero():
		// A request's bytes: bounded from the first read that saw them
		// (this one for a new connection; for a keep-alive one, the read
		// that ended the idle wait returned just before this one was
		// called, the request being incomplete).
		c.phase = phaseRead
		c.rwant = time.Now().Add(c.t.read)
	}
	slack := c.t.readSlack
	if c.phase == phaseIdle {
		slack = c.t.idleSlack
	}
	for {
		if !armed(c.rset, c.rwant, slack) {
			c.rset = c.rwant.Add(slack / 2)
			if err := c.Conn.SetReadDeadline(c.rset); err != nil {
				return 0, err
			}
		}
		n, err := c.Conn.Read(p)
		if n == 0 && err != nil && cutShort(err, c.rwant) {
			c.rset = time.Time{} // re-armed at the bound
			continue
		}
		if n > 0 && c.phase == phaseIdle {
			c.phase = phaseRead
			c.rwant = time.Time{}
		}
		return n, err
	}
}

// startWrite enters the write phase and arms its deadline when needed.
func (c *srvConn) startWrite() error {
	if c.phase != phaseWrite {
		c.phase = phaseWrite
		c.wwant = time.Now().Add(c.t.write)
	}
	if armed(c.wset, c.wwant, c.t.writeSlack) {
		return nil
	}
	c.wset = c.wwant.Add(c.t.writeSlack / 2)
	return c.Conn.SetWriteDeadline(c.wset)
}

// Write writes to the wrapped connection within the write bound of the
// answer it belongs to, resuming a write that an earlier deadline cut
// short before that bound.
func (c *srvConn) Write(p []byte) (int, error) {
	if c.manual {
		return c.Conn.Write(p)
	}
	done := 0
	for {
		if err := c.startWrite(); err != nil {
			return done, err
		}
		n, err := c.Conn.Write(p[done:])
		done += n
		if err != nil && cutShort(err, c.wwant) {
			c.wset = time.Time{}
			continue
		}
		return done, err
	}
}

// ReadFrom keeps the wrapped connection's fast path (sendfile, splice)
// under the write bound. A copy cut short cannot be resumed (bytes read
// from r may be lost with the failed write), so here the deadline armed is
// never earlier than the bound.
func (c *srvConn) ReadFrom(r io.Reader) (int64, error) {
	if c.manual {
		return io.Copy(c.Conn, r)
	}
	if c.phase != phaseWrite {
		c.phase = phaseWrite
		c.wwant = time.Now().Add(c.t.write)
	}
	if c.wset.Before(c.wwant) || !armed(c.wset, c.wwant, c.t.writeSlack) {
		c.wset = c.wwant.Add(c.t.writeSlack / 2)
		if err := c.Conn.SetWriteDeadline(c.wset); err != nil {
			return 0, err
		}
	}
	return io.Copy(c.Conn, r)
}

// CloseWrite half-closes the wrapped connection when it can.
func (c *srvConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
