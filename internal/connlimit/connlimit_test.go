package connlimit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/agenttest"
	"github.com/valyala/fasthttp"
)

const childEnv = "DORA_CONNLIMIT_CHILD"

// Accept survives EMFILE: under RLIMIT_NOFILE=64 with a cap set far above
// it, fasthttp (which treats accept errors as fatal) keeps serving through
// a flood of 200 idle connections and answers once they are closed.
func TestAcceptSurvivesEMFILE(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestEMFILEChild$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr agenttest.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	sc := bufio.NewScanner(stdout)
	var addr string
	for addr == "" && sc.Scan() {
		addr, _ = strings.CutPrefix(sc.Text(), "ADDR ")
	}
	go func() { _, _ = io.Copy(io.Discard, stdout); exited <- cmd.Wait() }()
	defer func() { stdin.Close(); <-exited }()
	if addr == "" {
		t.Fatalf("no address from the child: %s", stderr.String())
	}
	var conns []net.Conn
	for range 200 {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	time.Sleep(200 * time.Millisecond) // let the child hit EMFILE; no assertion depends on it
	select {
	case err := <-exited:
		t.Fatalf("child exited during the flood: %v\n%s", err, stderr.String())
	default:
	}
	for _, c := range conns {
		c.Close()
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var err error
	for range 100 {
		var res *http.Response
		if res, err = client.Get("http://" + addr + "/"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				if !strings.Contains(stderr.String(), "backing off") {
					t.Errorf("the child never backed off (no EMFILE?): %s", stderr.String())
				}
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("not serving after the flood: %v\n%s", err, stderr.String())
}

func TestEMFILEChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("helper process of TestAcceptSurvivesEMFILE")
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 64, Max: 64}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := New(Config{Max: 10000, Shed: 9999, Logger: testLogger()})
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lim.Listen(ln)) }()
	fmt.Printf("ADDR %s\n", ln.Addr())
	stdinClosed := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stdinClosed) }()
	select {
	case err := <-served:
		t.Fatalf("Serve returned: %v", err)
	case <-stdinClosed:
	}
}

// Over Shed, a connection is answered 503 with a JSON error; at Max,
// Accept waits; a closed connection frees its slot.
func TestShedAndCap(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := New(Config{Max: 3, Shed: 2})
	ln := lim.Listen(inner)
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := dial(), dial()
	sa, sb := <-accepted, <-accepted
	// The third is shed: 503 with a JSON body, then closed by the server.
	c := dial()
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"error"`) {
		t.Fatalf("shed connection got %d %q", res.StatusCode, body)
	}
	for _, x := range []net.Conn{a, b, c, sa, sb} {
		x.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := lim.WaitIdle(ctx); err != nil {
		t.Fatalf("%d slots still held after every connection closed", lim.Open())
	}
	// Freed slots let the next connection through.
	dial()
	select {
	case s := <-accepted:
		s.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("no slot freed after closing two connections")
	}
}

func TestTemporary(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)}, true},
		{&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ENFILE)}, true},
		{net.ErrClosed, false},
		{io.EOF, false},
	} {
		if got := Temporary(tc.err); got != tc.want {
			t.Errorf("Temporary(%v) = %v", tc.err, got)
		}
	}
}

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(os.Stderr, nil)) }

// TestCloseWrite: a limited connection half-closes like the TCP connection
// under it: the client reads the answer and then EOF, and can still send.
func TestCloseWrite(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := New(Config{Max: 3}).Listen(inner)
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "answer")
		cw, ok := c.(interface{ CloseWrite() error })
		if !ok {
			got <- "no CloseWrite"
			return
		}
		if err := cw.CloseWrite(); err != nil {
			got <- "CloseWrite: " + err.Error()
			return
		}
		b, _ := io.ReadAll(c)
		got <- string(b)
	}()
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c) // ends at the server's half-close, not at a timeout
	if err != nil || string(b) != "answer" {
		t.Fatalf("client read %q, %v; want the answer then EOF", b, err)
	}
	_, _ = io.WriteString(c, "rest")
	c.(*net.TCPConn).CloseWrite()
	if s := <-got; s != "rest" {
		t.Fatalf("server side: %s", s)
	}
}

// TestCloseEndsBlockedRead: Close ends a Read blocked in another goroutine
// (a server closing its idle keep-alive connections at shutdown) even
// under a wrapper that, like the router's srvConn, re-arms its own later
// deadline after a timeout that came before it, and even when the client
// ignores the half-close: the drain's short deadline must not be undone.
func TestCloseEndsBlockedRead(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := New(Config{Max: 3})
	ln := lim.Listen(inner)
	defer ln.Close()
	cl, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close() // the client never reads, writes or closes before this
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	bound := time.Now().Add(10 * time.Minute)
	done := make(chan error, 1)
	blocked := make(chan struct{})
	go func() {
		buf := make([]byte, 10)
		for first := true; ; first = false {
			if err := s.SetReadDeadline(bound); err != nil {
				done <- err
				return
			}
			if first {
				close(blocked)
			}
			_, err := s.Read(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(bound) {
				continue // cut short before the bound: retry
			}
			done <- err
			return
		}
	}()
	<-blocked
	s.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a read after Close succeeded")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not end a blocked read (the drain deadline was re-armed)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := lim.WaitIdle(ctx); err != nil {
		t.Fatalf("%d slots still held after Close", lim.Open())
	}
}
