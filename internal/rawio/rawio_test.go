package rawio

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// pair returns a wrapped client connection and the server side of one
// loopback TCP connection.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	if srv == nil {
		t.Fatal("accept failed")
	}
	w := Wrap(c)
	rc, ok := w.(*Conn)
	if !ok {
		if runtime.GOOS == "linux" {
			t.Fatalf("Wrap of a TCP connection on linux returned %T", w)
		}
		t.Skip("no raw calls on " + runtime.GOOS)
	}
	t.Cleanup(func() { rc.Close(); srv.Close() })
	return rc, srv
}

// TestRoundTripLarge: 8 MiB each way through a reader slower than the
// socket buffers, so writes stop on EAGAIN part-way and resume; every
// byte arrives, in order.
func TestRoundTripLarge(t *testing.T) {
	c, srv := pair(t)
	data := make([]byte, 8<<20)
	rand.Read(data)

	// raw write → ordinary read, the reader pausing now and then.
	got := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		chunk := make([]byte, 64<<10)
		for buf.Len() < len(data) {
			n, err := srv.Read(chunk)
			buf.Write(chunk[:n])
			if err != nil {
				break
			}
			if buf.Len()%(1<<20) < n {
				time.Sleep(5 * time.Millisecond)
			}
		}
		got <- buf.Bytes()
	}()
	n, err := c.Write(data)
	if err != nil || n != len(data) {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("server read %d bytes, not the %d written", len(b), len(data))
	}

	// ordinary write → raw read.
	go func() { srv.Write(data); srv.(*net.TCPConn).CloseWrite() }()
	b, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("raw read: %d bytes, %v", len(b), err)
	}
	// after the peer's FIN: EOF again, not an error.
	if n, err := c.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("read after EOF: %d, %v", n, err)
	}
}

// TestDeadline: a read with no data waits for the deadline and fails as a
// timeout that callers recognise (net.Error.Timeout, os.ErrDeadlineExceeded);
// a later deadline lets the connection be used again.
func TestDeadline(t *testing.T) {
	c, srv := pair(t)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := c.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("error is not a read OpError: %#v", err)
	}
	c.SetReadDeadline(time.Time{})
	srv.Write([]byte("hi"))
	b := make([]byte, 10)
	n, err := c.Read(b)
	if err != nil || string(b[:n]) != "hi" {
		t.Fatalf("read after clearing the deadline: %q, %v", b[:n], err)
	}

	// A write that cannot finish (nobody reads) stops at its deadline.
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, err = c.Write(make([]byte, 64<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past the deadline: %v", err)
	}
}

// TestClose: Close from another goroutine ends a blocked Read with
// net.ErrClosed; a write to a peer that is gone fails with an error (EPIPE
// or ECONNRESET), not a signal.
func TestClose(t *testing.T) {
	c, srv := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read ended by Close: %v", err)
	}

	c2, srv2 := pair(t)
	srv2.(*net.TCPConn).SetLinger(0)
	srv2.Close() // RST
	_ = srv
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = c2.Write([]byte("after the peer left"))
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("write to a reset peer: %v", err)
	}
}

// TestReadFromKeepsFastPath: io.Copy from a file into the wrapped conn
// goes through the TCP connection's ReadFrom (sendfile), and arrives.
func TestReadFromKeepsFastPath(t *testing.T) {
	c, srv := pair(t)
	data := make([]byte, 1<<20)
	rand.Read(data)
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(io.LimitReader(srv, int64(len(data)))); got <- b }()
	if _, ok := io.Writer(c).(io.ReaderFrom); !ok {
		t.Fatal("wrapped conn lost ReadFrom")
	}
	n, err := io.Copy(c, f)
	if err != nil || n != int64(len(data)) {
		t.Fatalf("copy: %d, %v", n, err)
	}
	if !bytes.Equal(<-got, data) {
		t.Fatal("bytes differ")
	}
}

// TestWrapLeavesOthers: a connection that is not TCP is returned as is.
func TestWrapLeavesOthers(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Wrap(a) != a {
		t.Fatal("Wrap changed a pipe")
	}
}

// TestListen: accepted connections come wrapped.
func TestListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Listen(ln)
	defer l.Close()
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			c.Write([]byte("x"))
			c.Close()
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*Conn); !ok && runtime.GOOS == "linux" {
		t.Fatalf("accepted %T", c)
	}
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "x" {
		t.Fatalf("read %q, %v", b, err)
	}
}

// TestConcurrentReaders: two goroutines reading one connection at once
// (a closing server drains while its handler still reads) take turns and
// between them get every byte once.
func TestConcurrentReaders(t *testing.T) {
	c, srv := pair(t)
	const total = 1 << 20
	counts := make(chan int, 2)
	for range 2 {
		go func() {
			n := 0
			b := make([]byte, 1000)
			for {
				k, err := c.Read(b)
				n += k
				if err != nil {
					counts <- n
					return
				}
			}
		}()
	}
	go func() { srv.Write(make([]byte, total)); srv.Close() }()
	if got := <-counts + <-counts; got != total {
		t.Fatalf("readers got %d bytes between them, want %d", got, total)
	}
}
