//go:build linux && !386

package rawio

// (linux/386 reaches the socket calls through socketcall(2) only: no raw
// calls there.)

import (
	"syscall"
	"unsafe"
)

const supported = true

// Both calls pass MSG_DONTWAIT: a raw call must never wait in the kernel
// (it would keep its P, and hold up every stop-the-world, for as long),
// and the descriptor's own O_NONBLOCK belongs to its open file, which a
// dup of it (TCPConn.File, then Fd) or a process it was passed to can
// switch to blocking mode.

// doRead is the RawConn read callback: one recv(2), retried on EINTR;
// false on EAGAIN asks the poller to wait until the socket is readable.
func (c *Conn) doRead(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)), syscall.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			c.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			c.rerr = e
			return true
		}
	}
}

// doWrite is the RawConn write callback: send(2) with MSG_NOSIGNAL too (a
// peer that hung up gives EPIPE, never SIGPIPE) until the whole buffer is
// written; false on EAGAIN asks the poller to wait until it is writable,
// and the next call resumes where this one stopped.
func (c *Conn) doWrite(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		rest := c.wbuf[c.wn:]
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)), syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			if n == 0 {
				// Never for a TCP socket; TCPConn's answer to it
				// rather than a loop that keeps the P.
				c.wshort = true
				return true
			}
			c.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = e
			return true
		}
	}
	return true
}
