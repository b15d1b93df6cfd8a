package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/router/builtin"
	"github.com/doraproject/dora/router/fop"
	"github.com/doraproject/dora/router/meta"
)

// MaxKeyBytes bounds an object key taken from a URL path (the platform's
// key rule, dora.ValidateKey).
const MaxKeyBytes = dora.MaxKeyBytes

// srcPrefix is the path of the one-shot input URLs.
const srcPrefix = "/_dora/src/"

// httpError is a failed request's answer: status, message and, for a
// pipeline step's failure, the step's 0-based index.
type httpError struct {
	status     int
	msg        string
	step       int // -1: not a step's failure
	retryAfter bool
	// body, when not nil, is a program's own error answer, sent as is
	// with contentType instead of the JSON shape; ufop names the program.
	body        []byte
	contentType string
	ufop        string
	// cause is the origin error behind the answer, for callers that
	// branch on it (origin.ErrChanged: read again).
	cause error
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s", e.status, e.msg) }

func errf(status int, format string, args ...any) *httpError {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...), step: -1}
}

// writeError replaces the response with the JSON error shape.
func writeError(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.Response.ResetBody()
	ctx.Response.Header.Del("Content-Range")
	ctx.Response.Header.Del("ETag")
	ctx.Response.Header.Del("Last-Modified")
	ctx.Response.Header.Del("Accept-Ranges")
	ctx.Response.Header.Del("Cache-Control") // an error is never a cacheable result
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	ctx.SetBody(append(b, '\n'))
}

// request is one client request's bookkeeping, for the access log and the
// metrics, finished exactly once (at the handler's end, or when the
// streamed body is closed).
//
// Requests are recycled (Router.requests): a request holds two references,
// the handler's (dropped when handle returns) and finish's (dropped once
// finish has run), and goes back to the pool when both are gone, that is
// when the handler has returned and the response, streamed or not, is
// over. Nothing may keep a *request, or a string pointing into its
// buffers (reqid), past finish: the access log gets a copy of reqid, and
// a pipeline reads it only while its steps are called (before handle
// returns).
type request struct {
	r        *Router
	ctx      *fasthttp.RequestCtx
	reqid    string
	start    time.Time
	bucket   string
	key      string
	pipeline string
	names    []string   // checked step names (or unknownSteps), for the per-ufop request counter
	fill     *cacheFill // set when the pipeline's result is to be cached (result.go)
	done     atomic.Bool
	refs     atomic.Int32 // the handler's and finish's (release)

	// Room for the usual request's parts, so that they take no
	// allocation of their own: the request id's bytes (reqid points
	// into them; never written after), the parsed steps, the planned
	// stages and the metric names of a short pipeline. None of them is
	// kept past the request (the stages are copied by value into the
	// calls, the hot routes copy what they keep).
	idBuf    [32]byte
	stepBuf  [4]fop.Step // (the request is recycled: room costs no allocation)
	stageBuf [4]stage
	nameBuf  [5]string
	ageBuf   [20]byte // a cache hit's Age digits
	etagBuf  [64]byte // an object's quoted ETag (objectHeaders)
	lmBuf    [32]byte // an object's Last-Modified (objectHeaders)

	// A streamed answer's body and what finishes the request when it
	// is closed (stream).
	body   countingBody
	src    srcBody
	status int
	want   int64

	// keyETag and keyMime are the object's etag and MIME type a
	// cacheable miss's key and ETag name (serveCached): the pipeline
	// reading another version of the object is not that result.
	keyETag, keyMime string
}

// newRequest takes a request from the pool for ctx, started at start,
// holding its two references.
func (r *Router) newRequest(ctx *fasthttp.RequestCtx, start time.Time) *request {
	rq, _ := r.requests.Get().(*request)
	if rq == nil {
		rq = new(request)
	}
	rq.r, rq.ctx, rq.start = r, ctx, start
	rq.refs.Store(2)
	r.unfinished.Add(1)
	return rq
}

// release drops one of rq's two references; the last one clears it and
// puts it back in the pool.
func (rq *request) release() {
	if rq.refs.Add(-1) != 0 {
		return // still held; or a request not from newRequest (tests)
	}
	r := rq.r
	*rq = request{}
	r.requests.Put(rq)
	r.unfinished.Add(-1)
}

// realStart is the request's start on the real clock (deadlines run on
// real timers): start itself unless Config.Now is a test clock.
func (rq *request) realStart() time.Time {
	if rq.r.realClock {
		return rq.start
	}
	return time.Now()
}

// fail answers with e (and the step header when e is a step's failure).
func (rq *request) fail(e *httpError) {
	if e.body != nil {
		writeError(rq.ctx, e.status, "")
		rq.ctx.SetContentType(e.contentType)
		rq.ctx.SetBody(e.body)
		rq.ctx.Response.Header.Set("X-Dora-Ufop", e.ufop)
	} else {
		writeError(rq.ctx, e.status, e.msg)
	}
	if e.step >= 0 {
		rq.ctx.Response.Header.Set("X-Dora-Step", strconv.Itoa(e.step))
	}
	if e.retryAfter {
		rq.ctx.Response.Header.Set("Retry-After", "1")
	}
}

// finish writes the access log line and the request metrics.
func (rq *request) finish(status int, bytes int64, err error) {
	if !rq.done.CompareAndSwap(false, true) {
		return
	}
	defer rq.release()
	d := rq.r.now().Sub(rq.start)
	rq.r.metrics.request(rq.names, status, d, bytes)
	if !rq.r.log.Enabled(context.Background(), slog.LevelInfo) {
		return // building the line costs a dozen allocations
	}
	// reqid's bytes are the request's, reused once it is released: the
	// log (whose handler may keep the record) gets a copy.
	attrs := []any{"reqid", strings.Clone(rq.reqid), "method", string(rq.ctx.Method()), "bucket", rq.bucket, "key", rq.key,
		"pipeline", rq.pipeline, "status", status, "bytes", bytes, "duration", d}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	rq.r.log.Info("access", attrs...)
}

// b2s is b's bytes as a string, without a copy: valid only while b is
// neither written nor reused.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// Handler returns the router's request handler.
func (r *Router) Handler() fasthttp.RequestHandler { return r.handle }

func (r *Router) handle(ctx *fasthttp.RequestCtx) {
	// fasthttp read the clock just before calling the handler.
	start := ctx.Time()
	if start.IsZero() { // a RequestCtx not from fasthttp's server
		start = time.Now()
	}
	rq := r.newRequest(ctx, r.nowAt(start))
	defer rq.release()
	rq.reqid = r.appendReqid(rq.idBuf[:0])
	ctx.Response.Header.SetCanonical(hdrXReqid, headerValue(rq.reqid))
	snap := r.meta.Snapshot()
	if r.serveHot(rq, snap) { // a cached result of a known route (result.go)
		return
	}
	// The Host header's bytes, not copied: they stay valid until the
	// handler returns (fasthttp's contract), and nothing keeps host
	// longer (ignoreOwnDomain keeps a copy).
	host := b2s(ctx.Host())
	// The router's own host names are never a bucket's, whatever the
	// store binds: the one-shot input URLs, /healthz and /metrics must
	// not be shadowed (the admin refuses such bindings; this does not
	// depend on it).
	var bucket dora.Bucket
	ok := false
	if r.isOwnHost(host) {
		r.ignoreOwnDomain(snap, host)
	} else {
		bucket, ok = snap.BucketForHost(host, r.cfg.DomainSuffix)
	}
	if !ok {
		if !r.isReady() && !strings.HasPrefix(string(ctx.Path()), srcPrefix) {
			// An empty snapshot would answer 404 for every bucket.
			rq.fail(errNotLoaded(-1))
			rq.finish(ctx.Response.StatusCode(), 0, nil)
			return
		}
		r.serveOwn(rq, host)
		return
	}
	rq.bucket = bucket.Name
	if !ctx.IsGet() && !ctx.IsHead() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		rq.fail(errf(fasthttp.StatusMethodNotAllowed, "method %s not allowed", ctx.Method()))
		rq.finish(ctx.Response.StatusCode(), 0, nil)
		return
	}
	streaming, err := r.serveBucket(rq, snap, bucket, host)
	if err != nil {
		rq.fail(err)
	}
	if !streaming {
		rq.finish(ctx.Response.StatusCode(), int64(len(ctx.Response.Body())), nil)
	}
}

// serveBucket resolves and authorises a bucket request, then serves the
// object or runs the pipeline. streaming is true when the response body is
// a stream whose Close finishes the request.
func (r *Router) serveBucket(rq *request, snap *meta.Snapshot, bucket dora.Bucket, host string) (streaming bool, _ *httpError) {
	ctx := rq.ctx
	rawPath := ctx.URI().PathOriginal()
	if i := strings.IndexByte(string(rawPath), '?'); i >= 0 { // PathOriginal of a full request URI
		rawPath = rawPath[:i]
	}
	key, herr := objectKey(string(rawPath))
	if herr != nil {
		return false, herr
	}
	rq.key = key
	rawQuery := string(ctx.URI().QueryString())
	if len(rawQuery) > fop.MaxQueryBytes {
		return false, errf(fasthttp.StatusRequestURITooLong, "query longer than %d bytes", fop.MaxQueryBytes)
	}
	req, err := fop.ParseAppend(rawQuery, rq.stepBuf[:0])
	if err != nil {
		return false, errf(fasthttp.StatusBadRequest, "%s", err.Error())
	}
	rq.pipeline = req.Pipeline()
	if len(req.Steps) > 0 || req.SaveAs != nil {
		// Until plan has checked the step names they are the client's
		// free text: as metric labels they would make unbounded series.
		rq.names = unknownSteps
	}
	if bucket.Private {
		if herr := r.checkDownloadToken(ctx, snap, bucket, host, string(rawPath), req); herr != nil {
			return false, herr
		}
	}
	if dora.ReservedKey(key) {
		// An upload's temporary is no object of the bucket's (listings
		// hide it): answered as a key that holds none, after the token
		// as for any missing object.
		return false, errNoSuchObject()
	}
	streaming, herr = r.serveParsed(rq, snap, bucket, key, host, string(rawPath), req)
	if herr == nil && req.HasAttName && ctx.Response.StatusCode() < 300 {
		ctx.Response.Header.Set("Content-Disposition", contentDisposition(req.AttName, key))
	}
	if herr == nil && bucket.Private && len(ctx.Response.Header.PeekBytes(hdrCacheControl)) == 0 {
		// What a token opened is the token holder's: no shared cache
		// (a CDN, a proxy) may keep it past the token's deadline and
		// serve it to whoever asks the same URL. A cached result already
		// says private with its max-age.
		ctx.Response.Header.SetCanonical(hdrCacheControl, ccPrivate)
	}
	return streaming, herr
}

// ccPrivate is the Cache-Control of what a private bucket's token opened
// (an object, a result that is not cached).
var ccPrivate = []byte("private")

// serveParsed serves a parsed, authorised request: a persisted result, the
// object, or the pipeline's output.
func (r *Router) serveParsed(rq *request, snap *meta.Snapshot, bucket dora.Bucket, key, host, rawPath string, req fop.Request) (bool, *httpError) {
	ctx := rq.ctx
	if req.Persisted != "" {
		return r.servePersisted(rq, snap, bucket, key, host, rawPath, req)
	}
	stages, herr := r.plan(snap, bucket, req.Steps, rq.stageBuf[:0])
	if herr != nil {
		return false, herr
	}
	rq.names = appendStepNames(rq.nameBuf[:0], stages, req.SaveAs != nil)
	if req.SaveAs != nil {
		if herr := r.checkSaveAs(ctx, snap, host, rawPath, req.SaveAs); herr != nil {
			return false, herr
		}
		if ctx.IsHead() {
			return false, errf(fasthttp.StatusMethodNotAllowed, "saveas needs GET")
		}
	}
	if len(stages) == 0 && req.SaveAs == nil {
		return r.serveObject(rq, bucket, key)
	}
	if req.SaveAs == nil {
		if done, streaming, herr := r.serveCached(rq, snap, bucket, key, stages, !req.HasAttName); done || herr != nil {
			return streaming, herr
		}
	}
	return r.runPipeline(rq, bucket, key, stages, req.SaveAs)
}

// contentDisposition is the attname= answer: an attachment named name (the
// key's last segment when name is empty), as an ASCII fallback and as
// RFC 5987 UTF-8.
func contentDisposition(name, key string) string {
	if name == "" {
		name = path.Base(key)
	}
	var b strings.Builder
	b.WriteString(`attachment; filename="`)
	for _, c := range name {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			c = '_'
		}
		b.WriteRune(c)
	}
	b.WriteString(`"; filename*=UTF-8''`)
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(name); i++ {
		c := name[i]
		if isAttrChar(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// isAttrChar is RFC 5987's attr-char: what filename*= carries unescaped.
func isAttrChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$&+-.^_`|~", c) >= 0
}

// objectKey decodes the key from a raw URL path and checks it with the
// platform's one key rule (dora.ValidateKey); no key is a 404.
func objectKey(rawPath string) (string, *httpError) {
	if !strings.HasPrefix(rawPath, "/") {
		return "", errf(fasthttp.StatusBadRequest, "invalid path")
	}
	key, err := url.PathUnescape(rawPath[1:])
	if err != nil {
		return "", errf(fasthttp.StatusBadRequest, "invalid key: %v", err)
	}
	if key == "" {
		return "", errf(fasthttp.StatusNotFound, "no object key in the path")
	}
	return key, checkKey(key)
}

// checkKey applies the platform's key rule (dora.ValidateKey: no path
// escape, no control character, bounded length): 400 when it refuses.
func checkKey(key string) *httpError {
	if err := dora.ValidateKey(key); err != nil {
		return errf(fasthttp.StatusBadRequest, "invalid %v", err)
	}
	return nil
}

// errNoSuchObject is the answer for a key that holds no object.
func errNoSuchObject() *httpError { return errf(fasthttp.StatusNotFound, "no such object") }

// checkSaveKey checks a saveas target key: the platform's key rule
// (checkKey), and not in the namespace of the upload temporaries
// (dora.ReservedKey), where a saved result could take a temporary's
// place or, named as its directory, make every keyless upload to the
// bucket fail. 400 when it refuses.
func checkSaveKey(key string) *httpError {
	if herr := checkKey(key); herr != nil {
		herr.msg = "saveas: " + herr.msg
		return herr
	}
	if err := dora.CheckUserKey(key); err != nil {
		return errf(fasthttp.StatusBadRequest, "saveas: %v", err)
	}
	return nil
}

// scheme is the scheme the client used, which the download token signs:
// https over a TLS connection to the router, or when a trusted proxy
// (Config.TrustedProxies) says so in X-Forwarded-Proto.
func (r *Router) scheme(ctx *fasthttp.RequestCtx) string {
	if ctx.IsTLS() {
		return "https"
	}
	if len(r.cfg.TrustedProxies) > 0 && forwardedHTTPS(ctx.Request.Header.Peek("X-Forwarded-Proto")) && r.fromTrustedProxy(ctx) {
		return "https"
	}
	return "http"
}

// forwardedHTTPS reports whether an X-Forwarded-Proto value names https
// as the scheme the client used: its first element, the one the proxy
// facing the client set.
func forwardedHTTPS(v []byte) bool {
	if i := bytes.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	return strings.EqualFold(strings.TrimSpace(string(v)), "https")
}

// fromTrustedProxy reports whether the request's connection comes from
// one of Config.TrustedProxies.
func (r *Router) fromTrustedProxy(ctx *fasthttp.RequestCtx) bool {
	ip, ok := netip.AddrFromSlice(ctx.RemoteIP())
	if !ok {
		return false
	}
	ip = ip.Unmap()
	for _, p := range r.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// checkDownloadToken verifies a private bucket's download token: present,
// not expired, signed (over scheme://host/path?<query up to e=>) by a
// known enabled AK belonging to the bucket's owner.
func (r *Router) checkDownloadToken(ctx *fasthttp.RequestCtx, snap *meta.Snapshot, b dora.Bucket, host, rawPath string, req fop.Request) *httpError {
	if req.Token == "" {
		return errf(fasthttp.StatusUnauthorized, "private bucket: download token required (e= and token=)")
	}
	full := r.scheme(ctx) + "://" + host + rawPath + "?" + req.SignedQuery
	vctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ak, err := auth.VerifyDownloadToken(vctx, snap.SecretKey, full, req.Token, req.Deadline, r.now())
	if err != nil {
		return errf(fasthttp.StatusUnauthorized, "bad download token: %v", err)
	}
	acct, err := snap.AccountByAK(ak)
	if err != nil || acct.ID != b.Owner {
		return errf(fasthttp.StatusUnauthorized, "bad download token: key does not belong to the bucket's owner")
	}
	return nil
}

// checkSaveAs verifies the target key (the platform's key rule), the
// saveas sign (over host+path+"?"+query up to /sign/, scheme not signed)
// and that the signing account owns the target bucket.
func (r *Router) checkSaveAs(ctx *fasthttp.RequestCtx, snap *meta.Snapshot, host, rawPath string, sa *fop.SaveAs) *httpError {
	if sa.AK == "" || sa.Sign == "" {
		return errf(fasthttp.StatusUnauthorized, "saveas needs /sign/<AK>:<sign>")
	}
	// Checked before anything streams: a key the origin would refuse must
	// not fail only after the client got the output.
	if herr := checkSaveKey(sa.Key); herr != nil {
		return herr
	}
	vctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := auth.VerifySaveAs(vctx, snap.SecretKey, host+rawPath+"?"+sa.SignedQuery, sa.AK, sa.Sign); err != nil {
		return errf(fasthttp.StatusUnauthorized, "bad saveas sign: %v", err)
	}
	acct, err := snap.AccountByAK(sa.AK)
	if err != nil {
		return errf(fasthttp.StatusUnauthorized, "bad saveas sign: %v", err)
	}
	tb, ok := snap.Bucket(sa.Bucket)
	if !ok {
		return errf(fasthttp.StatusNotFound, "saveas: no bucket %q", sa.Bucket)
	}
	if tb.Owner != acct.ID {
		return errf(fasthttp.StatusForbidden, "saveas: bucket %q is not the signer's", sa.Bucket)
	}
	if r.cfg.Writer == nil {
		return errf(fasthttp.StatusNotImplemented, "saveas: no writable origin configured")
	}
	return nil
}

// unknownSteps labels the requests of a pipeline refused before its
// step names were checked (a bad fop, token or ufop name).
var unknownSteps = []string{"unknown"}

// appendStepNames appends the metric labels of a planned pipeline: every
// name is a built-in's or a registered ufop's, so the label set stays
// bounded.
func appendStepNames(names []string, stages []stage, saveAs bool) []string {
	for _, st := range stages {
		names = append(names, st.step.Name)
	}
	if saveAs {
		names = append(names, "saveas")
	}
	return names
}

// stage is one planned step: a built-in fop or a ufop allowed for the
// bucket's owner.
type stage struct {
	step    fop.Step
	builtin bool
	ufop    dora.Ufop
}

// plan checks every step: built-ins run here; a ufop must exist (404) and
// its mode must allow the bucket owner's account (403). The stages are
// appended to out.
func (r *Router) plan(snap *meta.Snapshot, b dora.Bucket, steps []fop.Step, out []stage) ([]stage, *httpError) {
	if len(steps) == 0 {
		return nil, nil
	}
	owner, ok := snap.Account(b.Owner)
	if !ok {
		owner = dora.Account{ID: b.Owner}
	}
	for i, s := range steps {
		if builtin.IsBuiltin(s.Name) {
			out = append(out, stage{step: s, builtin: true})
			continue
		}
		u, ok := snap.Ufop(s.Name)
		if !ok {
			if !r.isReady() {
				// The ufops may not be loaded yet (the bucket was):
				// not a 404 the client would take for an answer.
				return nil, errNotLoaded(i)
			}
			e := errf(fasthttp.StatusNotFound, "no such ufop %q", s.Name)
			e.step = i
			return nil, e
		}
		if !u.CanBeUsedBy(owner) {
			e := errf(fasthttp.StatusForbidden, "ufop %q (%s) may not be used by this bucket's owner", s.Name, u.Mode)
			if u.Mode == dora.ModeProtected {
				e = errf(fasthttp.StatusForbidden, "ufop %q is protected and this bucket's owner has not applied for it: qdoractl apply %s", s.Name, s.Name)
			}
			e.step = i
			return nil, e
		}
		out = append(out, stage{step: s, ufop: u})
	}
	return out, nil
}

// errNotLoaded is the 503 (with Retry-After) of a request that needs
// metadata the router has not loaded yet, at step (-1: none).
func errNotLoaded(step int) *httpError {
	return &httpError{status: fasthttp.StatusServiceUnavailable, msg: "metadata not loaded yet", step: step, retryAfter: true}
}

// serveOwn answers requests whose Host is not a bucket: the one-shot input
// URLs (any such host), /healthz and /metrics (the router's own host
// names only, so they cannot shadow a bucket's keys), else 404.
func (r *Router) serveOwn(rq *request, host string) {
	ctx := rq.ctx
	path := b2s(ctx.Path()) // not kept past the handler
	switch {
	case strings.HasPrefix(path, srcPrefix):
		r.serveSrc(rq, strings.TrimPrefix(path, srcPrefix))
		return
	case path == "/healthz" && r.isOwnHost(host):
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"status":"ok"}` + "\n")
	case path == "/metrics" && r.isOwnHost(host):
		r.metrics.serve(ctx)
	default:
		writeError(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no bucket bound to host %q", meta.HostName(host)))
	}
	rq.finish(ctx.Response.StatusCode(), int64(len(ctx.Response.Body())), nil)
}

// ignoreOwnDomain logs, once per snapshot and host, that a domain binding
// of one of the router's own host names is ignored.
func (r *Router) ignoreOwnDomain(snap *meta.Snapshot, host string) {
	name, bound := snap.DomainBucket(host)
	if !bound {
		return
	}
	h := meta.HostName(host)
	if prev, ok := r.ownWarned.Load(h); ok && prev.(*meta.Snapshot) == snap {
		return
	}
	h = strings.Clone(h) // host is the request's bytes (handle)
	r.ownWarned.Store(h, snap)
	r.log.Warn("router: ignoring a domain binding of the router's own host name", "host", h, "bucket", name)
}

// builtinError maps a built-in fop's failure to an answer.
func builtinError(i int, name string, err error) *httpError {
	var be *builtin.Error
	e := errf(fasthttp.StatusInternalServerError, "%s: %v", name, err)
	switch {
	case errors.As(err, &be):
		e = errf(be.Status, "%s", be.Msg)
	case errors.Is(err, builtin.ErrUnknown):
		e = errf(fasthttp.StatusBadRequest, "%s: %v", name, err)
	case errors.Is(err, context.DeadlineExceeded):
		e = errf(fasthttp.StatusGatewayTimeout, "%s: deadline exceeded", name)
	}
	e.step = i
	return e
}
