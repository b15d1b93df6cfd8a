//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package router

import (
	"errors"
	"net"
	"syscall"
)

// connClosed reports whether the peer closed c (or reset it), peeking one
// byte without blocking and without consuming it: a pipelined next request
// stays for fasthttp to read.
func connClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var b [1]byte
	// Control, not Read: RawConn.Read fails at once when the connection's
	// read deadline has passed (the server's ReadTimeout, armed for the
	// request head, passes while a long step runs), and that failure must
	// not pass for a hang-up. The peek never waits, so it needs no poller.
	cerr := raw.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == nil && n == 0:
			closed = true
		case err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR):
			closed = true
		}
	})
	return closed || cerr != nil
}
