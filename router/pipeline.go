package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	goruntime "runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/builtin"
	"github.com/doraproject/dora/router/fop"
	"github.com/doraproject/dora/router/origin"
)

// flow is one stage's output stream: the object, a step's response body or
// a built-in's result. Exactly one party closes body: the next stage that
// consumes it (through a one-shot URL, a built-in, or the client's
// response), or the pipeline's teardown when nobody claimed it.
type flow struct {
	body io.ReadCloser
	size int64 // -1: unknown
	mime string
	// object: the stream is the object itself (the first stage's input),
	// which pipeline.openObject opens afresh: it can be replayed to
	// another instance after the one that claimed it died. reopen, when
	// set, does the same for another input (a small one held in memory:
	// holdSmall).
	object bool
	reopen func() (flow, *httpError)
}

// replayable reports whether f can be opened afresh (reopenFlow).
func (f flow) replayable() bool { return f.object || f.reopen != nil }

// reopenFlow opens f's input afresh (replayable).
func (p *pipeline) reopenFlow(f flow) (flow, *httpError) {
	if f.object {
		return p.openObject()
	}
	return f.reopen()
}

func (f flow) contentType() string {
	if f.mime == "" {
		return "application/octet-stream"
	}
	return f.mime
}

// pipeline runs one request's steps. Each ufop step is a POST to an
// instance whose input is a one-shot URL serving the previous stage's
// stream; the steps are started in order (step i+1 once step i's response
// headers are in), so bodies flow concurrently through every stage while
// the router holds only buffers.
type pipeline struct {
	r      *Router
	reqid  string
	bucket bucketRef
	key    string

	mu     sync.Mutex // guards tokens and torn
	tokens []tokenFlow

	// The HTTP path's parts, kept here to spare allocations per request:
	// the client connection's watch (cancel.go; watched: added), the
	// response stream and the request it finishes.
	we   watchEntry
	out  countingBody
	rq   *request
	size int64

	// pc is the pipeline's own context (pipectx.go), which also watches
	// its steps' instance connections.
	pc pipeCtx

	// Room for the first opening of the object's stream and the first
	// step call's response body (a later one, a retry's included, takes
	// its own allocation: the first may still be referenced), so that a
	// one-step pipeline is one allocation; in0Used and sb0Used tell they
	// are taken.
	in0 inBody
	sb0 stepBody

	// The flags, side by side (no padding between them: the pipeline
	// stays in the 704-byte size class).
	torn bool
	// fellBack: a step ran on another version than the active one the
	// request was planned with (its ufop's previous version: blue/green;
	// or one that became active while the step waited), or the object
	// read is another version than the one stat'ed for the key, so the
	// result is not the one its cache key names (result.go).
	fellBack bool
	watched  bool
	// reusable: recycle may put the pipeline back in Router.pipelines
	// (cleared by whatever hands it to a party that may outlive the
	// response).
	reusable         bool
	in0Used, sb0Used bool
}

// bucketRef is what a pipeline needs of its bucket (dora.Bucket is twice
// its size): its name, owner and mirror.
type bucketRef struct{ name, owner, mirror string }

func refBucket(b dora.Bucket) bucketRef { return bucketRef{b.Name, b.Owner, b.Mirror} }

// value is the bucket as the origin helpers take it.
func (b bucketRef) value() dora.Bucket {
	return dora.Bucket{Name: b.name, Owner: b.owner, Mirror: b.mirror}
}

// newPipeline makes a pipeline whose context ends with parent (and
// release is called at its teardown, when set).
func newPipeline(r *Router, parent context.Context, release context.CancelFunc, reqid string, b dora.Bucket, key string) *pipeline {
	p := &pipeline{r: r, reqid: reqid, bucket: refBucket(b), key: key}
	p.pc.init(parent, release)
	return p
}

// newSharedPipeline makes a pipeline of the HTTP path, whose context ends
// with the shared deadline sd, from r.pipelines (recycle).
func newSharedPipeline(r *Router, sd *sharedDeadline, reqid string, b dora.Bucket, key string) *pipeline {
	p, _ := r.pipelines.Get().(*pipeline)
	if p == nil {
		p = new(pipeline)
	}
	p.r, p.reqid, p.bucket, p.key = r, reqid, refBucket(b), key
	// A mirror's Open may keep the context (an HTTP request's).
	p.reusable = r.objectsKeepNoContext && (b.Mirror == "" || r.cfg.Mirror == nil)
	p.pc.initShared(sd)
	return p
}

// noContextKeeper is an origin whose Open does not keep its context past
// the call (its streams never look at it): a pipeline whose object it
// opens may be recycled (origin/local's Dir is one). Go promotes the
// method through embedding: a type that embeds a keeper and overrides
// Open with one that keeps its context must not keep the marker (hide it
// with a field or method of the same name).
type noContextKeeper interface{ OpenKeepsNoContext() }

// recycle puts a pipeline whose response is over (bodyClosed: torn down,
// every stream closed, the request finished) back in r.pipelines, when
// nothing else can still reach it. Its context (&p.pc) and streams went
// only to parties that are done with them once the response is over: the
// origin's Open (noContextKeeper), the instance calls of the body mode
// (roundTrip, stepBody: closed), the client connection's watch (removed
// by teardown: connWatch.remove waits for a cancel in progress) and the
// shared deadline (pipeCtx.cancel's remove waits for endAll). Anything
// else clears reusable when it gets p: a one-shot input URL (the instance
// serving it may still read after the response), a built-in, saveas, a
// wait for an instance; and any call of the context's Done or AfterFunc
// (a goroutine waiting on it, a derived context: pc.exposed) keeps it out
// of the pool.
func (p *pipeline) recycle() {
	p.pc.mu.Lock()
	next, exposed := p.pc.nextFn, p.pc.exposed
	p.pc.mu.Unlock()
	if !p.reusable || exposed {
		return
	}
	r := p.r
	*p = pipeline{}
	// Registration ids stay unique across uses (belt and braces: a
	// pipeline whose AfterFunc was called is never recycled, so no stop
	// function of an earlier use exists).
	p.pc.nextFn = next
	r.pipelines.Put(p)
}

type tokenFlow struct {
	tok string
	in  flow
}

// teardown ends the pipeline: every read of its streams fails from now on,
// and inputs no instance claimed are closed here.
func (p *pipeline) teardown() {
	p.mu.Lock()
	if p.torn {
		p.mu.Unlock()
		return
	}
	p.torn = true
	toks := p.tokens
	p.tokens = nil
	p.mu.Unlock()
	if p.watched {
		p.r.watch.remove(&p.we)
	}
	p.pc.cancel()
	for _, t := range toks {
		if p.r.src.drop(t.tok) {
			t.in.body.Close()
		}
	}
}

// runPipeline opens the object, runs every stage and streams the last
// stage's output to the client (saving it too with saveas).
func (r *Router) runPipeline(rq *request, b dora.Bucket, key string, stages []stage, sa *fop.SaveAs) (bool, *httpError) {
	// The deadline is shared (deadline.go); the cancel is the pipeline's.
	p := newSharedPipeline(r, r.deadline.shared(rq.realStart()), rq.reqid, b, key)
	p.rq = rq
	// The client's hang-up cancels the pipeline (cancel.go), a held one
	// included, until the pipeline is torn down.
	p.we = watchEntry{conn: rq.ctx.Conn(), ctx: &p.pc}
	p.watched = true
	r.watch.add(&p.we)
	cur, _, herr := r.startPipeline(p, stages, sa)
	if herr != nil {
		return false, herr
	}
	ctx := rq.ctx
	if p.fellBack {
		// Not the result serveCached named (the planned active
		// versions'): no cache may keep it under that one's validator.
		ctx.Response.Header.Del("ETag")
		ctx.Response.Header.Del("Cache-Control")
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType(cur.contentType())
	if ctx.IsHead() {
		cur.body.Close()
		p.teardown()
		if cur.size >= 0 {
			ctx.Response.Header.SetContentLength(int(cur.size))
		}
		return false, nil
	}
	p.size = cur.size
	if p.size < 0 {
		p.size = -1
	}
	if rq.fill != nil {
		cur.body = rq.fill.capture(r, p, cur)
	}
	p.out = countingBody{rc: cur.body, r: r, done: p, size: p.size}
	ctx.Response.SetBodyStream(&p.out, int(p.size))
	return true, nil
}

// bodyClosed ends the HTTP path's pipeline once fasthttp closed the
// response stream (countingBody).
func (p *pipeline) bodyClosed(n int64, err error) {
	if err == errStreamPanicked {
		p.reusable = false
	}
	p.teardown()
	if err == nil && p.size >= 0 && n != p.size {
		err = io.ErrUnexpectedEOF
	}
	rq := p.rq
	p.rq = nil // recycled once finished (request)
	rq.finish(fasthttp.StatusOK, n, err)
	p.recycle() // p is not touched after this
}

// startPipeline opens the object and starts every stage in order (and the
// saveas tee when sa is set), returning the last stage's stream: the one
// engine behind both the HTTP path (runPipeline) and Process. pctx bounds
// the whole pipeline and cancel ends it (the caller builds p with both).
// On success the caller owns p and the stream: it closes the stream, then
// calls p.teardown. On failure everything is already torn down. tee is nil
// without saveas.
func (r *Router) startPipeline(p *pipeline, stages []stage, sa *fop.SaveAs) (_ flow, tee *teeBody, _ *httpError) {
	cur, herr := p.openObject()
	if herr != nil {
		p.teardown()
		return flow{}, nil, herr
	}
	for i, st := range stages {
		var herr *httpError
		if st.builtin {
			cur, herr = p.runBuiltin(i, st, cur)
		} else {
			cur, herr = p.runUfop(i, st, cur)
		}
		if herr != nil {
			p.teardown()
			return flow{}, nil, herr
		}
	}
	if sa != nil {
		cur, tee = p.saveAs(sa, cur)
	}
	return cur, tee, nil
}

// openObject opens the pipeline's object: the first stage's input.
func (p *pipeline) openObject() (flow, *httpError) {
	rc, obj, herr := p.r.openObject(&p.pc, p.bucket.value(), p.key)
	if herr != nil {
		return flow{}, herr
	}
	if p.rq != nil && p.rq.keyETag != "" && (obj.ETag != p.rq.keyETag || obj.MimeType != p.rq.keyMime) {
		// Overwritten (or its type changed) since the stat that named
		// the result's cache key: the result is not the key's.
		p.fellBack = true
	}
	var b *inBody
	if p.in0Used { // the first one may still be read (a replay)
		b = &inBody{rc: rc, r: p.r, ctx: &p.pc}
	} else {
		p.in0Used = true
		b = &p.in0
		*b = inBody{rc: rc, r: p.r, ctx: &p.pc}
	}
	return flow{body: b, size: obj.Size, mime: obj.MimeType, object: true}, nil
}

// heavySteps are the built-ins that decode a whole image or start a
// process (ffprobe): Config.MaxImageJobs of them run at once.
var heavySteps = map[string]bool{"imageView2": true, "imageMogr2": true, "watermark": true, "imageAve": true, "avinfo": true}

// DefaultMaxImageJobs is Config.MaxImageJobs' default: one per CPU the Go
// runtime uses, at least 2.
func DefaultMaxImageJobs() int { return max(2, goruntime.GOMAXPROCS(0)) }

// defaultImageWait bounds how long a heavy built-in step waits for a
// slot (Router.imageWait).
const defaultImageWait = 10 * time.Second

// takeImageJob takes a slot for step i, a heavy built-in (name), waiting
// up to r.imageWait or until ctx ends: 503 (Retry-After) when none frees.
func (r *Router) takeImageJob(ctx context.Context, i int, name string) *httpError {
	select {
	case r.imageJobs <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(r.imageWait)
	defer t.Stop()
	select {
	case r.imageJobs <- struct{}{}:
		return nil
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.Canceled) {
			return &httpError{status: StatusClientClosedRequest, msg: fmt.Sprintf("%s: cancelled", name), step: i}
		}
		return builtinError(i, name, ctx.Err())
	case <-t.C:
	}
	return &httpError{status: fasthttp.StatusServiceUnavailable, step: i, retryAfter: true,
		msg: fmt.Sprintf("%s: busy: the router's %d image and media operations are all in use", name, cap(r.imageJobs))}
}

// runBuiltin runs a built-in fop on the stream. The result owns its input:
// closing the result closes the input too.
func (p *pipeline) runBuiltin(i int, st stage, in flow) (flow, *httpError) {
	p.reusable = false // builtin.Run gets the context and may keep it
	if heavySteps[st.step.Name] {
		if herr := p.r.takeImageJob(&p.pc, i, st.step.Name); herr != nil {
			in.body.Close()
			return flow{}, herr
		}
		defer func() { <-p.r.imageJobs }()
	}
	start := time.Now()
	res, err := builtin.Run(&p.pc, st.step, builtin.Input{Body: in.body, Size: in.size, MimeType: in.mime, Env: p.builtinEnv()})
	p.r.metrics.step(st.step.Name, time.Since(start))
	if err != nil {
		in.body.Close()
		if se := (*streamError)(nil); errors.As(err, &se) {
			// The input broke (an earlier step's stream was cut): that
			// step failed, as when a ufop step reads it (inputError),
			// not this one.
			return flow{}, p.inputError(i, se)
		}
		return flow{}, builtinError(i, st.step.Name, err)
	}
	body := res.Body
	if body == nil {
		body = io.NopCloser(strings.NewReader(""))
	}
	size := res.Size
	if size < 0 {
		size = -1
	}
	return flow{body: &chainBody{ReadCloser: body, also: in.body}, size: size, mime: res.ContentType}, nil
}

// pickVersion chooses the version to call: the active one, or the previous
// one while the active has no healthy instance (blue/green).
func (p *pipeline) pickVersion(u dora.Ufop, now time.Time) (string, dora.Release, bool) {
	snap := p.r.meta.Snapshot()
	v := p.r.versionFor(u, now)
	if v == "" {
		return "", dora.Release{}, false
	}
	rel, ok := snap.Release(u.Name, v)
	if !ok {
		rel = dora.Release{Ufop: u.Name, Version: v}
	}
	if rel.Protocol == "" {
		rel.Protocol = dora.ProtocolDora
	}
	rel.Timeouts = rel.Timeouts.WithDefaults()
	return v, rel, true
}

// versionFor is the version a step of u takes now: the active one, or
// the previous one while the active one has no healthy instance and the
// previous one has; "" when u has neither.
func (r *Router) versionFor(u dora.Ufop, now time.Time) string {
	v := u.ActiveVersion
	if u.PreviousVersion != "" && (v == "" || r.cfg.Pool.HealthyAt(pool.Key{Ufop: u.Name, Version: v, Region: r.cfg.Region}, now) == 0) {
		if r.cfg.Pool.HealthyAt(pool.Key{Ufop: u.Name, Version: u.PreviousVersion, Region: r.cfg.Region}, now) > 0 {
			v = u.PreviousVersion
		}
	}
	return v
}

// versionMoves bounds how often one step starts over with another version
// (errVersionMoved) while it waits for an instance.
const versionMoves = 3

// runUfop calls one instance of the step's ufop with in as its input. The
// first attempt's host comes first: when the step has to wait for one
// (scale from zero) and the ufop's version moves meanwhile (a new active
// version, or the previous one healthy again), it starts over with the
// version it takes now, its input untouched.
func (p *pipeline) runUfop(i int, st stage, in flow) (flow, *httpError) {
	r := p.r
	var (
		version string
		rel     dora.Release
		key     pool.Key
		first   *pool.Host
	)
	planned := st.ufop.ActiveVersion // the version the cache key names
	for moves := 0; ; moves++ {
		var ok bool
		version, rel, ok = p.pickVersion(st.ufop, r.now())
		if !ok {
			in.body.Close()
			// Only its owner activating a version changes that: no
			// Retry-After inviting clients to retry in a loop.
			e := errf(fasthttp.StatusServiceUnavailable, "ufop %q has no active version: its owner makes one active with `qdoractl ufopver %s -c <version>`", st.ufop.Name, st.ufop.Name)
			e.step = i
			return flow{}, e
		}
		key = pool.Key{Ufop: st.ufop.Name, Version: version, Region: r.cfg.Region}
		var herr *httpError
		first, _, herr = p.nextHost(i, key, nil)
		if herr == errVersionMoved && moves < versionMoves {
			if u, ok := r.meta.Snapshot().Ufop(st.ufop.Name); ok {
				st.ufop = u
			}
			continue
		}
		if herr == errVersionMoved {
			herr = r.movedError(key, i)
		}
		if herr != nil {
			in.body.Close()
			return flow{}, herr
		}
		break
	}
	if version != planned {
		p.fellBack = true
	}
	if lim := rel.EffectiveBodyLimit(); rel.Protocol != dora.ProtocolUfop && in.size >= 0 && in.size <= lim {
		return p.runUfopBody(i, st, key, rel, in, first)
	}
	if !in.replayable() {
		// A previous step's output: hold it when it is small, so that it
		// can be replayed to another instance like the object.
		held, err := holdSmall(in, dora.DefaultBodyLimit)
		if err != nil {
			return flow{}, p.inputError(i, err)
		}
		in = held
	}
	// The instance serving the input may read it (checking the
	// context) after the response is over.
	p.reusable = false
	tok, entry, err := r.src.register(&p.pc, in, r.now().Add(r.cfg.SrcTTL))
	if err != nil {
		in.body.Close()
		return flow{}, &httpError{status: fasthttp.StatusInternalServerError, msg: "input url: " + err.Error(), step: i}
	}
	p.mu.Lock()
	p.tokens = append(p.tokens, tokenFlow{tok, in})
	p.mu.Unlock()

	var avoid *pool.Host
	var last *httpError
	h := first
	for attempt := range stepAttempts {
		if attempt > 0 {
			var waited bool
			var herr *httpError
			if h, waited, herr = p.nextHost(i, key, avoid); herr != nil {
				return flow{}, herr
			}
			if waited {
				r.src.extend(entry, r.now().Add(r.cfg.SrcTTL))
			}
		}
		out, retry, herr := p.call(i, st, h, key, rel, r.srcURL(h.Instance(), tok), nil, in)
		if herr == nil {
			return out, nil
		}
		last = herr
		if !retry || p.pc.Err() != nil {
			break
		}
		avoid = h
		if !entry.isClaimed() {
			if unanswered(herr) {
				// Closed without fetching its input: the program
				// never ran the request (not listening yet behind a
				// port forwarder, or dead behind one).
				h.ConnectFailed(r.now())
			}
			r.src.extend(entry, r.now().Add(r.cfg.SrcTTL))
			continue
		}
		// The instance took the input and failed before answering (it
		// died): replay the input to another instance when it can be
		// opened afresh.
		if !in.replayable() {
			break
		}
		fresh, rerr := p.reopenFlow(in)
		if rerr != nil {
			break
		}
		tok, entry, err = r.src.register(&p.pc, fresh, r.now().Add(r.cfg.SrcTTL))
		if err != nil {
			fresh.body.Close()
			break
		}
		p.mu.Lock()
		p.tokens = append(p.tokens, tokenFlow{tok, fresh})
		p.mu.Unlock()
		in = fresh
	}
	return flow{}, last
}

// stepAttempts bounds the calls of one step: the first and the retries
// after failures before any response (unreachable, connection closed
// without an answer). More than two, because the instance a retry picks can
// be failing too: while one of two instances is replaced, the dead one is
// still listed until its runtime notices, and its replacement is listed as
// soon as its port answers; behind a user-space port forwarder (podman's
// rootlessport) both accept connections and close them without a byte.
// Each such failure counts as a connect failure (pool ejection), so a host
// that keeps doing it leaves the rotation and the next attempt waits for a
// healthy one instead (holdForInstance).
const stepAttempts = 4

// pickRetry picks the host of a step's next attempt: another than avoid
// (the last one that failed), or avoid itself when no other is eligible (a
// keep-alive connection it had closed fails like a dead instance; a dead
// one refuses or closes the new connection, which ejects it in the end).
// nil: no host is eligible.
func (r *Router) pickRetry(key pool.Key, avoid *pool.Host) *pool.Host {
	h := r.cfg.Pool.Pick(key, avoid, r.now())
	if h == nil && avoid != nil {
		h = r.cfg.Pool.Pick(key, nil, r.now())
	}
	return h
}

// nextHost is the host of step i's next attempt on key (pickRetry). When
// nothing runs (scale from zero) or every instance is ejected (the ones
// that failed this request included), it waits for one, bounded (hold.go),
// and reports that it waited. For a first attempt (avoid nil) the wait can
// end in errVersionMoved; a retry gets the 503 of that instead.
func (p *pipeline) nextHost(i int, key pool.Key, avoid *pool.Host) (h *pool.Host, waited bool, herr *httpError) {
	if h = p.r.pickRetry(key, avoid); h != nil {
		return h, false, nil
	}
	p.reusable = false // the rare path: not worth proving what keeps the context
	if h, herr = p.r.holdForInstance(&p.pc, key, i); herr != nil {
		if herr == errVersionMoved && avoid != nil {
			herr = p.r.movedError(key, i)
		}
		return nil, false, herr
	}
	return h, true, nil
}

// runUfopBody calls a Dora-protocol step whose input is small and of known
// size: the input, read whole into memory (at most the release's body
// limit), is the POST body and no url= is given. The request is written
// completely before the response is read, and the limit fits the socket
// buffers, so a program that answers before reading its body cannot block
// the write. As in the url= mode, a step is retried once on another instance
// when the first failed before any response (unreachable, connection
// lost): the program is stateless by contract and the bytes are still
// here.
func (p *pipeline) runUfopBody(i int, st stage, key pool.Key, rel dora.Release, in flow, first *pool.Host) (flow, *httpError) {
	r := p.r
	body, bp, err := inputBytes(in)
	if err != nil {
		return flow{}, p.inputError(i, err)
	}
	defer releaseInput(in, bp)
	var avoid *pool.Host
	var last *httpError
	h := first
	for attempt := range stepAttempts {
		if attempt > 0 {
			var herr *httpError
			if h, _, herr = p.nextHost(i, key, avoid); herr != nil {
				return flow{}, herr
			}
		}
		out, retry, herr := p.call(i, st, h, key, rel, "", body, in)
		if herr == nil {
			return out, nil
		}
		last = herr
		if !retry || p.pc.Err() != nil {
			break
		}
		if unanswered(herr) {
			// Whether the program ran the request is unknown here (the
			// input was the body): counted as a failed connect all the
			// same, so an instance that keeps closing connections
			// leaves the rotation instead of failing every retry.
			h.ConnectFailed(r.now())
		}
		avoid = h
	}
	return flow{}, last
}

// unanswered reports whether a step's failure is its instance closing the
// connection before any byte of response (closedUnanswered).
func unanswered(e *httpError) bool { return e.cause != nil && closedUnanswered(e.cause) }

// inputError is the error of step i whose input could not be read.
func (p *pipeline) inputError(i int, err error) *httpError {
	if cerr := p.pc.Err(); cerr != nil {
		err = cerr
	}
	e := &httpError{status: fasthttp.StatusBadGateway, msg: "input: " + err.Error(), step: i}
	if errors.Is(err, context.Canceled) {
		e.status = StatusClientClosedRequest
	}
	var se *streamError
	if errors.As(err, &se) {
		e.step = se.step
	}
	return e
}

// heldBody is a replayable input held in memory (holdSmall).
type heldBody struct {
	*bytes.Reader
	b []byte
}

func (h heldBody) Close() error  { return nil }
func (h heldBody) Bytes() []byte { return h.b }

// heldFlow returns a flow reading b from the start, which reopens itself.
func heldFlow(b []byte, mime string) flow {
	f := flow{body: heldBody{Reader: bytes.NewReader(b), b: b}, size: int64(len(b)), mime: mime}
	f.reopen = func() (flow, *httpError) { return heldFlow(b, mime), nil }
	return f
}

// prefixBody is a stream whose first bytes were already read (holdSmall
// found it larger than its limit): them, then the rest.
type prefixBody struct {
	io.Reader
	rest io.Closer
}

func (p prefixBody) Close() error { return p.rest.Close() }

// holdSmall makes a step's input replayable when it is at most limit
// bytes: it reads it (a stream of unknown size: up to limit+1 bytes) into
// memory and returns a flow over the bytes with a reopen, the input being
// closed. A larger input is returned as it is, not replayable (without
// reading it when its size says so). On error the input is closed.
func holdSmall(in flow, limit int64) (flow, error) {
	if in.size > limit {
		return in, nil
	}
	if in.size >= 0 {
		b, bp, err := inputBytes(in)
		if err != nil {
			return flow{}, err
		}
		held := bytes.Clone(b)
		releaseInput(in, bp)
		return heldFlow(held, in.mime), nil
	}
	var buf bytes.Buffer
	_, err := io.CopyN(&buf, in.body, limit+1)
	switch {
	case err == io.EOF: // ended within the limit
		in.body.Close()
		return heldFlow(buf.Bytes(), in.mime), nil
	case err != nil:
		in.body.Close()
		return flow{}, err
	}
	// limit+1 bytes read: larger; it streams on, not replayable.
	return flow{body: prefixBody{Reader: io.MultiReader(&buf, in.body), rest: in.body}, size: -1, mime: in.mime}, nil
}

// memBody is a stream whose bytes are already in memory (an origin's
// cached small object, a step's response read at once): the body mode
// sends them without a copy. The bytes stay valid until Close.
type memBody interface {
	Bytes() []byte
}

// inputBufs are the buffers small inputs are read into for the body mode.
// (One byte more than the default limit: inputBytes reads the byte past
// the input into it.)
var inputBufs = sync.Pool{New: func() any { b := make([]byte, 0, dora.DefaultBodyLimit+1); return &b }}

// inputBytes returns in's whole content (in.size bytes), and the pooled
// buffer holding them (nil: they are the input's own): releaseInput frees
// both once the request carrying them is written. On error the input is
// closed and nothing is to be released.
func inputBytes(in flow) ([]byte, *[]byte, error) {
	if mb, ok := in.body.(memBody); ok {
		if b := mb.Bytes(); int64(len(b)) == in.size {
			return b, nil, nil
		}
	}
	bp := inputBufs.Get().(*[]byte)
	if int64(cap(*bp)) <= in.size { // one more byte: the end's check
		b := make([]byte, 0, in.size+1)
		bp = &b
	}
	buf := (*bp)[:in.size]
	n, err := io.ReadFull(in.body, buf)
	if err == nil {
		// The stream must end here: a longer one is not what its size
		// said. (The byte past the input in the buffer takes the read: a
		// local one would escape.)
		if m, _ := in.body.Read((*bp)[in.size : in.size+1]); m > 0 {
			err = errors.New("input longer than its size")
		}
	} else if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = fmt.Errorf("input truncated at %d of %d bytes: %w", n, in.size, io.ErrUnexpectedEOF)
	}
	in.body.Close()
	if err != nil {
		freeInput(bp)
		return nil, nil, err
	}
	return buf, bp, nil
}

// releaseInput frees what inputBytes returned: the pooled buffer, or the
// input whose own bytes were used (closed only now).
func releaseInput(in flow, bp *[]byte) {
	if bp == nil {
		in.body.Close()
		return
	}
	freeInput(bp)
}

func freeInput(bp *[]byte) {
	if cap(*bp) <= dora.MaxBodyLimit+1 {
		*bp = (*bp)[:0]
		inputBufs.Put(bp)
	}
}

// srcURL is the one-shot input URL of tok as instance inst reaches the
// router: PublicAddr, or its port at inst.RouterHost.
func (r *Router) srcURL(inst pool.Instance, tok string) string {
	addr := r.publicAddr()
	if inst.RouterHost != "" {
		if _, port, err := net.SplitHostPort(addr); err == nil {
			addr = net.JoinHostPort(inst.RouterHost, port)
		}
	}
	return "http://" + addr + srcPrefix + tok
}

// call sends one step to one instance. retry is true when the failure
// happened before the instance could have consumed its input.
//
// With body set (the body mode) the input is sent as the request body and
// srcURL is unused.
func (p *pipeline) call(i int, st stage, h *pool.Host, key pool.Key, rel dora.Release, srcURL string, body []byte, in flow) (flow, bool, *httpError) {
	r := p.r
	inst := h.Instance()
	ic := r.clients.get(inst.Addr, rel.Timeouts)
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.Header.SetMethod(fasthttp.MethodPost)
	// The request line is set as it is sent (origin form) and the Host
	// header apart: fasthttp then writes both without parsing a URI.
	req.Header.SetHost(inst.Addr)
	if rel.Protocol == dora.ProtocolUfop {
		req.Header.SetRequestURI("/uop")
		req.Header.SetContentType("application/json")
		body, err := json.Marshal(uopRequest{Cmd: st.step.Raw, Src: uopSrc{
			URL: srcURL, MimeType: in.contentType(), Fsize: max(in.size, 0), Bucket: p.bucket.name, Key: path.Base(p.key),
		}})
		if err != nil {
			return flow{}, false, &httpError{status: fasthttp.StatusInternalServerError, msg: err.Error(), step: i}
		}
		req.SetBodyRaw(body)
	} else if body != nil {
		var buf [512]byte
		req.Header.SetRequestURIBytes(handlerBodyURI(buf[:0], st.step.Raw))
		req.Header.SetContentType(in.contentType())
		req.SetBodyRaw(body)
	} else {
		var buf [512]byte
		req.Header.SetRequestURIBytes(handlerURI(buf[:0], st.step.Raw, srcURL))
		req.Header.SetContentLength(0)
	}
	req.Header.SetUserAgent("dora-router")
	req.Header.Set("X-Reqid", p.reqid)
	// The response goes back to fasthttp's pool once its body is closed
	// (stepBody.Close), or at once on failure.
	resp := fasthttp.AcquireResponse()

	lk := loadKey(key)
	h.Begin()
	start := time.Now()
	lc := r.load.begin(lk, r.nowAt(start))
	var sb *stepBody
	if p.sb0Used { // the first one may still be in use (a previous step's)
		sb = &stepBody{ctx: &p.pc, r: r, host: h, lc: lc, step: i}
	} else {
		p.sb0Used = true
		sb = &p.sb0
		*sb = stepBody{ctx: &p.pc, r: r, host: h, lc: lc, step: i}
	}
	sc, err := ic.roundTrip(&p.pc, &p.pc, &sb.conn, req, resp, start)
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		h.End()
		r.load.end(lc, r.now())
		switch {
		case isDialError(err):
			h.ConnectFailed(r.now())
			e := &httpError{status: fasthttp.StatusServiceUnavailable, msg: fmt.Sprintf("%s: instance unreachable", st.step.Name), step: i, retryAfter: true}
			return flow{}, true, e
		case errors.Is(err, context.Canceled):
			// The client left, the router is shutting down or Process
			// was cancelled: nobody waits for an answer (nginx's 499).
			return flow{}, false, &httpError{status: StatusClientClosedRequest, msg: fmt.Sprintf("%s: cancelled", st.step.Name), step: i}
		case errors.Is(err, errStepTimeout), errors.Is(err, context.DeadlineExceeded):
			return flow{}, false, &httpError{status: fasthttp.StatusGatewayTimeout, msg: fmt.Sprintf("%s: no response in time", st.step.Name), step: i}
		case errors.Is(err, errNoConn):
			return flow{}, true, &httpError{status: fasthttp.StatusServiceUnavailable, msg: fmt.Sprintf("%s: %v", st.step.Name, err), step: i, retryAfter: true}
		}
		if closedUnanswered(err) {
			// The instance took the connection and closed it without a
			// byte of answer: its other idle connections are as likely
			// closed (a dying or restarted program). The caller tells
			// the pool (unanswered).
			ic.hc.CloseIdleConnections()
		}
		return flow{}, true, &httpError{status: fasthttp.StatusBadGateway, msg: fmt.Sprintf("%s: %v", st.step.Name, err), step: i, cause: err}
	}
	h.Succeeded()
	r.metrics.step(st.step.Name, time.Since(start))
	size := int64(resp.Header.ContentLength())
	if size < 0 {
		size = -1
	}
	sb.rc, sb.resp, sb.sc, sb.size = resp.BodyStream(), resp, sc, size
	status := resp.StatusCode()
	if status < 200 || status > 299 {
		// The program's error is its own: status, type and body reach the
		// client unchanged (bounded); the step goes in X-Dora-Step.
		body, _ := io.ReadAll(io.LimitReader(sb, DefaultMaxErrorBytes))
		ct := string(resp.Header.ContentType())
		sb.Close()
		m := strings.TrimSpace(string(body))
		if m == "" {
			m = fmt.Sprintf("%s failed with status %d", st.step.Name, status)
		} else {
			m = st.step.Name + ": " + m
		}
		return flow{}, false, &httpError{status: status, msg: m, step: i, body: body, contentType: ct, ufop: st.step.Name}
	}
	// A step that keeps its input's type (most do) reuses its string.
	mime := in.mime
	if ct := resp.Header.ContentType(); string(ct) != mime {
		mime = string(ct)
	}
	return flow{body: sb, size: size, mime: mime}, false, nil
}

// closedUnanswered reports whether a round trip's error is the instance
// closing (or resetting) the connection before any byte of its response:
// fasthttp reports every failure on a response's first byte as io.EOF, a
// failed write of the request is a reset or a broken pipe.
func closedUnanswered(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// StatusClientClosedRequest is the status a request gets when it was
// cancelled before its answer (the client went away, the router shut
// down, Process's context ended): nginx's 499, which access logs and
// metrics show and no client sees.
const StatusClientClosedRequest = 499

// handlerURI appends the Dora protocol's request URI (origin form) to dst:
// /handler?cmd=<step>&url=<src>, both query-escaped.
func handlerURI(dst []byte, cmd, src string) []byte {
	dst = handlerBodyURI(dst, cmd)
	dst = append(dst, "&url="...)
	return appendQueryEscape(dst, src)
}

// handlerBodyURI appends the Dora protocol's request URI of the body mode:
// /handler?cmd=<step>, the input being the request body.
func handlerBodyURI(dst []byte, cmd string) []byte {
	dst = append(dst, "/handler?cmd="...)
	return appendQueryEscape(dst, cmd)
}

// appendQueryEscape appends s escaped as url.QueryEscape does, without
// allocating.
func appendQueryEscape(dst []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == '~':
			dst = append(dst, c)
		case c == ' ':
			dst = append(dst, '+')
		default:
			dst = append(dst, '%', hex[c>>4], hex[c&15])
		}
	}
	return dst
}

type uopRequest struct {
	Cmd string `json:"cmd"`
	Src uopSrc `json:"src"`
}

type uopSrc struct {
	URL      string `json:"url"`
	MimeType string `json:"mimetype"`
	Fsize    int64  `json:"fsize"`
	Bucket   string `json:"bucket"`
	Key      string `json:"key"`
}

// stepBody is an instance's response body, streamed from its connection
// or already in memory. Reads stop once the pipeline has ended; Close
// returns the connection to the keep-alive pool only after a complete read
// (else it is closed, which the instance sees as a cancelled request),
// returns the response to fasthttp's pool and ends the call's in-flight
// accounting.
type stepBody struct {
	rc     io.Reader // resp.BodyStream(); nil: empty body
	resp   *fasthttp.Response
	sc     *stepConn // the connection while the body streams from it (&conn)
	conn   stepConn  // room for sc
	size   int64     // Content-Length, -1 unknown
	n      int64
	ctx    context.Context
	r      *Router
	host   *pool.Host // the call's in-flight accounting, ended by Close
	lc     loadCall
	step   int // the step's 0-based index, carried by its read errors
	eof    bool
	err    error
	closed bool
}

// streamError is a step's failure after its response started: the stream
// broke or was truncated. Process reports its step index.
type streamError struct {
	step int
	err  error
}

func (e *streamError) Error() string { return fmt.Sprintf("step %d: %v", e.step, e.err) }
func (e *streamError) Unwrap() error { return e.err }

func (b *stepBody) Read(p []byte) (int, error) {
	if b.rc == nil || b.eof {
		b.eof = true
		return 0, io.EOF
	}
	if err := b.ctx.Err(); err != nil {
		b.err = err
		return 0, err
	}
	n, err := b.rc.Read(p)
	b.n += int64(n)
	b.r.metrics.bytesIn.Add(float64(n))
	switch {
	case err == io.EOF && b.size >= 0 && b.n != b.size,
		// A chunked body cut at a chunk boundary (the instance died)
		// also reads as a plain EOF: the connection's EOF tells.
		err == io.EOF && b.size < 0 && b.resp.Header.ContentLength() == -1 && b.sc != nil && peerClosed(b.sc.conn):
		// A connection closed before Content-Length bytes reads as a
		// plain EOF; a truncated step must fail the stream.
		err = &streamError{step: b.step, err: io.ErrUnexpectedEOF}
		b.err = err
	case err == io.EOF:
		b.eof = true
	case err != nil:
		if cerr := b.ctx.Err(); cerr != nil {
			err = cerr // the context's end closed the connection
		} else {
			err = &streamError{step: b.step, err: err}
		}
		b.err = err
	}
	return n, err
}

// Bytes returns the whole body when it was read at once and nothing of it
// was consumed yet (memBody), else nil. Valid until Close.
func (b *stepBody) Bytes() []byte {
	if br, ok := b.rc.(*bytes.Reader); ok && b.n == 0 && b.resp != nil && int64(br.Len()) == b.size {
		body := b.resp.Body()
		b.n = b.size
		b.eof = true
		b.r.metrics.bytesIn.Add(float64(len(body)))
		return body
	}
	return nil
}

var errAborted = errors.New("stream abandoned before its end")

func (b *stepBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	reuse := b.eof && !b.resp.ConnectionClose()
	b.resp.CloseBodyStream() // no read of the connection after this
	if b.sc != nil {
		b.sc.finish(reuse)
	}
	fasthttp.ReleaseResponse(b.resp)
	b.resp, b.rc = nil, nil
	b.host.End()
	b.r.load.end(b.lc, b.r.now())
	return nil
}

// inBody is the object stream read by the first stage.
type inBody struct {
	rc  io.ReadCloser
	r   *Router
	ctx context.Context
}

func (b *inBody) Read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := b.rc.Read(p)
	b.r.metrics.bytesIn.Add(float64(n))
	return n, err
}

func (b *inBody) Close() error { return b.rc.Close() }

// Bytes hands on the origin's in-memory bytes of a small object (memBody).
func (b *inBody) Bytes() []byte {
	if mb, ok := b.rc.(memBody); ok {
		body := mb.Bytes()
		b.r.metrics.bytesIn.Add(float64(len(body)))
		return body
	}
	return nil
}

// chainBody closes another stream after its own (a built-in's input).
type chainBody struct {
	io.ReadCloser
	also   io.Closer
	closed bool
}

func (c *chainBody) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	err := c.ReadCloser.Close()
	if err2 := c.also.Close(); err == nil {
		err = err2
	}
	return err
}

// saveAs tees the final stream into the Writer while the client reads it.
// The object appears only if the whole stream arrived: any failure (the
// stream's, the client's going away) aborts the Put's input with an error,
// and the Writer's temp-then-rename keeps the key untouched.
func (p *pipeline) saveAs(sa *fop.SaveAs, in flow) (flow, *teeBody) {
	p.reusable = false // the Put's goroutine has the context
	pr, pw := io.Pipe()
	done := make(chan putResult, 1)
	go func() {
		obj, err := p.r.cfg.Writer.Put(&p.pc, sa.Bucket, sa.Key, pr, origin.PutOptions{MimeType: in.mime})
		pr.CloseWithError(err) // unblock the writer side if Put stopped early
		done <- putResult{obj, err}
	}()
	t := &teeBody{in: in.body, pw: pw, done: done}
	return flow{body: t, size: in.size, mime: in.mime}, t
}

// putResult is the saveas Put's outcome.
type putResult struct {
	obj origin.Object
	err error
}

type teeBody struct {
	in       io.ReadCloser
	pw       *io.PipeWriter
	done     chan putResult
	finished bool
	closed   bool
	// saved is the stored object, set once the whole stream was saved.
	saved *origin.Object
}

func (t *teeBody) Read(p []byte) (int, error) {
	if t.finished {
		return 0, io.EOF
	}
	n, err := t.in.Read(p)
	if n > 0 {
		if _, werr := t.pw.Write(p[:n]); werr != nil {
			t.finished = true
			return 0, fmt.Errorf("saveas: %w", werr)
		}
	}
	switch {
	case err == io.EOF:
		t.finished = true
		t.pw.Close()
		res := <-t.done
		if res.err != nil {
			return n, fmt.Errorf("saveas: %w", res.err)
		}
		t.saved = &res.obj
		return n, io.EOF
	case err != nil:
		t.finished = true
		t.pw.CloseWithError(err)
		<-t.done
		return n, err
	}
	return n, nil
}

func (t *teeBody) Close() error {
	if t.closed {
		return nil
	}
	t.closed = true
	if !t.finished {
		t.finished = true
		t.pw.CloseWithError(errAborted)
		<-t.done
	}
	return t.in.Close()
}
