package router

import (
	"context"
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
