package router

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/router/meta"
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
// cacheable by default. A pipeline with saveas is never cached (it writes),
// nor one where a step ran on its previous version (blue/green), nor a
// result larger than Config.ResultCacheEntry, nor one of an object only a
// mirror has.
//
// Cacheable responses carry ETag (a digest of the cache key), Cache-Control
// (public or private after the bucket, max-age the TTL), Age on a hit, and
// X-Dora-Cache: hit or miss; If-None-Match against a cached result answers
// 304.

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
func (r *Router) serveCached(rq *request, snap *meta.Snapshot, b dora.Bucket, key string, stages []stage) (done, streaming bool, _ *httpError) {
	if r.results == nil {
		return false, false, nil
	}
	ttl, ok := cachePolicy(snap, stages)
	if !ok {
		return false, false, nil
	}
	// Only objects of the local origin: a mirror's would cost a remote
	// stat on every request (and the pipeline answers its 404s).
	obj, err := r.cfg.Objects.Stat(r.deadline.get(time.Now()), b.Name, key)
	if err != nil || obj.ETag == "" {
		return false, false, nil
	}
	// The key is built on the stack and a memory hit allocates nothing.
	var kb [512]byte
	ck := appendCacheKey(kb[:0], b.Name, key, obj.ETag, rq.pipeline, stages)
	ctx := rq.ctx
	h := &ctx.Response.Header
	now := r.now()
	if e, ok := r.results.GetBytes(ck, now); ok {
		h.Set("X-Dora-Cache", "hit")
		h.Set("ETag", e.ETag)
		h.Set("Cache-Control", r.cacheControl(b.Private, e.Expires.Sub(e.Created)))
		h.SetBytesV("Age", strconv.AppendInt(rq.ageBuf[:0], int64(now.Sub(e.Created)/time.Second), 10))
		if notModified(&ctx.Request.Header, e.ETag, time.Time{}) {
			closeHit(e)
			ctx.SetStatusCode(fasthttp.StatusNotModified)
			return true, false, nil
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.SetContentType(e.MimeType)
		if ctx.IsHead() {
			closeHit(e)
			h.SetContentLength(int(e.Size))
			return true, false, nil
		}
		if e.Body == nil {
			ctx.Response.SetBodyRaw(e.Data)
			return true, false, nil
		}
		// A result of the disk tier streams from its file.
		size := e.Size
		ctx.Response.SetBodyStream(&countingBody{rc: e.Body, r: r, onClose: func(n int64, err error) {
			if err == nil && n != size {
				err = io.ErrUnexpectedEOF
			}
			rq.finish(fasthttp.StatusOK, n, err)
		}}, int(size))
		return true, true, nil
	}
	cks := string(ck)
	etag := resultETag(cks)
	h.Set("X-Dora-Cache", "miss")
	h.Set("ETag", etag)
	h.Set("Cache-Control", r.cacheControl(b.Private, ttl))
	if !ctx.IsHead() {
		rq.fill = &cacheFill{key: cks, etag: etag, ttl: ttl, created: now}
	}
	return false, false, nil
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

// appendCacheKey appends the name of a result by everything it depends
// on: bucket, key, the object's etag, the pipeline's text and each ufop
// step's active version.
func appendCacheKey(dst []byte, bucket, key, etag, pipeline string, stages []stage) []byte {
	for _, s := range [...]string{bucket, key, etag, pipeline} {
		dst = append(dst, s...)
		dst = append(dst, 0)
	}
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
