package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// A one-shot input URL (`http://<PublicAddr>/_dora/src/<token>`) lets an
// instance read its input — the object, or the previous step's output as
// it arrives — from the router. The token is 128 random bits, valid for
// Config.SrcTTL and for one GET only. Claiming it hands the stream over to
// the serving request: from then on fasthttp closes it when that response
// ends, which is what keeps every stream with exactly one owner.
//
// Choice (issue item 5): Dora steps get `url=` too, with an empty request
// body. Sending the input as the request body would need the instance to
// read its body while writing its response (full duplex), which many HTTP
// servers — Go's net/http among them, by default — do not do; a url= input
// streams for every program, and both protocols share one code path.

// srcEntry is one registered input stream.
type srcEntry struct {
	in      flow
	ctx     context.Context // the pipeline's: reads fail once it ends
	expires time.Time       // guarded by srcRegistry.mu
	claimed chan struct{}   // closed when claimed
}

type srcRegistry struct {
	mu sync.Mutex
	m  map[string]*srcEntry
}

func newSrcRegistry() *srcRegistry { return &srcRegistry{m: map[string]*srcEntry{}} }

// register stores the input stream under a new token.
func (s *srcRegistry) register(ctx context.Context, in flow, expires time.Time) (string, *srcEntry, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", nil, err
	}
	tok := hex.EncodeToString(b[:])
	e := &srcEntry{in: in, ctx: ctx, expires: expires, claimed: make(chan struct{})}
	s.mu.Lock()
	s.m[tok] = e
	s.mu.Unlock()
	return tok, e, nil
}

// claim removes and returns the entry when it exists and has not expired.
func (s *srcRegistry) claim(tok string, now time.Time) (*srcEntry, bool) {
	s.mu.Lock()
	e, ok := s.m[tok]
	var expired bool
	if ok {
		delete(s.m, tok)
		// extend writes expires under the lock (a retried step), maybe
		// at this very moment: read it under the lock too.
		expired = now.After(e.expires)
	}
	s.mu.Unlock()
	if !ok {
		return nil, false
	}
	close(e.claimed)
	if expired {
		e.in.body.Close() // expired: nobody else owns it any more
		return nil, false
	}
	return e, true
}

// peek returns the entry without claiming it (HEAD).
func (s *srcRegistry) peek(tok string, now time.Time) (*srcEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[tok]
	if !ok || now.After(e.expires) {
		return nil, false
	}
	return e, true
}

// drop removes an unclaimed entry and reports whether it did (then the
// caller owns the stream again and must close it).
func (s *srcRegistry) drop(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[tok]; ok {
		delete(s.m, tok)
		return true
	}
	return false
}

// isClaimed reports whether the entry has been handed to a reader.
func (e *srcEntry) isClaimed() bool {
	select {
	case <-e.claimed:
		return true
	default:
		return false
	}
}

// extend pushes an unclaimed entry's expiry (a retried step).
func (s *srcRegistry) extend(e *srcEntry, expires time.Time) {
	s.mu.Lock()
	e.expires = expires
	s.mu.Unlock()
}

func (s *srcRegistry) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// serveSrc streams a registered input to the instance that claims it.
func (r *Router) serveSrc(rq *request, tok string) {
	ctx := rq.ctx
	rq.pipeline = "_src"
	if !ctx.IsGet() && !ctx.IsHead() {
		rq.fail(errf(fasthttp.StatusMethodNotAllowed, "method not allowed"))
		rq.finish(ctx.Response.StatusCode(), 0, nil)
		return
	}
	now := r.now()
	if ctx.IsHead() {
		e, ok := r.src.peek(tok, now)
		if !ok {
			rq.fail(errf(fasthttp.StatusNotFound, "unknown, used or expired input URL"))
		} else {
			ctx.SetContentType(e.in.contentType())
			if e.in.size >= 0 {
				ctx.Response.Header.SetContentLength(int(e.in.size))
			}
		}
		rq.finish(ctx.Response.StatusCode(), 0, nil)
		return
	}
	e, ok := r.src.claim(tok, now)
	if !ok {
		rq.fail(errf(fasthttp.StatusNotFound, "unknown, used or expired input URL"))
		rq.finish(ctx.Response.StatusCode(), 0, nil)
		return
	}
	ctx.SetContentType(e.in.contentType())
	size := e.in.size
	if size < 0 {
		size = -1
	}
	// The body is rq's own: fasthttp lets go of it in CloseWithError,
	// before finish recycles rq.
	rq.src = srcBody{e: e, rq: rq}
	ctx.Response.SetBodyStream(&rq.src, int(size))
}

// srcBody is a claimed input as a response body: reads stop once the
// pipeline has ended, and CloseWithError closes the input stream (its owner now)
// and finishes the serving request.
type srcBody struct {
	e      *srcEntry
	n      int64
	err    error
	closed bool
	rq     *request
}

func (b *srcBody) Read(p []byte) (int, error) {
	if size := b.e.in.size; size >= 0 && b.n >= size {
		// All of it is sent (fasthttp reads on until EOF): the
		// pipeline may have ended since (its instance answered once it
		// had the input), which is no failure of this answer.
		return 0, io.EOF
	}
	if err := b.e.ctx.Err(); err != nil {
		b.err = err
		return 0, err
	}
	n, err := b.e.in.body.Read(p)
	b.n += int64(n)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// CloseWithError is fasthttp's close of the answer (see
// countingBody.CloseWithError, and why there is no Close): werr, the
// failed write's error (the instance hung up), is reported unless a read
// error already is.
func (b *srcBody) CloseWithError(werr error) error {
	if b.closed {
		return nil
	}
	b.closed = true
	if b.err == nil {
		b.err = werr
	}
	err := b.e.in.body.Close()
	b.rq.finish(fasthttp.StatusOK, b.n, b.err) // may recycle b: not touched after
	return err
}

// WriteTo implements io.WriterTo (see writeTo).
func (b *srcBody) WriteTo(w io.Writer) (int64, error) { return writeTo(w, b) }
