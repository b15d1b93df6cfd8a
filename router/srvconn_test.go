package router

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/headsize"
	"github.com/doraproject/dora/pool"
)

// TestStepLongerThanReadTimeout: a step that answers after the server's
// ReadTimeout (which bounds reading a request, not serving it) still
// completes: the client's connection is not taken for gone.
func TestStepLongerThanReadTimeout(t *testing.T) {
	sp := startExample(t, "slowpoke")
	e := newEnv(t, func(c *Config) { c.ReadTimeout = 300 * time.Millisecond })
	e.ufop(dora.Ufop{Name: "slowpoke", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("s0", "slowpoke", "v1", sp.addr)})
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	resp, body := e.get("photos.localhost", "/k?slowpoke/1200")
	if resp.StatusCode != 200 || string(body) != "abc" {
		t.Fatalf("step of 1.2 s with a 300 ms ReadTimeout: %d %q", resp.StatusCode, body)
	}
}

// trickle writes s one byte every gap on conn until it is done, the
// connection fails or stop closes; it reports whether the whole of s
// was written.
func trickle(conn net.Conn, s string, gap time.Duration, stop <-chan struct{}) bool {
	for i := range len(s) {
		if _, err := conn.Write([]byte{s[i]}); err != nil {
			return false
		}
		select {
		case <-stop:
			return false
		case <-time.After(gap):
		}
	}
	return true
}

// cutOff waits for conn to be closed by the router (a read that ends in
// EOF or an error other than this side's own deadline) within limit and
// returns what was read until then.
func cutOff(t *testing.T, conn net.Conn, limit time.Duration) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(limit))
	b, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the router did not close the connection within %v (read %q)", limit, b)
	}
	return string(b)
}

// TestTricklingClientCutOff: the server's ReadTimeout, enforced by the
// connections (srvConn) rather than by fasthttp, still cuts off a client
// that sends its request head a byte at a time — on a new connection, and
// on a keep-alive connection after a first request (where the deadline
// armed lazily is the earlier idle one) — and an idle keep-alive
// connection is closed after IdleTimeout.
func TestTricklingClientCutOff(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.ReadTimeout = 300 * time.Millisecond
		c.IdleTimeout = 600 * time.Millisecond
	})
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	head := "GET /k HTTP/1.1\r\nHost: photos.localhost\r\nX-Slow: " + strings.Repeat("a", 400) + "\r\n\r\n"

	t.Run("new connection", func(t *testing.T) {
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		stop := make(chan struct{})
		done := make(chan bool, 1)
		go func() { done <- trickle(conn, head, 20*time.Millisecond, stop) }()
		got := cutOff(t, conn, 5*time.Second) // the whole head would take 8 s
		close(stop)
		if <-done {
			t.Fatal("the whole trickled head was accepted")
		}
		if got != "" && !strings.HasPrefix(got, "HTTP/1.1 408") {
			t.Fatalf("answer to a trickled head: %q", got)
		}
	})

	t.Run("keep-alive", func(t *testing.T) {
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /k HTTP/1.1\r\nHost: photos.localhost\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "abc" {
			t.Fatalf("first request: %d %q", resp.StatusCode, body)
		}
		stop := make(chan struct{})
		done := make(chan bool, 1)
		go func() { done <- trickle(conn, head, 20*time.Millisecond, stop) }()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		rest, err := io.ReadAll(br)
		close(stop)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("trickled second request not cut off within 5 s (read %q)", rest)
		}
		if <-done {
			t.Fatal("the whole trickled head was accepted")
		}
	})

	t.Run("idle", func(t *testing.T) {
		conn, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /k HTTP/1.1\r\nHost: photos.localhost\r\n\r\n")
		got := cutOff(t, conn, 5*time.Second)
		if !strings.HasPrefix(got, "HTTP/1.1 200") || !strings.HasSuffix(got, "abc") {
			t.Fatalf("before the idle close: %q", got)
		}
	})
}

// TestSlowReaderCutOff: a client that stops reading a large response is
// cut off once the write bound (Config.Deadline, the server's
// WriteTimeout) has passed, instead of holding the connection forever.
func TestSlowReaderCutOff(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Deadline = 500 * time.Millisecond })
	big := bytes.Repeat([]byte("0123456789abcdef"), 32<<20/16) // 32 MiB: far beyond the socket buffers
	e.objs.add("photos", "big", "application/octet-stream", big)
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /big HTTP/1.1\r\nHost: photos.localhost\r\n\r\n")
	time.Sleep(2 * time.Second) // reads nothing meanwhile
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return // cut off before the head was read: fine
	}
	got, err := io.ReadAll(resp.Body)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the answer stalled without the router closing the connection (%d bytes)", len(got))
	}
	if err == nil || len(got) >= len(big) {
		t.Fatalf("the whole %d-byte answer arrived after the client stalled past the write bound (%d bytes, %v)", len(big), len(got), err)
	}
}

// TestSrvConnRetriesEarlyDeadline: a deadline armed for an earlier bound
// (the first request's read bound) that fires during a later, longer one
// (the idle wait) does not cut the read short: the read is retried with
// the deadline moved, and returns the bytes that arrive before the bound.
// (Without the retry the read fails at ~100 ms, NEXT coming at 1 s.)
func TestSrvConnRetriesEarlyDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &srvConn{Conn: a, t: newSrvTimeouts(100*time.Millisecond, 5*time.Second, 5*time.Second)}
	go b.Write([]byte("GET"))
	p := make([]byte, 16)
	if n, err := c.Read(p); err != nil || string(p[:n]) != "GET" {
		t.Fatalf("first read: %q %v", p[:n], err)
	}
	go func() {
		buf := make([]byte, 8)
		b.Read(buf)
		time.Sleep(time.Second) // well past the first read bound
		b.Write([]byte("NEXT"))
	}()
	if _, err := c.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	// The deadline armed for the first read (~100 ms) is still the one
	// set: it fires long before NEXT arrives, and must not end the read.
	n, err := c.Read(p)
	if err != nil || string(p[:n]) != "NEXT" {
		t.Fatalf("idle wait cut short by the earlier deadline: %q %v", p[:n], err)
	}
	// A request that does not complete is cut off at its read bound.
	n, err = c.Read(p)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n != 0 {
		t.Fatalf("an incomplete request's next read: %d %v", n, err)
	}
}

// BenchmarkServerConn compares, in one binary, the cost per request of
// the server's connection deadlines: fasthttp's own timeouts (Server on a
// plain listener: three deadline updates and clock reads per request)
// against Serve's srvConn. The request is a cache-less GET of a 4 KiB
// object from the in-memory origin, so the server loop is a large share.
func BenchmarkServerConn(b *testing.B) {
	for _, mode := range []string{"fasthttp-timeouts", "srvconn"} {
		b.Run(mode, func(b *testing.B) {
			objs := newMemOrigin()
			objs.add("photos", "small", "application/octet-stream", bytes.Repeat([]byte("x"), 4096))
			r := benchRouter(b, objs, dora.Release{})
			var hc *fasthttp.HostClient
			if mode == "srvconn" {
				hc = benchServe(b, r)
			} else {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				srv := r.Server()
				go srv.Serve(headsize.Listen(ln, 0))
				b.Cleanup(func() { srv.Shutdown() })
				hc = &fasthttp.HostClient{Addr: ln.Addr().String(), MaxConns: 64, ReadTimeout: 10 * time.Second}
			}
			b.ReportAllocs()
			benchGets(b, hc, "/small", func(resp *fasthttp.Response) error { return checkBody(resp, 4096) })
		})
	}
}

// nopIO is a real TCP connection whose reads and writes do nothing: the
// deadline calls reach the socket, the I/O is left out.
type nopIO struct{ net.Conn }

func (nopIO) Read(p []byte) (int, error)  { return len(p), nil }
func (nopIO) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkDeadlinesPerRequest: the deadline work of one keep-alive
// request without its I/O: fasthttp's (idle read deadline, read deadline,
// write deadline, each from a clock read) against srvConn's.
func BenchmarkDeadlinesPerRequest(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			var p [1]byte
			c.Read(p[:])
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	p := make([]byte, 64)
	b.Run("fasthttp", func(b *testing.B) {
		defer cpuClock(b)()
		for b.Loop() {
			conn.SetReadDeadline(time.Now().Add(DefaultIdleTimeout))
			conn.SetReadDeadline(time.Now().Add(DefaultReadTimeout))
			_ = time.Now() // ctx.time, identical on both sides
			conn.SetWriteDeadline(time.Now().Add(DefaultDeadline))
		}
	})
	b.Run("srvconn", func(b *testing.B) {
		defer cpuClock(b)()
		c := &srvConn{Conn: nopIO{conn}, t: newSrvTimeouts(DefaultReadTimeout, DefaultIdleTimeout, DefaultDeadline)}
		for b.Loop() {
			c.Read(p)
			_ = time.Now()
			c.Write(p)
		}
	})
}
