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
}

func newDeadlines(parent context.Context, d time.Duration) *deadlines {
	return &deadlines{parent: parent, d: d, granule: min(d/16, time.Second)}
}

// get returns a context that ends between d and d + granule after now
// (the real clock: timers are real), or when the parent does.
func (s *deadlines) get(now time.Time) context.Context {
	want := now.Add(s.d)
	if c := s.cur.Load(); c != nil && !c.deadline.Before(want) && c.deadline.Sub(want) <= s.granule {
		return c.ctx
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.cur.Load(); c != nil && !c.deadline.Before(want) && c.deadline.Sub(want) <= s.granule {
		return c.ctx
	}
	dl := want.Add(s.granule)
	ctx, cancel := context.WithDeadline(s.parent, dl)
	s.cur.Store(&sharedDeadline{ctx: ctx, deadline: dl, cancel: cancel})
	return ctx
}
