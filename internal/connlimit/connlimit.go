// Package connlimit keeps a server's listeners alive and inside the
// process's file-descriptor budget.
//
// A Limiter is shared by every listener of a process. Its listeners:
//
//   - retry temporary accept errors (EMFILE, ENFILE, ENOBUFS, ENOMEM,
//     ECONNABORTED, timeouts) with a backoff from 5 ms to 1 s instead of
//     returning them, as net/http does; fasthttp treats such an error as
//     fatal and stops serving;
//   - shed load before the limit: from Shed open connections on, a new
//     connection gets a canned 503 (JSON error, Retry-After) and is closed;
//   - never hold more than Max connections: at Max, Accept waits for one to
//     close (the kernel's backlog holds the rest);
//   - close gracefully: a connection's Close half-closes it and drains what
//     the client still sends (bounded in bytes and time) before releasing
//     the descriptor, so a response written before the request was read
//     whole (414/431/413) is not destroyed by a TCP reset.
//
// Max and Shed default to fractions of RLIMIT_NOFILE, leaving room for the
// process's other descriptors (stores, logs, instance connections, files).
package connlimit

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config sets a Limiter's bounds. Zero values are derived from the
// process's RLIMIT_NOFILE (soft limit) by Derive.
type Config struct {
	// Max is the most connections open at once over every listener of
	// the Limiter.
	Max int
	// Shed is the count from which new connections get a 503 and are
	// closed; it must be below Max.
	Shed int
	// Logger gets the backoff and shedding warnings (rate-limited).
	Logger *slog.Logger
}

// Derive fills Max and Shed from the open-file limit nofile: Max is 5/8 of
// it and Shed half of it, so at least 3/8 of the descriptors stay for the
// rest of the process.
func Derive(nofile uint64) (maxConns, shed int) {
	if nofile < 16 {
		nofile = 16
	}
	if nofile > 1<<24 {
		nofile = 1 << 24
	}
	return int(nofile * 5 / 8), int(nofile / 2)
}

// NoFile returns the process's soft RLIMIT_NOFILE (1024 when unknown).
func NoFile() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 1024
	}
	return rl.Cur
}

// Limiter is the connection budget shared by a process's listeners.
type Limiter struct {
	max, shed int
	log       *slog.Logger
	open      atomic.Int64
	shedCount atomic.Int64
	slots     chan struct{}
	lastWarn  atomic.Int64
}

// New returns a Limiter; zero bounds are derived from RLIMIT_NOFILE.
func New(cfg Config) *Limiter {
	maxConns, shed := Derive(NoFile())
	if cfg.Max > 0 {
		maxConns = cfg.Max
	}
	if cfg.Shed > 0 {
		shed = cfg.Shed
	}
	if shed >= maxConns {
		shed = maxConns - 1
	}
	if shed < 1 {
		shed = 1
	}
	if maxConns < 2 {
		maxConns = 2
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Limiter{max: maxConns, shed: shed, log: log, slots: make(chan struct{}, maxConns)}
}

// Max is the connection cap; Shed the count from which connections are
// shed with a 503.
func (l *Limiter) Max() int { return l.max }

// Shed is the count from which new connections are answered 503.
func (l *Limiter) Shed() int { return l.shed }

// Open is the number of accepted connections not yet fully closed.
func (l *Limiter) Open() int { return int(l.open.Load()) }

// Shedded is the number of connections answered 503 so far.
func (l *Limiter) Shedded() int64 { return l.shedCount.Load() }

// Listen wraps ln so that it obeys the Limiter.
func (l *Limiter) Listen(ln net.Listener) net.Listener {
	return &listener{Listener: ln, lim: l, done: make(chan struct{})}
}

func (l *Limiter) acquire(done <-chan struct{}) bool {
	select {
	case l.slots <- struct{}{}:
		return true
	case <-done:
		return false
	}
}

// release frees the slot of a connection that was counted open.
func (l *Limiter) release() {
	l.open.Add(-1)
	<-l.slots
}

// unacquire frees a slot taken for an Accept that failed.
func (l *Limiter) unacquire() { <-l.slots }

// warn logs at most once a second.
func (l *Limiter) warn(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := l.lastWarn.Load()
	if now-last < int64(time.Second) || !l.lastWarn.CompareAndSwap(last, now) {
		return
	}
	l.log.Warn(msg, args...)
}

type listener struct {
	net.Listener
	lim       *Limiter
	done      chan struct{}
	closeOnce sync.Once
}

// Backoff bounds of the accept retry.
const (
	minBackoff = 5 * time.Millisecond
	maxBackoff = time.Second
)

// Accept returns the next connection under the cap, retrying temporary
// errors and answering 503 to connections over the shedding threshold.
func (ln *listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		if !ln.lim.acquire(ln.done) {
			return nil, net.ErrClosed
		}
		c, err := ln.Listener.Accept()
		if err != nil {
			ln.lim.unacquire()
			if !Temporary(err) {
				return nil, err
			}
			delay = max(minBackoff, min(2*delay, maxBackoff))
			ln.lim.warn("accept failed; backing off", "err", err, "delay", delay, "open", ln.lim.Open())
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ln.done:
				t.Stop()
				return nil, net.ErrClosed
			}
			continue
		}
		delay = 0
		if ln.lim.open.Add(1) > int64(ln.lim.shed) {
			ln.lim.shedCount.Add(1)
			ln.lim.warn("over the connection threshold; answering 503", "open", ln.lim.Open(), "shed_from", ln.lim.shed, "max", ln.lim.max)
			go shed(c, ln.lim)
			continue
		}
		return &conn{Conn: c, lim: ln.lim}, nil
	}
}

// Close stops Accept (also one waiting for a slot) and closes the listener.
func (ln *listener) Close() error {
	ln.closeOnce.Do(func() { close(ln.done) })
	return ln.Listener.Close()
}

// Temporary reports whether an accept error is worth retrying: descriptor
// or buffer exhaustion, an aborted handshake, a timeout.
func Temporary(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// busyBody is the JSON error of a shed connection.
const busyBody = `{"error":"server busy: too many connections"}` + "\n"

// busyResponse is the canned answer to a shed connection.
var busyResponse = "HTTP/1.1 503 Service Unavailable\r\n" +
	"Content-Type: application/json\r\n" +
	"Retry-After: 1\r\n" +
	"Connection: close\r\n" +
	"Content-Length: " + strconv.Itoa(len(busyBody)) + "\r\n" +
	"\r\n" + busyBody

// Drain bounds of a closing connection.
const (
	drainBytes = 256 << 10
	drainTime  = time.Second
)

// shed answers 503 on c and closes it gracefully, holding c's slot until
// it is closed.
func shed(c net.Conn, l *Limiter) {
	defer l.release()
	_ = c.SetDeadline(time.Now().Add(drainTime))
	_, _ = io.WriteString(c, busyResponse)
	lingerClose(c)
}

// lingerClose half-closes c, reads and discards what the peer still sends
// (bounded), then closes it: closing a socket with unread input sends a
// reset that can destroy the response before the peer reads it.
func lingerClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			_ = c.SetReadDeadline(time.Now().Add(drainTime))
			_, _ = io.Copy(io.Discard, io.LimitReader(c, drainBytes))
		}
	}
	_ = c.Close()
}

type conn struct {
	net.Conn
	lim    *Limiter
	once   sync.Once
	closed atomic.Bool
}

// Close returns at once; the connection is drained and closed in the
// background and its slot released then. A Read blocked in another
// goroutine ends at the drain's deadline, which can no longer be moved
// through the conn (see SetDeadline).
func (c *conn) Close() error {
	c.once.Do(func() {
		c.closed.Store(true)
		go func() {
			defer c.lim.release()
			lingerClose(c.Conn)
		}()
	})
	return nil
}

// SetDeadline, SetReadDeadline and SetWriteDeadline fail with
// net.ErrClosed once Close was called, as on a closed connection: a
// wrapper above that retries a read the drain's deadline cut short (the
// router's srvConn re-arms its own, later one) must not keep the
// connection, its goroutine and its slot past the drain.
func (c *conn) SetDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.closedError()
	}
	return c.Conn.SetDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.closedError()
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.closedError()
	}
	return c.Conn.SetWriteDeadline(t)
}

// closedError is what a closed *net.TCPConn's Set*Deadline returns.
func (c *conn) closedError() error {
	return &net.OpError{Op: "set", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: net.ErrClosed}
}

// ReadFrom keeps the underlying connection's fast path (sendfile, splice)
// for servers that copy bodies with io.Copy.
func (c *conn) ReadFrom(r io.Reader) (int64, error) { return io.Copy(c.Conn, r) }

// CloseWrite half-closes the underlying connection when it can: a server
// that has answered and still reads what the client sends needs it through
// the wrapper.
func (c *conn) CloseWrite() error {
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok {
		return errors.ErrUnsupported
	}
	return cw.CloseWrite()
}

// SyscallConn exposes the underlying descriptor (a server peeking whether
// the client hung up needs it).
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

// Unwrap returns the underlying connection.
func (c *conn) Unwrap() net.Conn { return c.Conn }

// WaitIdle waits until no connection holds a slot or ctx ends (tests).
func (l *Limiter) WaitIdle(ctx context.Context) error {
	for l.Open() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
