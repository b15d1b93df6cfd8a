package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/pool"
)

// cancelBound is how long a cancellation may take to reach an instance in
// these tests: generous (the watch polls every 100 ms), so that a loaded
// 2-core machine under -race does not fail them.
const cancelBound = 3 * time.Second

// within waits up to cancelBound for cond.
func within(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(cancelBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", cancelBound, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// closedWithin waits up to cancelBound for ch to be closed.
func closedWithin(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(cancelBound):
		t.Fatalf("not within %v: %s", cancelBound, what)
	}
}

// noRouterCalls reports whether no goroutine is inside an instance call or
// a hold (a leaked call would sit there).
func noRouterCalls() bool {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return !bytes.Contains(buf, []byte("router.(*instClient).roundTrip")) &&
		!bytes.Contains(buf, []byte("router.(*Router).holdForInstance"))
}

// settled waits until nothing of a pipeline is left: no call in flight on
// the pool's hosts of k, no one-shot URL, no watched connection, no client
// holding a connection and no goroutine inside a call.
func (e *env) settled(t *testing.T, k pool.Key) {
	t.Helper()
	waitUntil(t, "pipeline fully released", func() bool {
		for _, h := range e.pool.Hosts(k) {
			if h.InFlight() != 0 {
				return false
			}
		}
		e.r.clients.mu.RLock()
		defer e.r.clients.mu.RUnlock()
		for _, ic := range e.r.clients.m {
			if ic.pending.Load() != 0 {
				return false
			}
		}
		return e.r.src.len() == 0 && e.r.watch.len() == 0 && noRouterCalls()
	})
}

// blockingInstance answers nothing until its request is cancelled: called
// is closed when a request arrived, cancelled when its context ended (the
// router closed the connection).
func blockingInstance(t *testing.T) (addr string, called, cancelled <-chan struct{}) {
	t.Helper()
	c1, c2 := make(chan struct{}), make(chan struct{})
	var o1, o2 sync.Once
	release := make(chan struct{})
	s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o1.Do(func() { close(c1) })
		// The input first (a body, in the body mode): Go's server sees a
		// closed connection only once the body is read.
		io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
			o2.Do(func() { close(c2) })
		case <-release:
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { close(release); s.Close() })
	return ln.Addr().String(), c1, c2
}

// TestClientGoneCancelsWaitingStep: a client that hangs up while its step
// (slowpoke/10000) has not answered yet gets the instance's request
// cancelled at once rather than after the step's 10 s or its first-byte
// timeout, and leaves nothing behind.
func TestClientGoneCancelsWaitingStep(t *testing.T) {
	var logs syncBuffer
	sp := startExampleLog(t, "slowpoke", &logs)
	e := newEnv(t, nil)
	e.ufop(dora.Ufop{Name: "slowpoke", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("s0", "slowpoke", "v1", sp.addr)})
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	k := pool.Key{Ufop: "slowpoke", Version: "v1", Region: "z0"}

	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /k?slowpoke/10000 HTTP/1.1\r\nHost: photos.localhost\r\n\r\n")
	waitUntil(t, "the step in flight", func() bool {
		hs := e.pool.Hosts(k)
		return len(hs) == 1 && hs[0].InFlight() == 1
	})
	time.Sleep(200 * time.Millisecond) // the client gives up after 200 ms
	conn.Close()
	within(t, "slowpoke logs its request cancelled", func() bool {
		return strings.Contains(logs.String(), "request cancelled")
	})
	e.settled(t, k)

	// The instance is still fine for the next request.
	resp, body := e.get("photos.localhost", "/k?slowpoke/0")
	if resp.StatusCode != 200 || string(body) != "abc" {
		t.Fatalf("after a cancelled call: %d %q", resp.StatusCode, body)
	}
}

// TestClientGoneDuringStream: a client that hangs up while a step's body
// streams (the router waiting for the instance's next bytes, not writing
// to the client) cancels the step too.
func TestClientGoneDuringStream(t *testing.T) {
	e := newEnv(t, nil)
	cancelled := make(chan struct{})
	var once sync.Once
	addr := fakeInstance(t, func(w http.ResponseWriter, r *http.Request, in io.Reader) {
		w.Header().Set("Content-Length", "1000000")
		w.Write(bytes.Repeat([]byte("z"), 64<<10)) // more than the router buffers
		w.(http.Flusher).Flush()
		<-r.Context().Done() // then nothing more until cancelled
		once.Do(func() { close(cancelled) })
	})
	e.ufop(dora.Ufop{Name: "trickle", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("t0", "trickle", "v1", addr)})
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /k?trickle/a HTTP/1.1\r\nHost: photos.localhost\r\n\r\n")
	if _, err := io.ReadAtLeast(conn, make([]byte, 64<<10), 20000); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	closedWithin(t, "the instance's request cancelled", cancelled)
	e.settled(t, pool.Key{Ufop: "trickle", Version: "v1", Region: "z0"})
}

// TestProcessCancelled: Process whose context is cancelled while its step
// waits for the instance returns promptly with a 499 ProcessError, and the
// instance's request is cancelled; an already cancelled context calls
// nobody.
func TestProcessCancelled(t *testing.T) {
	e := newEnv(t, nil)
	addr, called, cancelled := blockingInstance(t)
	e.ufop(dora.Ufop{Name: "blocker", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("b0", "blocker", "v1", addr)})
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	k := pool.Key{Ufop: "blocker", Version: "v1", Region: "z0"}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.r.Process(ctx, "photos", "k", "blocker/x", io.Discard)
		done <- err
	}()
	<-called
	cancel()
	select {
	case err := <-done:
		var pe *ProcessError
		if !errors.As(err, &pe) || pe.Status != StatusClientClosedRequest || pe.Step != 0 {
			t.Fatalf("Process after cancel: %v (%+v)", err, pe)
		}
	case <-time.After(cancelBound):
		t.Fatalf("Process did not return within %v of its cancellation", cancelBound)
	}
	closedWithin(t, "the instance's request cancelled", cancelled)
	e.settled(t, k)

	pre, precancel := context.WithCancel(context.Background())
	precancel()
	before := e.pool.Hosts(k)[0].InFlight()
	if _, err := e.r.Process(pre, "photos", "k", "blocker/x", io.Discard); err == nil {
		t.Fatal("Process with a cancelled context succeeded")
	}
	if after := e.pool.Hosts(k)[0].InFlight(); after != before {
		t.Fatalf("in-flight %d after a pre-cancelled Process", after)
	}
	e.settled(t, k)
}

// TestShutdownCancelsSteps: once Serve's shutdown grace is over, a step
// still waiting for its instance is cancelled and Serve returns.
func TestShutdownCancelsSteps(t *testing.T) {
	var logs syncBuffer
	e := newEnv(t, func(c *Config) {
		c.ShutdownGrace = 300 * time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	addr, called, cancelled := blockingInstance(t)
	e.ufop(dora.Ufop{Name: "blocker", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("b0", "blocker", "v1", addr)})
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	go func() {
		req, _ := http.NewRequest("GET", "http://"+e.addr+"/k?blocker/x", nil)
		req.Host = "photos.localhost"
		if resp, err := e.client.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-called
	stopped := make(chan struct{})
	go func() { e.stop(); close(stopped) }()
	closedWithin(t, "the instance's request cancelled", cancelled)
	select {
	case <-stopped:
	case <-time.After(cancelBound + time.Second):
		t.Fatal("Serve did not return after its grace")
	}
	e.settled(t, pool.Key{Ufop: "blocker", Version: "v1", Region: "z0"})
	if !strings.Contains(logs.String(), "status=499") {
		t.Fatalf("access log has no 499 for the cancelled request:\n%s", logs.String())
	}
}

// blockingCancel is a watched pipeline whose cancel waits for release.
type blockingCancel struct {
	entered, release chan struct{}
	done             atomic.Bool
}

func (b *blockingCancel) cancel() {
	close(b.entered)
	<-b.release
	b.done.Store(true)
}

// TestWatchRemoveWaitsForCancel: once remove has returned, the watch's
// loop is done with the entry, a cancel it had started included, so that
// the pipeline holding the entry can be recycled (Router.pipelines). (The
// pause before the release only gives a remove that would not wait the
// time to return early; it decides nothing.)
func TestWatchRemoveWaitsForCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	client.Close() // the peer has gone: the loop cancels
	w := newConnWatch(time.Millisecond)
	bc := &blockingCancel{entered: make(chan struct{}), release: make(chan struct{})}
	e := &watchEntry{conn: srv, ctx: bc}
	w.add(e)
	<-bc.entered
	removed := make(chan bool)
	go func() {
		w.remove(e)
		removed <- bc.done.Load()
	}()
	time.Sleep(20 * time.Millisecond)
	close(bc.release)
	if !<-removed {
		t.Fatal("remove returned while the loop's cancel of the entry was running")
	}
}

// holdAccess is a log handler that holds the first access line until
// release is closed (entered tells it is held).
type holdAccess struct {
	slog.Handler
	s *holdState
}

type holdState struct {
	once             sync.Once
	entered, release chan struct{}
}

func (h holdAccess) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Message == "access" {
		h.s.once.Do(func() { close(h.s.entered); <-h.s.release })
	}
	return h.Handler.Handle(ctx, rec)
}

func (h holdAccess) WithAttrs(as []slog.Attr) slog.Handler {
	return holdAccess{Handler: h.Handler.WithAttrs(as), s: h.s}
}

func (h holdAccess) WithGroup(name string) slog.Handler {
	return holdAccess{Handler: h.Handler.WithGroup(name), s: h.s}
}

// TestShutdownWaitsForCancelledRequests: once the shutdown grace is over
// and the steps are cancelled, Serve returns only after their requests
// have finished (here: their access line written). It returned at once:
// fasthttp's second ShutdownWithContext, which was to wait, returns
// right away once the listeners are closed, so a process exiting after
// Serve lost the lines and metrics of the requests it cancelled.
func TestShutdownWaitsForCancelledRequests(t *testing.T) {
	var logs syncBuffer
	hold := &holdState{entered: make(chan struct{}), release: make(chan struct{})}
	e := newEnv(t, func(c *Config) {
		c.ShutdownGrace = 200 * time.Millisecond
		c.Logger = slog.New(holdAccess{Handler: slog.NewTextHandler(&logs, nil), s: hold})
	})
	addr, called, _ := blockingInstance(t)
	e.ufop(dora.Ufop{Name: "blocker", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("b0", "blocker", "v1", addr)})
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	go func() {
		req, _ := http.NewRequest("GET", "http://"+e.addr+"/k?blocker/x", nil)
		req.Host = "photos.localhost"
		if resp, err := e.client.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-called
	stopped := make(chan struct{})
	go func() { e.stop(); close(stopped) }()
	closedWithin(t, "the cancelled request's access line", hold.entered)
	select {
	case <-stopped:
		close(hold.release)
		t.Fatal("Serve returned before the cancelled request finished")
	case <-time.After(300 * time.Millisecond):
	}
	close(hold.release)
	closedWithin(t, "Serve's return", stopped)
	if !strings.Contains(logs.String(), "status=499") {
		t.Fatalf("access log has no 499 for the cancelled request:\n%s", logs.String())
	}
}
