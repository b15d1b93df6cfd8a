package router

import (
	"crypto/sha256"
	"encoding/base64"
	"hash/maphash"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/router/fop"
	"github.com/doraproject/dora/router/meta"
	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/rescache"
)

// The result cache (Qiniu serves fop results through its CDN). A
// pipeline's output is kept in memory (router/rescache) under a key naming
// everything it depends on: the bucket, the key and the object's etag, the
// pipeline text and each ufop step's active version. An overwritten object
// (a new etag) or a new active version makes a new key; a deleted ufop
// fails the plan (404) before the cache is looked at, and so does a
// private bucket's missing or bad token (401). A hit never reaches an
// instance.
//
// Only pipelines whose every ufop's active release opts in (cache: in
// dora.yaml) are cached, for the shortest TTL among them; built-ins are
// cacheable by default, but for an image watermark (its result depends on
// another object: readsOtherObject). A pipeline with saveas is never
// cached (it writes), nor one where a step ran on its previous version
// (blue/green), nor a result larger than Config.ResultCacheEntry, nor one
// of an object only a mirror has.
//
// Cacheable responses carry ETag (a digest of the cache key), Cache-Control
// (public or private after the bucket, max-age the TTL), Age on a hit, and
// X-Dora-Cache: hit or miss; If-None-Match against a cached result answers
// 304.
//
// A hit of a URL already answered this way skips the request's
// resolution (serveHot, hotRoutes): only the object's stat, the lookup and
// the response run per request.

// cacheFill is a miss whose result is to be stored once complete.
type cacheFill struct {
	key     string
	etag    string
	ttl     time.Duration
	created time.Time
}

// serveCached answers a cacheable pipeline from the cache (done), or marks
// the request so that runPipeline stores its result. Not cacheable, or a
// miss: done is false and the pipeline runs. streaming is true when the
// answer streams from the disk tier (its Close finishes the request).
// hot tells that nothing else of the request shapes its answer (no
// attname=): the route is then remembered for serveHot.
func (r *Router) serveCached(rq *request, snap *meta.Snapshot, b dora.Bucket, key string, stages []stage, hot bool) (done, streaming bool, _ *httpError) {
	if r.results == nil {
		return false, false, nil
	}
	ttl, ok := cachePolicy(snap, stages)
	if !ok {
		return false, false, nil
	}
	// Only objects of the local origin: a mirror's would cost a remote
	// stat on every request (and the pipeline answers its 404s).
	obj, err := r.cfg.Objects.Stat(r.deadline.get(rq.realStart()), b.Name, key)
	if err != nil || obj.ETag == "" {
		return false, false, nil
	}
	// Remembered once its object is there: a route whose stat fails would
	// cost each request a second stat on the full path.
	if hot && !b.Private {
		r.hot.remember(rq, snap, r.public.Load(), b.Name, key, stages, ttl, r.cacheControl(false, ttl))
	}
	// The key is built on the stack and a memory hit allocates nothing.
	var kb [512]byte
	ck := appendCacheKey(kb[:0], b.Name, key, &obj, rq.pipeline, stages)
	now := rq.start
	if e, ok := r.results.GetBytes(ck, now); ok {
		cc := headerValue(r.cacheControl(b.Private, e.Expires.Sub(e.Created)))
		return true, r.writeHit(rq, e, cc, now), nil
	}
	ctx := rq.ctx
	h := &ctx.Response.Header
	cks := string(ck)
	etag := resultETag(cks)
	rq.keyETag, rq.keyMime = obj.ETag, obj.MimeType
	h.SetCanonical(hdrXDoraCache, valMiss)
	h.SetCanonical(hdrETag, headerValue(etag))
	h.SetCanonical(hdrCacheControl, headerValue(r.cacheControl(b.Private, ttl)))
	if listsTag(&ctx.Request.Header, etag) {
		// The tag names the key, not an entry: the client holds this
		// very result (an entry since expired or evicted, or another
		// router's), so it is not computed again (RFC 9110 13.1.2).
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return true, false, nil
	}
	if !ctx.IsHead() {
		rq.fill = &cacheFill{key: cks, etag: etag, ttl: ttl, created: now}
	}
	return false, false, nil
}

// Canonical header names and fixed values of cached answers (and the
// request id every answer carries), set with SetCanonical: no normalising
// copy per response. The names are in fasthttp's normal form (what Set,
// Peek and Del turn any spelling into), so that the other calls find
// them.
var (
	hdrXReqid       = []byte("X-Reqid")
	hdrXDoraCache   = []byte("X-Dora-Cache")
	hdrETag         = []byte("Etag") // fasthttp's form: Del("ETag") (writeError) finds it
	hdrCacheControl = []byte("Cache-Control")
	hdrAge          = []byte("Age")
	hdrLastModified = []byte("Last-Modified")
	hdrIfNoneMatch  = []byte("If-None-Match")
	valHit          = []byte("hit")
	valMiss         = []byte("miss")
)

// headerValue is s's bytes for a header setter, which copies them (they
// must not be written: a string's bytes are immutable).
func headerValue(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// writeHit answers rq with the cache's entry e found at now: its
// validators, cc (its Cache-Control) and age, 304 to a matching If-None-Match, the bytes (a memory
// entry's without a copy) or, from the disk tier, a stream; streaming is
// true then (its Close finishes the request).
func (r *Router) writeHit(rq *request, e rescache.Hit, cc []byte, now time.Time) (streaming bool) {
	ctx := rq.ctx
	h := &ctx.Response.Header
	h.SetCanonical(hdrXDoraCache, valHit)
	h.SetCanonical(hdrETag, headerValue(e.ETag))
	h.SetCanonical(hdrCacheControl, cc)
	// Never negative: a request may have started before the entry was
	// made (another request filled it meanwhile), or the wall clock may
	// have stepped back since a disk entry was written.
	h.SetCanonical(hdrAge, strconv.AppendInt(rq.ageBuf[:0], int64(max(now.Sub(e.Created), 0)/time.Second), 10))
	if ifNoneMatch(&ctx.Request.Header, e.ETag) {
		closeHit(e)
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return false
	}
	ctx.SetContentType(e.MimeType)
	if ctx.IsHead() {
		closeHit(e)
		h.SetContentLength(int(e.Size))
		return false
	}
	if e.Body == nil {
		ctx.Response.SetBodyRaw(e.Data)
		return false
	}
	// A result of the disk tier streams from its file.
	ctx.Response.SetBodyStream(rq.stream(e.Body, fasthttp.StatusOK, e.Size), int(e.Size))
	return true
}

// ifNoneMatch tells whether the request's If-None-Match names etag (or
// is "*"): the cached result's 304. A result has no Last-Modified, so
// If-Modified-Since is not looked at.
func ifNoneMatch(h *fasthttp.RequestHeader, etag string) bool {
	inm := h.PeekBytes(hdrIfNoneMatch)
	if len(inm) == 0 {
		return false
	}
	return notModified(h, etag, time.Time{})
}

// listsTag tells whether the request's If-None-Match lists etag itself
// (weakly compared), "*" not counting: on a miss no result is known to
// exist until the pipeline has run.
func listsTag(h *fasthttp.RequestHeader, etag string) bool {
	inm := h.PeekBytes(hdrIfNoneMatch)
	if len(inm) == 0 {
		return false
	}
	for c := range strings.SplitSeq(b2s(inm), ",") {
		if strings.TrimPrefix(strings.TrimSpace(c), "W/") == etag {
			return true
		}
	}
	return false
}

// serveHot answers a request for a route remembered from this snapshot
// (hotRoutes) when its result is in the cache: the host, bucket, query
// parse, plan and cache policy are not worked out again. The object is
// still revalidated (its etag is in the key) on every request. It reports
// false, having answered nothing, for anything else (not a remembered
// route, another snapshot, a miss), which then takes the full path.
func (r *Router) serveHot(rq *request, snap *meta.Snapshot) bool {
	if r.results == nil {
		return false
	}
	ctx := rq.ctx
	if !ctx.IsGet() && !ctx.IsHead() {
		return false
	}
	rt, slot := r.hot.lookup(ctx, snap, r.public.Load())
	if rt == nil {
		return false
	}
	obj, err := r.cfg.Objects.Stat(r.deadline.get(rq.realStart()), rt.bucket, rt.key)
	if err != nil || obj.ETag == "" {
		// Forgotten until the full path finds the object again, so that
		// a gone object's requests do not stat twice.
		slot.CompareAndSwap(rt, nil)
		return false
	}
	var kb [512]byte
	ck := append(appendKeyHead(kb[:0], rt.bucket, rt.key, &obj), rt.tail...)
	e, ok := r.results.GetBytes(ck, rq.start)
	if !ok {
		return false
	}
	rq.bucket, rq.key, rq.pipeline, rq.names = rt.bucket, rt.key, rt.pipeline, rt.names
	cc := rt.cc
	if ttl := e.Expires.Sub(e.Created); ttl != rt.ttl { // stored under another TTL
		cc = headerValue(r.cacheControl(false, ttl))
	}
	if !r.writeHit(rq, e, cc, rq.start) {
		rq.finish(ctx.Response.StatusCode(), int64(len(ctx.Response.Body())), nil)
	}
	return true
}

// hotSlots is how many routes serveHot remembers (a power of two); a
// route is the resolution of one host and request URI of a public bucket
// to a cacheable pipeline.
const hotSlots = 1024

// hotIDMax bounds the host and request URI of a remembered route, so that
// the table's memory is bounded (about hotSlots × 2 hotIDMax bytes).
const hotIDMax = 512

// hotRoutes remembers, for the current metadata snapshot only, how the
// requests last answered through the result cache were resolved: bucket,
// key, pipeline text, step names and the cache key's part after the
// object's etag. A route is a function of the Host header, the request
// URI, the snapshot and the router's public address, all of which its
// lookup compares, so using it answers what the full path would; anything
// else the answer depends on is read per request (the object's etag, the
// cache entry, If-None-Match, the method). Private buckets (tokens) and
// attname= requests are never remembered. A new snapshot starts an empty
// table, so no old snapshot is kept alive; a slot holds one route, the
// last remembered there.
type hotRoutes struct{ t atomic.Pointer[hotTable] }

type hotTable struct {
	snap   *meta.Snapshot
	public *publicAddr
	seed   maphash.Seed
	slots  [hotSlots]atomic.Pointer[hotRoute]
}

// hotRoute is immutable once stored.
type hotRoute struct {
	id       string // host, NUL, request URI
	bucket   string
	key      string
	pipeline string
	names    []string // metric labels (request.names)
	tail     string   // appendKeyTail of the pipeline
	ttl      time.Duration
	cc       []byte // Cache-Control of a result stored for ttl
}

// appendHotID appends a request's route id: its Host header and raw
// request URI. ok is false when it would pass hotIDMax.
func appendHotID(dst []byte, ctx *fasthttp.RequestCtx) ([]byte, bool) {
	host, uri := ctx.Request.Header.Host(), ctx.Request.Header.RequestURI()
	if len(host)+1+len(uri) > hotIDMax {
		return dst, false
	}
	dst = append(dst, host...)
	dst = append(dst, 0)
	return append(dst, uri...), true
}

// lookup returns the route of ctx's request remembered for snap and
// public and the slot holding it, or nil.
func (h *hotRoutes) lookup(ctx *fasthttp.RequestCtx, snap *meta.Snapshot, public *publicAddr) (*hotRoute, *atomic.Pointer[hotRoute]) {
	t := h.t.Load()
	if t == nil || t.snap != snap || t.public != public {
		return nil, nil
	}
	var ib [hotIDMax]byte
	id, ok := appendHotID(ib[:0], ctx)
	if !ok {
		return nil, nil
	}
	slot := &t.slots[maphash.Bytes(t.seed, id)&(hotSlots-1)]
	rt := slot.Load()
	if rt == nil || rt.id != string(id) {
		return nil, nil
	}
	return rt, slot
}

// remember stores rq's route (resolved against snap and public to
// bucket, key and stages; its results cached for ttl, served with cc),
// replacing the table when it is of another
// snapshot.
func (h *hotRoutes) remember(rq *request, snap *meta.Snapshot, public *publicAddr, bucket, key string, stages []stage, ttl time.Duration, cc string) {
	var ib [hotIDMax]byte
	id, ok := appendHotID(ib[:0], rq.ctx)
	if !ok {
		return
	}
	t := h.t.Load()
	if t == nil || t.snap != snap || t.public != public {
		nt := &hotTable{snap: snap, public: public, seed: maphash.MakeSeed()}
		if !h.t.CompareAndSwap(t, nt) {
			return // another request replaced it: remembered next time
		}
		t = nt
	}
	slot := &t.slots[maphash.Bytes(t.seed, id)&(hotSlots-1)]
	if rt := slot.Load(); rt != nil && rt.id == string(id) {
		return
	}
	slot.Store(&hotRoute{id: string(id), bucket: bucket, key: key, pipeline: rq.pipeline,
		names: slices.Clone(rq.names), tail: string(appendKeyTail(nil, rq.pipeline, stages)), ttl: ttl, cc: []byte(cc)})
}

// closeHit closes a hit's stream when it is not sent.
func closeHit(h rescache.Hit) {
	if h.Body != nil {
		h.Body.Close()
	}
}

// cachePolicy decides whether the stages' result may be cached: every ufop
// step's active release opts in. It returns the TTL (the shortest of the
// steps').
func cachePolicy(snap *meta.Snapshot, stages []stage) (time.Duration, bool) {
	var ttl time.Duration
	for _, st := range stages {
		t := dora.DefaultCacheTTL
		if st.builtin && readsOtherObject(st.step) {
			return 0, false
		}
		if !st.builtin {
			u := &st.ufop
			if u.ActiveVersion == "" {
				return 0, false
			}
			rel, ok := snap.Release(u.Name, u.ActiveVersion)
			if !ok || rel.Cache == nil || !rel.Cache.Enabled {
				return 0, false
			}
			if rel.Cache.TTL > 0 {
				t = min(rel.Cache.TTL, dora.MaxCacheTTL)
			}
		}
		if ttl == 0 || t < ttl {
			ttl = t
		}
	}
	return ttl, ttl > 0
}

// readsOtherObject reports whether a built-in step's result depends on
// an object besides its input, which the cache key does not name: a
// watermark's image (watermark/1/image/<URL>). Only a text watermark
// (watermark/2, its mode written plainly) is known not to.
func readsOtherObject(s fop.Step) bool {
	return s.Name == "watermark" && (len(s.Args) == 0 || s.Args[0] != "2")
}

// appendCacheKey appends the name of a result by everything it depends
// on: bucket, key, the object's etag and MIME type, the pipeline's text
// and each ufop step's active version.
func appendCacheKey(dst []byte, bucket, key string, obj *origin.Object, pipeline string, stages []stage) []byte {
	return appendKeyTail(appendKeyHead(dst, bucket, key, obj), pipeline, stages)
}

// appendKeyHead appends the object's part of a cache key. The MIME type
// is in it because the etag names the bytes alone (a chgm keeps it) while
// steps see the type (the body's Content-Type, /uop's src.mimetype) and a
// step that sets none passes it on as its result's.
func appendKeyHead(dst []byte, bucket, key string, obj *origin.Object) []byte {
	for _, s := range [...]string{bucket, key, obj.ETag, obj.MimeType} {
		dst = append(dst, s...)
		dst = append(dst, 0)
	}
	return dst
}

// appendKeyTail appends the pipeline's part of a cache key: its text and
// each ufop step's active version.
func appendKeyTail(dst []byte, pipeline string, stages []stage) []byte {
	dst = append(dst, pipeline...)
	dst = append(dst, 0)
	for i := range stages {
		if st := &stages[i]; !st.builtin {
			dst = append(dst, st.ufop.Name...)
			dst = append(dst, '@')
			dst = append(dst, st.ufop.ActiveVersion...)
			dst = append(dst, '|')
		}
	}
	return dst
}

// resultETag is the quoted validator of a cached result: a digest of its
// key, the same for every router.
func resultETag(ck string) string {
	sum := sha256.Sum256([]byte(ck))
	return `"r` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`
}

// cacheControl is the Cache-Control of a cached result: private for a
// private bucket (a shared cache must not serve it without a token). The
// values are kept: TTLs are few (one per release's cache: setting).
func (r *Router) cacheControl(private bool, ttl time.Duration) string {
	k := ccKey{private, int64(ttl / time.Second)}
	r.ccMu.RLock()
	v, ok := r.cc[k]
	r.ccMu.RUnlock()
	if ok {
		return v
	}
	scope := "public"
	if private {
		scope = "private"
	}
	v = scope + ", max-age=" + strconv.FormatInt(k.maxAge, 10)
	r.ccMu.Lock()
	if len(r.cc) < 1024 { // bounded whatever the TTLs
		r.cc[k] = v
	}
	r.ccMu.Unlock()
	return v
}

// ccKey names a Cache-Control value.
type ccKey struct {
	private bool
	maxAge  int64
}

// capture wraps the pipeline's last stream so that, read completely and
// within a tier's entry bound, it is stored in the cache (in memory, on
// disk, or both: rescache.Writer) while the client is sent it.
func (f *cacheFill) capture(r *Router, p *pipeline, cur flow) io.ReadCloser {
	w := r.results.NewWriter(f.key, rescache.Entry{MimeType: cur.contentType(), ETag: f.etag,
		Created: f.created, Expires: f.created.Add(f.ttl)}, cur.size)
	if w == nil {
		return cur.body
	}
	return &captureBody{ReadCloser: cur.body, w: w, p: p, size: cur.size}
}

// captureBody copies what the client is sent into the cache's writer, and
// commits it on a clean end (aborts it otherwise).
type captureBody struct {
	io.ReadCloser
	w    *rescache.Writer
	p    *pipeline
	size int64
	n    int64
	done bool
}

func (c *captureBody) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	if c.done {
		return n, err
	}
	if n > 0 {
		c.n += int64(n)
		c.w.Write(b[:n])
	}
	switch {
	case err == io.EOF && !c.p.fellBack && (c.size < 0 || c.n == c.size):
		c.done = true
		c.w.Commit()
	case err != nil:
		c.done = true
		c.w.Abort()
	}
	return n, err
}

// Close aborts a result not read to its end.
func (c *captureBody) Close() error {
	if !c.done {
		c.done = true
		c.w.Abort()
	}
	return c.ReadCloser.Close()
}

// WriteTo keeps fasthttp's copy on the router's pooled buffers.
func (c *captureBody) WriteTo(w io.Writer) (int64, error) { return writeTo(w, c) }
