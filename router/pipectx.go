package router

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// pipeCtx is a pipeline's context: its parent's deadline and values, ended
// by cancel or by the parent's end, and at its end it closes the instance
// connections of the steps in flight (watchConn), which aborts their reads
// and writes and tells the instances their requests are cancelled.
//
// It lives inside the pipeline, so that a request pays for one
// registration with its parent (the shared deadline context) and nothing
// per step, where context.WithCancel plus a context.AfterFunc per call
// cost about ten allocations and as many lock round trips. It implements
// the AfterFunc method the context package looks for, so children
// (WithCancel, WithTimeout, context.AfterFunc) hang on it without a
// goroutine of their own.
//
// context.Cause of a pipeCtx ended before its parent is nil, not its
// error (the context package finds its parent's cause); nothing in the
// router asks for it.
type pipeCtx struct {
	parent     context.Context
	stopParent func() bool
	release    context.CancelFunc // the parent's, when the pipeline owns it (Process)

	// shared is the parent when it is a shared deadline (initShared):
	// its list of contexts to end, guarded by its mu.
	shared     *sharedDeadline
	next, prev *pipeCtx
	listed     bool

	state atomic.Int32 // live, or how it ended: errCanceled, errDeadline, errOther

	mu          sync.Mutex
	err         error // errOther's error
	done        chan struct{}
	fns         []afterFn
	nextFn      uint64
	conns       []*stepConn
	connBuf     [3]*stepConn
	connsClosed bool
	// exposed: Done or AfterFunc was called, so something (a goroutine
	// waiting on Done, a derived context, f) may look at the context
	// past its pipeline's end: the pipeline is not recycled
	// (pipeline.recycle). A context derived after the end registers
	// nothing, but asks for Done first.
	exposed bool
}

// States of a pipeCtx.
const (
	ctxLive = iota
	errCanceled
	errDeadline
	errOther
)

type afterFn struct {
	id uint64
	f  func()
}

// init starts the context under parent (release, when set, is called at
// the end: the parent is the pipeline's own).
func (c *pipeCtx) init(parent context.Context, release context.CancelFunc) {
	c.parent, c.release = parent, release
	if err := parent.Err(); err != nil {
		c.end(err)
		return
	}
	if parent.Done() != nil {
		c.stopParent = context.AfterFunc(parent, c.parentDone)
	}
}

// initShared starts the context under a shared deadline, registered in
// its list rather than with context.AfterFunc (no allocation).
func (c *pipeCtx) initShared(sd *sharedDeadline) {
	c.parent, c.shared = sd.ctx, sd
	if !sd.add(c) {
		c.end(sd.ctx.Err())
	}
}

func (c *pipeCtx) parentDone() { c.end(c.parent.Err()) }

// cancel ends the context (context.Canceled) and lets go of its parent.
func (c *pipeCtx) cancel() {
	c.end(context.Canceled)
	if c.shared != nil {
		c.shared.remove(c)
	}
	if c.stopParent != nil {
		c.stopParent()
	}
	if c.release != nil {
		c.release()
	}
}

// end ends the context with err (once): Done closes, the connections in
// flight are closed and the registered functions run.
func (c *pipeCtx) end(err error) {
	c.mu.Lock()
	if c.state.Load() != ctxLive {
		c.mu.Unlock()
		return
	}
	st := int32(errOther)
	switch err {
	case context.Canceled:
		st = errCanceled
	case context.DeadlineExceeded:
		st = errDeadline
	default:
		c.err = err
	}
	c.state.Store(st)
	if c.done == nil {
		c.done = closedChan
	} else {
		close(c.done)
	}
	fns, conns := c.fns, c.conns
	c.fns, c.conns, c.connsClosed = nil, nil, true
	c.mu.Unlock()
	for _, s := range conns {
		s.conn.Close()
	}
	for _, a := range fns {
		a.f()
	}
}

// Deadline is the parent's.
func (c *pipeCtx) Deadline() (time.Time, bool) { return c.parent.Deadline() }

// Value is the parent's.
func (c *pipeCtx) Value(key any) any { return c.parent.Value(key) }

// Done is closed once the context has ended.
func (c *pipeCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exposed = true
	if c.done == nil {
		c.done = make(chan struct{})
	}
	return c.done
}

// Err is nil while the context lives, then why it ended.
func (c *pipeCtx) Err() error {
	switch c.state.Load() {
	case ctxLive:
		return nil
	case errCanceled:
		return context.Canceled
	case errDeadline:
		return context.DeadlineExceeded
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// AfterFunc runs f once the context has ended (at once, in a goroutine,
// when it has already); stop unregisters f and reports whether it did so
// before f was started. The context package registers children this way.
func (c *pipeCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	id := c.nextFn
	c.nextFn++
	c.exposed = true // also when ended: f may still run
	if c.state.Load() != ctxLive {
		c.mu.Unlock()
		// The caller may hold locks f takes (the context package does).
		go f()
		return func() bool { return false }
	}
	c.fns = append(c.fns, afterFn{id, f})
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, a := range c.fns {
			if a.id == id {
				c.fns = slices.Delete(c.fns, i, i+1)
				return true
			}
		}
		return false
	}
}

// watchConn watches a step's connection until unwatchConn (connWatcher):
// false when the context has already ended.
func (c *pipeCtx) watchConn(s *stepConn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.connsClosed {
		return false
	}
	if c.conns == nil {
		c.conns = c.connBuf[:0]
	}
	c.conns = append(c.conns, s)
	return true
}

// unwatchConn stops watching s; false when the context's end closed it.
func (c *pipeCtx) unwatchConn(s *stepConn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.conns {
		if x == s {
			c.conns = slices.Delete(c.conns, i, i+1)
			return true
		}
	}
	return false
}
