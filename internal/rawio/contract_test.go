package rawio

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

// tcpPair returns both ends of one loopback TCP connection, each wrapped
// by Wrap when its flag says so.
func tcpPair(wrap1, wrap2 bool) (c1, c2 net.Conn, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, nil, err
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	acc := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		acc <- res{c, err}
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, nil, nil, err
	}
	r := <-acc
	if r.err != nil {
		d.Close()
		return nil, nil, nil, r.err
	}
	c1, c2 = d, r.c
	if wrap1 {
		c1 = Wrap(c1)
	}
	if wrap2 {
		c2 = Wrap(c2)
	}
	return c1, c2, func() { c1.Close(); c2.Close() }, nil
}

// TestNetConnSuite runs golang.org/x/net/nettest's net.Conn conformance
// suite (basic I/O, ping-pong, racy concurrent reads and writes, past,
// present and future deadlines, Close ending blocked calls, concurrent
// methods) with raw connections on both ends, and with one raw end
// talking to an ordinary one.
func TestNetConnSuite(t *testing.T) {
	if !supported {
		t.Skip("no raw calls on " + runtime.GOOS)
	}
	t.Run("both", func(t *testing.T) {
		nettest.TestConn(t, func() (net.Conn, net.Conn, func(), error) { return tcpPair(true, true) })
	})
	t.Run("raw-to-plain", func(t *testing.T) {
		nettest.TestConn(t, func() (net.Conn, net.Conn, func(), error) { return tcpPair(true, false) })
	})
	t.Run("plain-to-raw", func(t *testing.T) {
		nettest.TestConn(t, func() (net.Conn, net.Conn, func(), error) { return tcpPair(false, true) })
	})
}

// outcome describes what a call returned the way callers branch on it:
// the count, the error's classes (errors.Is / net.Error), its *net.OpError
// operation and its text with the connection's addresses taken out.
func outcome(n int, err error, c net.Conn) string {
	if err == nil {
		return fmt.Sprintf("n=%d err=nil", n)
	}
	var oe *net.OpError
	op := "-"
	if errors.As(err, &oe) {
		op = oe.Op + "/" + oe.Net
		if oe.Source == nil || oe.Addr == nil {
			op += "/noaddr"
		}
	}
	var ne net.Error
	timeout := errors.As(err, &ne) && ne.Timeout()
	text := strings.NewReplacer(c.LocalAddr().String(), "LOCAL", c.RemoteAddr().String(), "REMOTE").Replace(err.Error())
	return fmt.Sprintf("n=%d eof=%v closed=%v deadline=%v timeout=%v reset=%v epipe=%v op=%s text=%q",
		n, err == io.EOF, errors.Is(err, net.ErrClosed), errors.Is(err, os.ErrDeadlineExceeded), timeout,
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), op, text)
}

// TestSameOutcomesAsTCPConn puts a raw connection and an ordinary
// *net.TCPConn through the same situations and asks for the same results,
// error values and types included: what the router, fasthttp and the
// connection wrappers branch on (io.EOF, net.ErrClosed,
// os.ErrDeadlineExceeded, Timeout(), ECONNRESET, EPIPE, *net.OpError).
func TestSameOutcomesAsTCPConn(t *testing.T) {
	if !supported {
		t.Skip("no raw calls on " + runtime.GOOS)
	}
	cases := []struct {
		name string
		run  func(t *testing.T, c, peer net.Conn) string
	}{
		{"read-after-close", func(t *testing.T, c, _ net.Conn) string {
			c.Close()
			n, err := c.Read(make([]byte, 10))
			return outcome(n, err, c)
		}},
		{"write-after-close", func(t *testing.T, c, _ net.Conn) string {
			c.Close()
			n, err := c.Write([]byte("x"))
			return outcome(n, err, c)
		}},
		{"empty-read-after-close", func(t *testing.T, c, _ net.Conn) string {
			c.Close()
			n, err := c.Read(nil)
			return outcome(n, err, c)
		}},
		{"empty-write-after-close", func(t *testing.T, c, _ net.Conn) string {
			c.Close()
			n, err := c.Write(nil)
			return outcome(n, err, c)
		}},
		{"empty-read-open", func(t *testing.T, c, _ net.Conn) string {
			n, err := c.Read([]byte{})
			return outcome(n, err, c)
		}},
		{"empty-write-open", func(t *testing.T, c, _ net.Conn) string {
			n, err := c.Write([]byte{})
			return outcome(n, err, c)
		}},
		{"empty-read-past-deadline", func(t *testing.T, c, _ net.Conn) string {
			c.SetReadDeadline(time.Now().Add(-time.Second))
			n, err := c.Read([]byte{})
			return outcome(n, err, c)
		}},
		{"empty-write-past-deadline", func(t *testing.T, c, _ net.Conn) string {
			c.SetWriteDeadline(time.Now().Add(-time.Second))
			n, err := c.Write([]byte{})
			return outcome(n, err, c)
		}},
		{"read-past-deadline", func(t *testing.T, c, _ net.Conn) string {
			c.SetReadDeadline(time.Now().Add(-time.Second))
			n, err := c.Read(make([]byte, 10))
			return outcome(n, err, c)
		}},
		{"read-waits-for-deadline", func(t *testing.T, c, _ net.Conn) string {
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			n, err := c.Read(make([]byte, 10))
			return outcome(n, err, c)
		}},
		{"write-past-deadline", func(t *testing.T, c, _ net.Conn) string {
			c.SetWriteDeadline(time.Now().Add(-time.Second))
			n, err := c.Write([]byte("x"))
			return outcome(n, err, c)
		}},
		{"read-eof", func(t *testing.T, c, peer net.Conn) string {
			peer.Close()
			n, err := c.Read(make([]byte, 10))
			return outcome(n, err, c)
		}},
		{"read-eof-twice", func(t *testing.T, c, peer net.Conn) string {
			peer.Close()
			c.Read(make([]byte, 10))
			n, err := c.Read(make([]byte, 10))
			return outcome(n, err, c)
		}},
		{"read-reset", func(t *testing.T, c, peer net.Conn) string {
			c.Write([]byte("unread by the peer"))
			time.Sleep(10 * time.Millisecond)
			peer.(interface{ SetLinger(int) error }).SetLinger(0)
			peer.Close() // RST
			time.Sleep(10 * time.Millisecond)
			n, err := c.Read(make([]byte, 10))
			return outcome(n, err, c)
		}},
		{"write-after-reset", func(t *testing.T, c, peer net.Conn) string {
			peer.(interface{ SetLinger(int) error }).SetLinger(0)
			peer.Close() // RST
			time.Sleep(10 * time.Millisecond)
			n, err := c.Write([]byte("x"))
			return outcome(n, err, c)
		}},
		{"close-ends-blocked-read", func(t *testing.T, c, _ net.Conn) string {
			go func() { time.Sleep(20 * time.Millisecond); c.Close() }()
			n, err := c.Read(make([]byte, 10))
			return outcome(n, err, c)
		}},
		{"close-ends-blocked-write", func(t *testing.T, c, _ net.Conn) string {
			big := make([]byte, 64<<20) // more than the socket buffers hold
			go func() { time.Sleep(50 * time.Millisecond); c.Close() }()
			n, err := c.Write(big)
			// n depends on the socket buffers: only its being > 0 counts.
			return outcome(min(n, 1), err, c)
		}},
		{"partial-write-at-deadline", func(t *testing.T, c, _ net.Conn) string {
			big := make([]byte, 64<<20)
			c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			n, err := c.Write(big)
			return outcome(min(n, 1), err, c)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]string
			for i, wrap := range []bool{false, true} {
				c, peer, stop, err := tcpPair(wrap, false)
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := c.(*Conn); ok != wrap {
					t.Fatalf("wrapped %v: got %T", wrap, c)
				}
				got[i] = tc.run(t, c, peer)
				stop()
			}
			if got[0] != got[1] {
				t.Errorf("raw connection differs from *net.TCPConn:\n tcp: %s\n raw: %s", got[0], got[1])
			}
		})
	}
}

// TestBlockingModeDescriptor: a raw call never waits in the kernel, even
// when the descriptor's file was switched to blocking mode (a dup of it
// made by TCPConn.File and then asked for its Fd, or a process it was
// passed to, can do that: O_NONBLOCK belongs to the open file, shared by
// every dup). A raw call that waited there would keep its P and hold up
// every stop-the-world; here, a read deadline and Close would not end it.
func TestBlockingModeDescriptor(t *testing.T) {
	if !supported {
		t.Skip("no raw calls on " + runtime.GOOS)
	}
	// No GC while a read may be stuck in the kernel with its P (the fixed
	// code never is): its stop-the-world would wait for the read.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	c, peer, stop, err := tcpPair(true, false)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	sc, err := c.(*Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := sc.Control(func(fd uintptr) { serr = syscall.SetNonblock(int(fd), false) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}

	// read waits for a read on c to end: false when it is still blocked
	// after a while; the peer's bytes then release it.
	read := func(what string) error {
		errc := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 10))
			errc <- err
		}()
		select {
		case err := <-errc:
			return err
		case <-time.After(5 * time.Second):
			peer.Write([]byte("release"))
			<-errc
			t.Fatalf("%s did not end a read on a descriptor in blocking mode", what)
			return nil
		}
	}
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if err := read("the read deadline"); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	go func() { time.Sleep(50 * time.Millisecond); c.Close() }()
	if err := read("Close"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read ended by Close: %v", err)
	}
}
