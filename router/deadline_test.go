package router

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestDeadlines: a shared deadline context ends no earlier than the
// deadline after the request's start and at most a granule later, is
// shared within a granule, and ends with its parent.
func TestDeadlines(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	s := newDeadlines(parent, 10*time.Minute)
	now := time.Now()
	a := s.get(now)
	dl, ok := a.Deadline()
	if !ok || dl.Before(now.Add(10*time.Minute)) || dl.After(now.Add(10*time.Minute+time.Second)) {
		t.Fatalf("deadline %v for a start at %v (want within [10m, 10m1s])", dl.Sub(now), now)
	}
	if b := s.get(now.Add(500 * time.Millisecond)); b != a {
		t.Fatal("a request half a granule later got another context")
	}
	later := now.Add(2 * time.Second)
	c := s.get(later)
	if dl, _ := c.Deadline(); c == a || dl.Before(later.Add(10*time.Minute)) {
		t.Fatalf("two seconds later: same context %v, deadline %v after the start", c == a, dl.Sub(later))
	}
	short := newDeadlines(parent, 80*time.Millisecond)
	sc := short.get(time.Now())
	<-sc.Done()
	if sc.Err() != context.DeadlineExceeded {
		t.Fatalf("short deadline ended with %v", sc.Err())
	}
	cancel()
	<-c.Done()
	if c.Err() != context.Canceled {
		t.Fatalf("after the parent's end: %v", c.Err())
	}
}

// TestPipeCtx: a pipeline's context ends with its shared deadline (and is
// then unlisted), with its own cancel (unlisted at once), and passes its
// end on to children (WithCancel, context.AfterFunc) and to the instance
// connections it watches; one started on an ended deadline is ended.
func TestPipeCtx(t *testing.T) {
	s := newDeadlines(context.Background(), 80*time.Millisecond)
	sd := s.shared(time.Now())
	var a, b pipeCtx
	a.initShared(sd)
	b.initShared(sd)
	child, stopChild := context.WithCancel(&a)
	defer stopChild()
	fired := make(chan struct{})
	context.AfterFunc(&a, func() { close(fired) })
	c1, c2 := net.Pipe()
	defer c2.Close()
	sc := &stepConn{conn: c1}
	if !a.watchConn(sc) {
		t.Fatal("a live context refused to watch a connection")
	}
	b.cancel()
	if b.Err() != context.Canceled || a.Err() != nil {
		t.Fatalf("after b.cancel: a %v, b %v", a.Err(), b.Err())
	}
	sd.mu.Lock()
	listed := sd.head == &a && a.next == nil && !b.listed
	sd.mu.Unlock()
	if !listed {
		t.Fatal("the cancelled context is still listed, or the live one is not")
	}
	<-a.Done()
	<-child.Done()
	<-fired
	if a.Err() != context.DeadlineExceeded || child.Err() != context.DeadlineExceeded {
		t.Fatalf("at the deadline: %v, child %v", a.Err(), child.Err())
	}
	if _, err := c1.Write([]byte("x")); err == nil {
		t.Fatal("the watched connection was not closed at the context's end")
	}
	if a.unwatchConn(sc) || a.watchConn(&stepConn{conn: c2}) {
		t.Fatal("an ended context still watches connections")
	}
	var late pipeCtx
	late.initShared(sd)
	if late.Err() != context.DeadlineExceeded {
		t.Fatalf("started on an ended deadline: %v", late.Err())
	}
}

// TestCoarseDeadline: a deadline asked for is honoured by the one set
// when that is not earlier and at most the slack later; otherwise it is
// replaced (by the asked one plus the slack); zero clears it.
func TestCoarseDeadline(t *testing.T) {
	const slack = time.Second
	now := time.Now()
	var cur time.Time
	if !coarseDeadline(&cur, now.Add(30*time.Second), slack) || !cur.Equal(now.Add(31*time.Second)) {
		t.Fatalf("first deadline: set %v", cur.Sub(now))
	}
	if coarseDeadline(&cur, now.Add(30*time.Second+500*time.Millisecond), slack) {
		t.Fatal("a deadline half a slack later replaced one that covers it")
	}
	if !coarseDeadline(&cur, now.Add(32*time.Second), slack) || !cur.Equal(now.Add(33*time.Second)) {
		t.Fatalf("a later deadline than the one set: %v", cur.Sub(now))
	}
	if !coarseDeadline(&cur, now.Add(10*time.Second), slack) || !cur.Equal(now.Add(11*time.Second)) {
		t.Fatalf("an earlier deadline (a shorter timeout) must replace it: %v", cur.Sub(now))
	}
	if !coarseDeadline(&cur, time.Time{}, slack) || !cur.IsZero() || coarseDeadline(&cur, time.Time{}, slack) {
		t.Fatal("clearing the deadline")
	}
}

// TestSharedDeadlineRemoveWaitsForEnd: a pipeline's remove from its
// shared deadline returns only once an endAll in progress has finished
// ending its context, so that the pipeline can be recycled
// (Router.pipelines). (The pause before the release only gives a remove that
// would not wait the time to return early; it decides nothing.)
func TestSharedDeadlineRemoveWaitsForEnd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	sd := &sharedDeadline{ctx: ctx, cancel: cancel}
	var c pipeCtx
	c.initShared(sd)
	entered, release := make(chan struct{}), make(chan struct{})
	var ended atomic.Bool
	c.AfterFunc(func() { // runs inside c.end
		close(entered)
		<-release
		ended.Store(true)
	})
	cancel()
	go sd.endAll()
	<-entered
	removed := make(chan bool)
	go func() {
		sd.remove(&c)
		removed <- ended.Load()
	}()
	time.Sleep(20 * time.Millisecond)
	close(release)
	if !<-removed {
		t.Fatal("remove returned while endAll was still ending the context")
	}
}
