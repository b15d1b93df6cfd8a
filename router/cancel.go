package router

import (
	"net"
	"sync"
	"time"
)

// Cancellation of the HTTP path. fasthttp runs a handler in the goroutine
// that serves its connection and reads nothing more from it meanwhile, so
// unlike net/http it never notices a client that hangs up while a pipeline
// waits for an instance. The router watches instead: every in-flight
// pipeline registers its client connection with connWatch, one goroutine
// peeks at all of them every watchPoll (a non-blocking MSG_PEEK that leaves
// pipelined bytes for fasthttp) and cancels the pipeline of a connection
// its peer closed. A cancelled pipeline's context closes its instance
// connections (stepConn), so the instances see their requests cancelled.
//
// As with net/http, a client that half-closes its side after sending the
// request (shutdown(SHUT_WR)) is taken for gone.

// watchPoll is how often connWatch looks at the watched connections.
const watchPoll = 100 * time.Millisecond

// connWatch cancels the pipelines whose client connection closed. Its
// goroutine runs only while something is watched.
type connWatch struct {
	mu      sync.Mutex
	m       map[*watchEntry]struct{}
	running bool
	poll    time.Duration
	scratch []*watchEntry // the loop's copy of m, reused
}

// watchEntry is one watched pipeline: ctx is cancelled when conn's peer
// has closed it. Once remove has returned, the loop no longer touches the
// entry (the pipeline holding it may be recycled): the loop takes mu
// while the entry is in the map, looks at it and cancels it under mu, and
// remove marks it removed under mu.
type watchEntry struct {
	conn net.Conn
	ctx  interface{ cancel() }

	mu      sync.Mutex
	removed bool
}

func newConnWatch(poll time.Duration) *connWatch {
	return &connWatch{m: map[*watchEntry]struct{}{}, poll: poll}
}

// add watches e until remove. Connections connClosed cannot inspect (not
// a socket) are not watched.
func (w *connWatch) add(e *watchEntry) {
	if e.conn == nil {
		return
	}
	e.removed = false // e is not in the map: nobody else looks at it
	w.mu.Lock()
	w.m[e] = struct{}{}
	start := !w.running
	w.running = true
	w.mu.Unlock()
	if start {
		go w.loop()
	}
}

// remove stops watching e: when it returns, the loop has finished with e
// (a cancel it started has returned) and will not look at it again.
func (w *connWatch) remove(e *watchEntry) {
	w.mu.Lock()
	delete(w.m, e)
	w.mu.Unlock()
	e.mu.Lock()
	e.removed = true
	e.mu.Unlock()
}

func (w *connWatch) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.m)
}

// loop peeks at every watched connection each poll and exits when nothing
// is watched any more.
func (w *connWatch) loop() {
	t := time.NewTicker(w.poll)
	defer t.Stop()
	for range t.C {
		w.mu.Lock()
		if len(w.m) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		es := w.scratch[:0]
		for e := range w.m {
			es = append(es, e)
		}
		w.scratch = es
		w.mu.Unlock()
		for i, e := range es {
			w.check(e)
			es[i] = nil
		}
	}
}

// check cancels e's pipeline when its client connection has closed,
// unless e was removed meanwhile. e is the loop's copy of a key of m: its
// memory is only touched while it is still watched (in m, under mu), as
// it may since have been removed and reused for another pipeline, whose
// add wrote it before putting it in m.
func (w *connWatch) check(e *watchEntry) {
	w.mu.Lock()
	if _, ok := w.m[e]; !ok { // hashes the pointer: reads nothing of e
		w.mu.Unlock()
		return
	}
	e.mu.Lock() // before w.mu is let go: remove waits for it
	w.mu.Unlock()
	defer e.mu.Unlock()
	if e.removed || !connClosed(e.conn) {
		return
	}
	e.removed = true
	w.mu.Lock()
	delete(w.m, e)
	w.mu.Unlock()
	e.ctx.cancel()
}
