package router

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// deadlines hands out contexts that end Config.Deadline after a request's
// start, shared by the requests starting within one granule: a request
// gets a deadline between Deadline and Deadline + granule from now, and
// no timer or context of its own (context.WithTimeout per request costs a
// timer and four allocations on the hot path). The granule is a sixteenth
// of the deadline, at most a second.
type deadlines struct {
	parent  context.Context
	d       time.Duration
	granule time.Duration
	cur     atomic.Pointer[sharedDeadline]
	mu      sync.Mutex // serialises the creation of a new shared context
}

type sharedDeadline struct {
	ctx      context.Context
	deadline time.Time
	// cancel is never called early: requests still use the context. It
	// is kept so that the context's resources are owned somewhere; the
	// context ends by itself at its deadline (or with the parent).
	cancel context.CancelFunc

	// The pipelines' contexts hanging on this one (pipeCtx.initShared),
	// ended by endAll when it ends: an intrusive list, so that a
	// request's registration allocates nothing (a context.AfterFunc per
	// pipeline costs three allocations).
	mu    sync.Mutex
	head  *pipeCtx
	ended bool
}

// add registers c, to be ended with the shared context; false when that
// has already ended (c is not registered).
func (s *sharedDeadline) add(c *pipeCtx) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false
	}
	c.next, c.prev, c.listed = s.head, nil, true
	if s.head != nil {
		s.head.prev = c
	}
	s.head = c
	return true
}

// remove unregisters c (nothing when endAll has taken it already).
func (s *sharedDeadline) remove(c *pipeCtx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !c.listed {
		return
	}
	c.listed = false
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		s.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.next, c.prev = nil, nil
}

// endAll ends every registered context with the shared one's error.
func (s *sharedDeadline) endAll() {
	s.mu.Lock()
	s.ended = true
	first := s.head
	s.head = nil
	for c := first; c != nil; c = c.next {
		c.listed = false // remove leaves the detached list alone
	}
	s.mu.Unlock()
	err := s.ctx.Err()
	for c := first; c != nil; {
		next := c.next
		c.end(err)
		c = next
	}
}

func newDeadlines(parent context.Context, d time.Duration) *deadlines {
	return &deadlines{parent: parent, d: d, granule: min(d/16, time.Second)}
}

// get returns a context that ends between d and d + granule after now
// (the real clock: timers are real), or when the parent does.
func (s *deadlines) get(now time.Time) context.Context { return s.shared(now).ctx }

// shared returns the shared deadline get's context belongs to.
func (s *deadlines) shared(now time.Time) *sharedDeadline {
	want := now.Add(s.d)
	if c := s.cur.Load(); c != nil && !c.deadline.Before(want) && c.deadline.Sub(want) <= s.granule {
		return c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.cur.Load(); c != nil && !c.deadline.Before(want) && c.deadline.Sub(want) <= s.granule {
		return c
	}
	dl := want.Add(s.granule)
	ctx, cancel := context.WithDeadline(s.parent, dl)
	sd := &sharedDeadline{ctx: ctx, deadline: dl, cancel: cancel}
	context.AfterFunc(ctx, sd.endAll)
	s.cur.Store(sd)
	return sd
}
