package httpguard

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/agenttest"
)

// serve runs h behind Server(cfg) on loopback and returns its address.
func serve(t *testing.T, h http.Handler, cfg Config) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := Server(h, cfg)
	go srv.Serve(Listen(ln, srv))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// closedWithin reports whether the server closes c (read error or EOF)
// before limit; the client keeps trickling with tick meanwhile.
func trickleUntilClosed(t *testing.T, c net.Conn, head string, tick time.Duration, limit time.Duration) bool {
	t.Helper()
	closed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, c) // returns when the server closes c
		close(closed)
	}()
	if _, err := io.WriteString(c, head); err != nil {
		return true
	}
	end := time.After(limit)
	for {
		select {
		case <-closed:
			return true
		case <-end:
			return false
		case <-time.After(tick):
			if _, err := c.Write([]byte("x")); err != nil {
				<-closed
				return true
			}
		}
	}
}

// A request body trickled slower than MinBodyRate is cut once the grace is
// over: the handler sees a read error and the connection closes, although
// the client never stops sending.
func TestSlowBodyIsCut(t *testing.T) {
	readErr := make(chan error, 1)
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		readErr <- err
		http.Error(w, "slow", http.StatusRequestTimeout)
	}), Config{BodyGrace: 300 * time.Millisecond, MinBodyRate: 100})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	head := "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
	if !trickleUntilClosed(t, c, head, 50*time.Millisecond, 30*time.Second) {
		t.Fatal("a body trickled at 20 B/s was never cut")
	}
	var ne net.Error
	if err := <-readErr; !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("handler read error %v, want a timeout", err)
	}
}

// Headers trickled forever are cut by HeaderTimeout.
func TestSlowHeadersAreCut(t *testing.T) {
	addr := serve(t, http.NotFoundHandler(), Config{HeaderTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !trickleUntilClosed(t, c, "GET / HTTP/1.1\r\nX-A: ", 50*time.Millisecond, 30*time.Second) {
		t.Fatal("trickled headers were never cut")
	}
}

// A body sent at a fair rate is read whole, however long it takes beyond
// the grace, and a keep-alive connection serves a later bodiless request
// although the previous one's deadlines have passed.
func TestFairBodyAndLaterRequestsPass(t *testing.T) {
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d", n)
	}), Config{BodyGrace: 100 * time.Millisecond, MinBodyRate: 1000, WriteStall: 200 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	// 40 chunks of 100 bytes every 20 ms: 5000 B/s, above the minimum.
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n")
	for range 40 {
		_, _ = c.Write([]byte(strings.Repeat("y", 100)))
		time.Sleep(20 * time.Millisecond)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || string(b) != "4000" {
		t.Fatalf("fair upload: %d %q", res.StatusCode, b)
	}
	time.Sleep(400 * time.Millisecond) // past the first request's write stall window
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	res, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || string(b) != "0" {
		t.Fatalf("second request: %d %q", res.StatusCode, b)
	}
}

// TestOversizedHeadIs414Or431: a request line longer than the head limit
// gets 414 URI Too Long, header fields over it after a request line that
// fit get 431, both with a JSON error (net/http alone answers a plain-text
// 431 to both); a head under the limit is served, also on a connection
// that served requests before.
func TestOversizedHeadIs414Or431(t *testing.T) {
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), Config{})
	longURI := "/" + strings.Repeat("a", 200<<10)
	bigHeaders := strings.Repeat("X-Big: "+strings.Repeat("b", 1000)+"\r\n", 100)
	cases := []struct {
		name     string
		before   int // keep-alive requests served first on the same connection
		req      string
		status   int
		errorHas string
	}{
		{"request line", 0, "GET " + longURI + " HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI too long"},
		{"request line after two requests", 2, "GET " + longURI + " HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI too long"},
		{"headers", 0, "GET / HTTP/1.1\r\nHost: x\r\n" + bigHeaders + "\r\n", 431, "headers too large"},
		{"long URI that fits, then headers", 0, "GET /" + strings.Repeat("u", 30<<10) + " HTTP/1.1\r\nHost: x\r\n" + bigHeaders + "\r\n", 431, "headers too large"},
		{"headers after two requests", 2, "GET / HTTP/1.1\r\nHost: x\r\n" + bigHeaders + "\r\n", 431, "headers too large"},
		{"URI under the limit", 1, "GET /" + strings.Repeat("u", 50<<10) + " HTTP/1.1\r\nHost: x\r\n\r\n", 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, br := agenttest.KeepAliveConn(t, addr, "GET /x HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nX-B: 2\r\n\r\n", c.before)
			go io.WriteString(conn, c.req)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != c.status {
				t.Fatalf("status %d %q, want %d", res.StatusCode, body, c.status)
			}
			if c.status == 200 {
				return
			}
			var e struct{ Error string }
			if ct := res.Header.Get("Content-Type"); ct != "application/json" || json.Unmarshal(body, &e) != nil ||
				!strings.Contains(e.Error, c.errorHas) {
				t.Fatalf("body %q (%s), want a JSON error saying %q", body, ct, c.errorHas)
			}
		})
	}
}

// fillListener's connections fill their socket's send buffer (the client
// never reads) just before net/http writes its own 400 Bad Request, so
// that write has to wait for the client, as it would on a pipelining
// client that stopped reading its answers; wrote gets the write's error.
type fillListener struct {
	net.Listener
	wrote chan error
}

func (l fillListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &fillConn{Conn: c, wrote: l.wrote}, nil
}

type fillConn struct {
	net.Conn
	wrote chan error
}

func (c *fillConn) Write(p []byte) (int, error) {
	if !strings.HasPrefix(string(p), "HTTP/1.1 400 ") {
		return c.Conn.Write(p)
	}
	raw, err := c.Conn.(syscall.Conn).SyscallConn()
	if err != nil {
		return 0, err
	}
	junk := make([]byte, 64<<10)
	// Fill until the socket stays full (the client's receive window
	// closed too: a round after a pause writes nothing), down to single
	// bytes (a small write can still join the last queued segment).
	for range 500 {
		wrote := 0
		_ = raw.Write(func(fd uintptr) bool {
			for size := len(junk); size > 0; size /= 2 {
				for {
					n, err := syscall.Write(int(fd), junk[:size])
					if err != nil {
						break // EAGAIN: full for writes of this size
					}
					wrote += n
				}
			}
			return true
		})
		if wrote == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	n, err := c.Conn.Write(p)
	c.wrote <- err
	return n, err
}

// TestErrorWriteToStalledClientIsBounded: the answers net/http writes
// itself (here a 400 for a malformed request on a keep-alive connection)
// to a client that stopped reading are bounded by WriteStall like a
// handler's writes, instead of holding the connection, its goroutine and
// its descriptor for as long as the client keeps the window shut.
func TestErrorWriteToStalledClientIsBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := Server(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), Config{WriteStall: 200 * time.Millisecond})
	wrote := make(chan error, 1)
	go srv.Serve(Listen(fillListener{Listener: ln, wrote: wrote}, srv))
	defer srv.Close()
	conn, _ := agenttest.KeepAliveConn(t, ln.Addr().String(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1)
	if _, err := io.WriteString(conn, "GARBAGE\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-wrote:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("the 400 to a client that stopped reading: %v, want a timeout", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("net/http's 400 to a client that stopped reading waited with no write deadline")
	}
}
