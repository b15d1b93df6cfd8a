package router

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// directIO: *net.TCPConn.ReadFrom splices from another TCP connection.
const directIO = true

// waitQueued waits, within the read deadline armed on tc, for bytes (or
// the peer's close) to arrive on tc and returns how many are queued in its
// receive buffer: 0 when the peer closed it. A splice of at most that many
// bytes then never waits for the peer, so the relay needs no read
// deadline of its own while the receiver takes its time.
func waitQueued(tc *net.TCPConn) (int, error) {
	raw, err := tc.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("wait for the step's bytes: %w", err)
	}
	var n int
	var ierr error
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		m, _, e := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case e == unix.EAGAIN || e == unix.EINTR:
			return false // wait for readiness (until the deadline)
		case e != nil:
			ierr = e
			return true
		case m == 0:
			n = 0 // the peer closed the connection
			return true
		}
		n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		return true
	})
	if err == nil {
		err = ierr
	}
	if err != nil {
		return 0, fmt.Errorf("wait for the step's bytes: %w", err)
	}
	return n, nil
}
