package router

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/meta"
	"github.com/doraproject/dora/router/origin"
)

// hotPaths are the router's usual requests, for the allocation checks:
// a plain object GET, one Dora step in the body mode, the same with the
// input fetched from its one-shot URL, three steps, and a result-cache
// hit. maxAllocs bounds the allocations of one request through the
// handler (the in-process instance and the one-shot URL's serving
// included), set just above what the router reaches: a regression fails
// TestHotPathAllocs.
var hotPaths = []struct {
	name, uri string
	maxAllocs float64
}{
	{"object", "/small", 3.5},
	{"body", "/small?passthru", 5.5},
	{"url", "/small?passurl", 11.5},
	{"3steps", "/small?passthru|passthru|passthru", 12.5},
	{"hit", "/small?cached", 0.5},
}

// hotRouter serves bucket photos (alice's) holding the 4 KiB object
// "small", with four ufops answered by one in-process instance
// (benchInstance): passthru (the body mode), passurl (url=, its body limit
// -1), cached (body mode, results cached), grow (body mode, a 16 MiB
// answer) and stall (64 KiB, then a byte every stallEvery). It serves on
// loopback (the one-shot URLs).
func hotRouter(tb testing.TB) *Router {
	r, _ := hotRouterWith(tb, nil)
	return r
}

// hotRouterWith is hotRouter with its Config modified by mod (when not
// nil); it returns the router's origin too.
func hotRouterWith(tb testing.TB, mod func(*Config)) (*Router, *memOrigin) {
	return hotRouterOpts(tb, mod, nil)
}

// hotRouterOpts is hotRouterWith whose router is also modified by modR
// (when not nil) before it serves.
func hotRouterOpts(tb testing.TB, mod func(*Config), modR func(*Router)) (*Router, *memOrigin) {
	objs := newMemOrigin()
	objs.add("photos", "small", "application/octet-stream", make([]byte, 4<<10))
	addr := benchInstance(tb)
	p := pool.New(pool.Options{})
	var insts []pool.Instance
	var ufops []dora.Ufop
	var rels []dora.Release
	for _, u := range []struct {
		name  string
		limit int64
		cache *dora.CachePolicy
	}{{"passthru", 0, nil}, {"passurl", -1, nil}, {"cached", 0, &dora.CachePolicy{Enabled: true, TTL: time.Hour}}, {"grow", 0, nil}, {"stall", 0, nil}} {
		insts = append(insts, pool.Instance{ID: u.name + "0", Ufop: u.name, Version: "v1", Region: dora.DefaultRegion, Addr: addr})
		ufops = append(ufops, dora.Ufop{Name: u.name, Owner: alice.ID, Mode: dora.ModePublic, ActiveVersion: "v1"})
		rels = append(rels, dora.Release{Ufop: u.name, Version: "v1", Protocol: dora.ProtocolDora, BodyLimit: u.limit, Cache: u.cache})
	}
	p.Update(insts)
	cfg := Config{
		Meta: staticMeta{meta.NewSnapshot(meta.Data{
			Accounts: []dora.Account{alice},
			Buckets:  []dora.Bucket{{Name: "photos", Owner: alice.ID}},
			Ufops:    ufops,
			Releases: rels,
		})},
		Objects: objs, Pool: p,
	}
	if mod != nil {
		mod(&cfg)
	}
	// The listener first: the one-shot URLs name it from the first
	// request on (Serve would fill PublicAddr only once it runs).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cfg.PublicAddr = ln.Addr().String()
	r, err := New(cfg)
	if err != nil {
		ln.Close()
		tb.Fatal(err)
	}
	if modR != nil {
		modR(r)
	}
	serveOn(tb, r, ln)
	return r, objs
}

// byteCounter counts what is written to it.
type byteCounter struct{ n int }

func (c *byteCounter) Write(p []byte) (int, error) { c.n += len(p); return len(p), nil }

// hotGet sends one GET of uri to h on ctx and reads the answer whole (as
// fasthttp's server would, closing its stream); it fails on anything but
// a 200 of the 4 KiB object.
func hotGet(h fasthttp.RequestHandler, ctx *fasthttp.RequestCtx, w *byteCounter, uri string) error {
	ctx.Request.Reset()
	ctx.Response.Reset()
	ctx.Request.SetRequestURI(uri)
	ctx.Request.Header.SetHost("photos.localhost")
	h(ctx)
	w.n = 0
	err := ctx.Response.BodyWriteTo(w)
	ctx.Response.CloseBodyStream()
	switch {
	case err != nil:
		return err
	case ctx.Response.StatusCode() != 200 || w.n != 4<<10:
		return fmt.Errorf("%s: status %d, %d bytes: %.200s", uri, ctx.Response.StatusCode(), w.n, ctx.Response.Body())
	}
	return nil
}

// BenchmarkHotPaths measures the allocations of the hot paths through
// the handler (no client connection): run with -benchmem. The in-process
// instance's and the one-shot URL's share is included.
func BenchmarkHotPaths(b *testing.B) {
	h := hotRouter(b).Handler()
	for _, hp := range hotPaths {
		b.Run(hp.name, func(b *testing.B) {
			var ctx fasthttp.RequestCtx
			var w byteCounter
			for range 3 { // the cache's fill, the connections
				if err := hotGet(h, &ctx, &w, hp.uri); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := hotGet(h, &ctx, &w, hp.uri); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestHotPathAllocs bounds the allocations per request of every hot path
// (hotPaths), with the collector off so that the pools keep what they
// hold (a collection empties them: the next requests then allocate).
func TestHotPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	h := hotRouter(t).Handler()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for _, hp := range hotPaths {
		var ctx fasthttp.RequestCtx
		var w byteCounter
		for range 3 {
			if err := hotGet(h, &ctx, &w, hp.uri); err != nil {
				t.Fatal(err)
			}
		}
		var failed error
		n := testing.AllocsPerRun(200, func() {
			if err := hotGet(h, &ctx, &w, hp.uri); err != nil && failed == nil {
				failed = err
			}
		})
		if failed != nil {
			t.Fatal(failed)
		}
		t.Logf("%s: %.1f allocations per request", hp.name, n)
		if n > hp.maxAllocs {
			t.Errorf("%s (%s): %.1f allocations per request, want at most %.1f", hp.name, hp.uri, n, hp.maxAllocs)
		}
	}
}

// TestRecycledRequestOutlivesHandler holds streamed responses (an object,
// a step's output in the url= and in the body mode) half read while many
// other requests run, so that the recycled request and pipeline state
// (Router.requests, Router.pipelines) would be reused under them if it were given
// back before the stream's end: each held stream must arrive whole and
// each request's access line must still carry its own request id, key,
// pipeline and byte count. Under -race, a reuse while the stream is read
// is also a data race.
func TestRecycledRequestOutlivesHandler(t *testing.T) {
	logs := newLifetimeLog()
	r, objs := hotRouterWith(t, func(c *Config) { c.Logger = slog.New(logs) })
	const bigSize = growSize // far more than the socket buffers hold; the grow answer too
	objs.add("photos", "big", "application/octet-stream", make([]byte, bigSize))
	base := "http://" + r.publicAddr()
	get := func(uri string) *http.Response {
		req, err := http.NewRequest(http.MethodGet, base+uri, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "photos.localhost"
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", uri, resp.StatusCode)
		}
		return resp
	}
	type slow struct {
		uri  string
		resp *http.Response
	}
	var held []slow
	for _, uri := range []string{"/big", "/big?passthru", "/big?passurl", "/small?grow"} {
		resp := get(uri)
		if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
			t.Fatal(err)
		}
		held = append(held, slow{uri, resp})
	}
	// Many requests while the streams are held: they take (and give
	// back) pooled requests.
	type fast struct{ reqid, uri string }
	var fasts []fast
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 64 {
		uri := hotPaths[i%len(hotPaths)].uri
		wg.Go(func() {
			resp := get(uri)
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != 4<<10 {
				t.Errorf("%s: %d bytes, %v", uri, n, err)
			}
			mu.Lock()
			fasts = append(fasts, fast{resp.Header.Get("X-Reqid"), uri})
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, s := range held {
		n, err := io.Copy(io.Discard, s.resp.Body)
		s.resp.Body.Close()
		if err != nil || n != bigSize-64<<10 {
			t.Fatalf("%s: %d more bytes, %v", s.uri, n, err)
		}
		l := logs.line(t, s.resp.Header.Get("X-Reqid"))
		key, pipeline, _ := strings.Cut(s.uri[1:], "?")
		if l.key != key || l.pipeline != pipeline || l.status != 200 || l.bytes != bigSize {
			t.Errorf("%s (reqid %s): access line %+v", s.uri, s.resp.Header.Get("X-Reqid"), l)
		}
	}
	for _, f := range fasts {
		l := logs.line(t, f.reqid)
		_, pipeline, _ := strings.Cut(f.uri, "?")
		if l.key != "small" || l.pipeline != pipeline || l.status != 200 || l.bytes != 4<<10 {
			t.Errorf("%s (reqid %s): access line %+v", f.uri, f.reqid, l)
		}
	}
}

// TestPipelineRecycleGuards: a pipeline goes back to Router.pipelines only
// when nothing can still reach its context: not after an AfterFunc
// registration on it (a derived context), a context derived from it after
// its end, or a call of its Done; not when its bucket has a
// mirror (whose Open may keep the context), not when the origin does not
// say it keeps none (noContextKeeper).
func TestPipelineRecycleGuards(t *testing.T) {
	r := hotRouter(t)
	b := dora.Bucket{Name: "photos", Owner: alice.ID}
	pipe := func(r *Router, b dora.Bucket) *pipeline {
		return newSharedPipeline(r, r.deadline.shared(time.Now()), "reqid", b, "small")
	}
	p := pipe(r, b)
	if !p.reusable {
		t.Fatal("a pipeline on a noContextKeeper origin is not reusable")
	}
	p.teardown()
	p.recycle()
	if p.r != nil {
		t.Fatal("a reusable pipeline was not recycled")
	}

	p = pipe(r, b)
	stop := context.AfterFunc(&p.pc, func() {})
	p.teardown()
	stop()
	p.recycle()
	if p.r == nil {
		t.Fatal("recycled although its context had an AfterFunc registration")
	}

	// A context derived once the pipeline's has ended registers nothing
	// (the context package cancels it at once) but keeps its parent, and
	// a party waiting on Done may still hold the context: neither is
	// recycled either.
	for name, use := range map[string]func(*pipeCtx){
		"a child made after the end": func(c *pipeCtx) { _, cancel := context.WithCancel(c); cancel() },
		"a wait on Done":             func(c *pipeCtx) { <-c.Done() },
	} {
		p = pipe(r, b)
		p.teardown()
		use(&p.pc)
		p.recycle()
		if p.r == nil {
			t.Fatalf("recycled after %s", name)
		}
	}

	mr, _ := hotRouterWith(t, func(c *Config) { c.Mirror = noMirror{} })
	if p := pipe(mr, dora.Bucket{Name: "photos", Owner: alice.ID, Mirror: "http://127.0.0.1:1/"}); p.reusable {
		t.Fatal("a pipeline of a mirrored bucket is reusable")
	}
	nr, _ := hotRouterWith(t, func(c *Config) { c.Objects = struct{ origin.Reader }{c.Objects} })
	if p := pipe(nr, b); p.reusable {
		t.Fatal("a pipeline on an origin that may keep the context is reusable")
	}
}

// noMirror is a MirrorSource that is never reached.
type noMirror struct{}

func (noMirror) At(string) origin.Reader { return nil }

// panicReader panics on its first Read.
type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("a bug in a stream") }
func (panicReader) Close() error             { return nil }

// TestPanickedStreamNotRecycled: fasthttp recovers a panic in a Read of
// the answer's stream and closes the stream afterwards (at the
// response's reset); the pipeline behind it, in whatever state the Read
// left it, is not recycled, and the access line says why the answer
// ended. Written through fasthttp's own Response.Write, as its server
// does.
func TestPanickedStreamNotRecycled(t *testing.T) {
	log := newLifetimeLog()
	r, _ := hotRouterWith(t, func(c *Config) { c.Logger = slog.New(log) })
	p := newSharedPipeline(r, r.deadline.shared(time.Now()), "reqid", dora.Bucket{Name: "photos", Owner: alice.ID}, "small")
	if !p.reusable {
		t.Fatal("the pipeline is not reusable to begin with: the test tells nothing")
	}
	var fctx fasthttp.RequestCtx
	fctx.Request.Header.SetMethod(fasthttp.MethodGet)
	rq := r.newRequest(&fctx, time.Now())
	rq.reqid = "panicked"
	p.rq = rq
	p.out = countingBody{rc: panicReader{}, r: r, done: p}
	fctx.Response.SetBodyStream(&p.out, 4096)
	rq.release() // the handler's reference: it has returned
	werr := fctx.Response.Write(bufio.NewWriter(io.Discard))
	var pe *fasthttp.ErrBodyStreamWritePanic
	if !errors.As(werr, &pe) {
		t.Fatalf("the write returned %v, not fasthttp's recovered panic", werr)
	}
	fctx.Response.Reset()
	if p.r == nil {
		t.Fatal("the pipeline whose stream panicked was recycled")
	}
	if l := log.line(t, "panicked"); l.err != errStreamPanicked.Error() {
		t.Fatalf("access line %+v: not the panic", l)
	}
}
