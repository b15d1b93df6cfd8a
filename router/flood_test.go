package router

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/store/bolt"
	"github.com/doraproject/dora/pool"
)

// floodChildEnv makes the test binary a router under a low RLIMIT_NOFILE
// (TestFloodChild): it prints its address and serves until stdin closes.
const floodChildEnv = "DORA_ROUTER_FLOOD_CHILD"

const floodNoFile = 128

// A connection flood past the open-file limit does not stop the router:
// the server runs under RLIMIT_NOFILE=128 in a child process, takes 400
// idle connections (some answered 503, the rest waiting in the backlog),
// and serves again once they are closed.
func TestConnectionFloodUnderLowFileLimit(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestFloodChild$", "-test.v")
	cmd.Env = append(os.Environ(), floodChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	var addr string
	var out []string
	for addr == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("child ended before serving:\n%s\n%s", strings.Join(out, "\n"), stderr.String())
			}
			out = append(out, l)
			if a, ok := strings.CutPrefix(l, "ADDR "); ok {
				addr = a
			}
		case <-time.After(60 * time.Second):
			t.Fatal("child never printed its address")
		}
	}
	get := func() (int, error) {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		res, err := c.Get("http://" + addr + "/healthz")
		if err != nil {
			return 0, err
		}
		defer res.Body.Close()
		_, _ = io.Copy(io.Discard, res.Body)
		return res.StatusCode, nil
	}
	if code, err := get(); err != nil || code != http.StatusOK {
		t.Fatalf("before the flood: %d %v", code, err)
	}

	const flood = 400
	conns := make([]net.Conn, 0, flood)
	for range flood {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			break // the backlog is full: the kernel refuses, the server lives on
		}
		conns = append(conns, c)
	}
	if len(conns) <= floodNoFile {
		t.Fatalf("only %d connections opened; the flood must exceed the limit %d", len(conns), floodNoFile)
	}
	// Some connections over the shedding threshold are answered 503 at once.
	busy := 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		b := make([]byte, 64)
		if n, _ := c.Read(b); strings.HasPrefix(string(b[:n]), "HTTP/1.1 503") {
			busy++
		}
	}
	select {
	case err := <-exited:
		t.Fatalf("the router exited during the flood: %v\n%s", err, stderr.String())
	default:
	}
	for _, c := range conns {
		c.Close()
	}
	var code int
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if code, err = get(); err == nil && code == http.StatusOK {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || code != http.StatusOK {
		t.Fatalf("after the flood: %d %v\n%s", code, err, stderr.String())
	}
	if busy == 0 {
		t.Errorf("no connection of %d was answered 503", len(conns))
	}
	t.Logf("%d connections, %d answered 503; serving after", len(conns), busy)
}

// TestFloodChild is the child of TestConnectionFloodUnderLowFileLimit.
func TestFloodChild(t *testing.T) {
	if os.Getenv(floodChildEnv) == "" {
		t.Skip("helper process of TestConnectionFloodUnderLowFileLimit")
	}
	rl := syscall.Rlimit{Cur: floodNoFile, Max: floodNoFile}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, err := New(Config{Store: st, Objects: newMemOrigin(), Pool: pool.New(pool.Options{}),
		ReadTimeout: time.Minute, IdleTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx, ln) }()
	select {
	case <-r.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("router metadata never ready")
	}
	fmt.Printf("ADDR %s\n", ln.Addr())
	stdinClosed := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stdinClosed) }()
	select {
	case err := <-served:
		t.Fatalf("Serve returned during the flood: %v", err)
	case <-stdinClosed:
	}
}

// TestOversizedRequestGets414Or431: a request line longer than the head
// buffer gets 414, header fields over it after a request line that fit get
// 431 (also after keep-alive requests on the same connection), both with a
// JSON error and without a reset destroying the answer; a head under the
// limit is served.
func TestOversizedRequestGets414Or431(t *testing.T) {
	e := newEnv(t, nil)
	longURI := "/" + strings.Repeat("a", 200<<10)
	bigHeaders := strings.Repeat("X-Big: "+strings.Repeat("b", 1000)+"\r\n", 100)
	cases := []struct {
		name   string
		before int
		req    string
		status int
	}{
		{"request line", 0, "GET " + longURI + " HTTP/1.1\r\nHost: localhost\r\n\r\n", 414},
		{"request line after two requests", 2, "GET " + longURI + " HTTP/1.1\r\nHost: localhost\r\n\r\n", 414},
		{"headers", 0, "GET / HTTP/1.1\r\nHost: localhost\r\n" + bigHeaders + "\r\n", 431},
		{"long URI that fits, then headers", 0, "GET /" + strings.Repeat("u", 8<<10) + " HTTP/1.1\r\nHost: localhost\r\n" + bigHeaders + "\r\n", 431},
		{"headers after two requests", 2, "GET / HTTP/1.1\r\nHost: localhost\r\n" + bigHeaders + "\r\n", 431},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, br := agenttest.KeepAliveConn(t, e.addr, "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-A: 1\r\n\r\n", c.before)
			wrote := make(chan struct{})
			go func() { _, _ = io.WriteString(conn, c.req); close(wrote) }()
			// Read only once the whole request is sent (or refused), as a
			// simple client does: a reset would have destroyed the answer.
			select {
			case <-wrote:
			case <-time.After(2 * time.Second):
			}
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no response (reset?): %v", err)
			}
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != c.status || jsonError(t, body) == "" {
				t.Fatalf("got %d %q, want %d with a JSON error", res.StatusCode, body, c.status)
			}
		})
	}
}
