// Package rawio gives a TCP connection reads and writes that keep their
// goroutine's P: recv(2) and send(2) with MSG_DONTWAIT on the socket are
// issued as raw system calls inside the descriptor's RawConn, so the
// netpoller still parks the goroutine when the socket is not ready and
// deadlines still apply, but the runtime never marks the P as "in a
// system call".
//
// Why: a busy proxy spends most of its time in short socket system
// calls. Each ordinary call enters and leaves the runtime's syscall state;
// when one of them lasts longer than the system monitor's 20 µs tick
// (which on a shared, loaded machine happens often: the kernel preempts
// the thread inside the call), sysmon hands the P to another thread and
// keeps polling every 20 µs. Profiles of the router showed that monitor
// alone at ~10 % of its CPU, plus the thread hand-offs it starts. A
// non-blocking socket call cannot block, so there is nothing to hand off;
// nginx issues the same calls from its one thread.
//
// Only Linux (but 386, whose socket calls go through socketcall) gets raw
// calls; elsewhere Wrap returns the connection as it is.
package rawio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Conn is a *net.TCPConn whose Read and Write are raw system calls that
// never wait in the kernel. Everything else (deadlines, Close, addresses, the
// sendfile/splice fast paths of ReadFrom and WriteTo) is the TCPConn's.
type Conn struct {
	*net.TCPConn
	raw syscall.RawConn

	// Each direction keeps its call's state here and hands the RawConn a
	// method value made once, not a closure per call; rmu and wmu make
	// concurrent readers (or writers) take turns, as the descriptor's own
	// locks would.
	rmu    sync.Mutex
	rbuf   []byte
	rn     int
	rerr   syscall.Errno
	readFn func(fd uintptr) bool

	wmu     sync.Mutex
	wbuf    []byte
	wn      int
	werr    syscall.Errno
	wshort  bool // send(2) wrote nothing and reported no error
	writeFn func(fd uintptr) bool
}

// What the connection wrappers above a Conn look for on the connection
// under them stays reachable, as it was on the bare *net.TCPConn: the
// half-closes (connlimit's lingering close), the descriptor (the
// router's hang-up peek) and the copy fast paths.
var _ interface {
	net.Conn
	CloseWrite() error
	CloseRead() error
	syscall.Conn
	io.ReaderFrom
	io.WriterTo
} = (*Conn)(nil)

// Wrap returns c with raw reads and writes when it is a TCP connection on
// a platform that supports them, and c unchanged otherwise.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok || !supported {
		return c
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	rc := &Conn{TCPConn: tc, raw: raw}
	rc.readFn = rc.doRead
	rc.writeFn = rc.doWrite
	return rc
}

// maxRW bounds one read like the standard library's (1 GiB).
const maxRW = 1 << 30

// Read reads from the socket like net.Conn's Read.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		// As TCPConn: no call and no wait (a deadline that passed does
		// not count), but a closed connection says so.
		if err := c.raw.Control(noop); err != nil {
			return 0, c.opError("read", unwrapOp(err))
		}
		return 0, nil
	}
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	c.rmu.Lock()
	c.rbuf, c.rn, c.rerr = p, 0, 0
	err := c.raw.Read(c.readFn)
	n, errno := c.rn, c.rerr
	c.rbuf = nil
	c.rmu.Unlock()
	switch {
	case err != nil:
		return 0, c.opError("read", unwrapOp(err))
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	}
	raceAfterRead(p[:n])
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p to the socket like net.Conn's Write.
func (c *Conn) Write(p []byte) (int, error) {
	// An empty p goes through RawConn.Write too (doWrite then writes
	// nothing): as TCPConn, it fails on a closed connection or a write
	// deadline that passed.
	raceBeforeWrite()
	c.wmu.Lock()
	c.wbuf, c.wn, c.werr, c.wshort = p, 0, 0, false
	err := c.raw.Write(c.writeFn)
	n, errno, short := c.wn, c.werr, c.wshort
	c.wbuf = nil
	c.wmu.Unlock()
	raceAfterWrite(p[:n])
	switch {
	case err != nil:
		return n, c.opError("write", unwrapOp(err))
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
	case short:
		return n, c.opError("write", io.ErrUnexpectedEOF)
	}
	return n, nil
}

// ReadFrom keeps the TCP connection's fast path (splice, sendfile).
func (c *Conn) ReadFrom(r io.Reader) (int64, error) { return c.TCPConn.ReadFrom(r) }

// WriteTo keeps the TCP connection's fast path (splice).
func (c *Conn) WriteTo(w io.Writer) (int64, error) { return c.TCPConn.WriteTo(w) }

// noop is the Control callback of an empty Read: only the check that the
// descriptor is open counts.
func noop(uintptr) {}

// opError is the error net.TCPConn would return for the same failure.
func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// unwrapOp takes RawConn's own *net.OpError ("raw-read") apart so that
// the caller sees one OpError with the usual operation name around the
// poller's error (net.ErrClosed, os.ErrDeadlineExceeded).
func unwrapOp(err error) error {
	if oe, ok := err.(*net.OpError); ok {
		return oe.Err
	}
	return err
}

// Listen returns ln whose accepted connections are wrapped by Wrap.
func Listen(ln net.Listener) net.Listener { return listener{ln} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}
