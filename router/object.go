package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/router/origin"
)

// statObject finds the object locally, else through the bucket's mirror
// (back-to-source) when the bucket has one and a mirror reader is wired.
// It returns the reader to open it from.
func (r *Router) statObject(ctx context.Context, b dora.Bucket, key string) (origin.Reader, origin.Object, *httpError) {
	obj, err := r.cfg.Objects.Stat(ctx, b.Name, key)
	src := r.cfg.Objects
	if errors.Is(err, origin.ErrNotFound) && b.Mirror != "" && r.cfg.Mirror != nil {
		src = r.cfg.Mirror.At(b.Mirror)
		obj, err = src.Stat(ctx, b.Name, key)
	}
	if err != nil {
		return nil, obj, originError(err)
	}
	return src, obj, nil
}

// openObject opens the whole object locally, else through the bucket's
// mirror, in one call (no separate Stat).
func (r *Router) openObject(ctx context.Context, b dora.Bucket, key string) (io.ReadCloser, origin.Object, *httpError) {
	rc, obj, err := r.cfg.Objects.Open(ctx, b.Name, key, 0, -1)
	if errors.Is(err, origin.ErrNotFound) && b.Mirror != "" && r.cfg.Mirror != nil {
		rc, obj, err = r.cfg.Mirror.At(b.Mirror).Open(ctx, b.Name, key, 0, -1)
	}
	if err != nil {
		return nil, obj, originError(err)
	}
	return rc, obj, nil
}

func originError(err error) *httpError {
	switch {
	case errors.Is(err, origin.ErrNotFound):
		return errf(fasthttp.StatusNotFound, "no such object")
	case errors.Is(err, origin.ErrBadKey):
		return errf(fasthttp.StatusBadRequest, "invalid key: %v", err)
	case errors.Is(err, origin.ErrTooLarge):
		return errf(fasthttp.StatusRequestEntityTooLarge, "object too large: %v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return errf(fasthttp.StatusGatewayTimeout, "origin timeout")
	case errors.Is(err, origin.ErrUnavailable):
		return errf(fasthttp.StatusServiceUnavailable, "origin unavailable: %v", err)
	case errors.Is(err, origin.ErrChanged):
		e := errf(fasthttp.StatusServiceUnavailable, "the object changed while it was read; retry: %v", err)
		e.cause = err
		return e
	}
	return errf(fasthttp.StatusBadGateway, "origin: %v", err)
}

// objectHeaders sets the validators of an object and returns its quoted
// ETag, which points into rq's buffer when it fits (valid while rq is).
func (rq *request) objectHeaders(h *fasthttp.ResponseHeader, obj origin.Object) string {
	etag := ""
	if obj.ETag != "" {
		b := append(append(append(rq.etagBuf[:0], '"'), obj.ETag...), '"')
		etag = b2s(b)
		h.SetCanonical(hdrETag, b)
	}
	if !obj.Modified.IsZero() {
		h.SetCanonical(hdrLastModified, obj.Modified.UTC().AppendFormat(rq.lmBuf[:0], http.TimeFormat))
	}
	return etag
}

// serveObject answers a plain download: conditional GET (304), a single
// byte range (206/416; several ranges are ignored and the whole object is
// sent), HEAD without a body.
func (r *Router) serveObject(rq *request, b dora.Bucket, key string) (bool, *httpError) {
	streaming, herr := r.serveObjectOnce(rq, b, key)
	if herr == nil || !errors.Is(herr.cause, origin.ErrChanged) {
		return streaming, herr
	}
	// Overwritten between the stat and the read: describe it again (one
	// more time; a key rewritten that often gets the 503).
	rq.ctx.Response.SetStatusCode(fasthttp.StatusOK)
	rq.ctx.Response.Header.Del("Content-Range")
	return r.serveObjectOnce(rq, b, key)
}

// openPinned opens [off, off+n) of the object obj describes: through
// origin.ConditionalOpener when src has it (the store refuses another
// version), else by Open and a comparison of the etags. Another version
// is origin.ErrChanged.
func openPinned(ctx context.Context, src origin.Reader, obj origin.Object, off, n int64) (io.ReadCloser, error) {
	if co, ok := src.(origin.ConditionalOpener); ok {
		rc, _, err := co.OpenIf(ctx, obj.Bucket, obj.Key, off, n, obj)
		return rc, err
	}
	rc, got, err := src.Open(ctx, obj.Bucket, obj.Key, off, n)
	if err != nil {
		return nil, err
	}
	if obj.ETag != "" && got.ETag != "" && got.ETag != obj.ETag {
		rc.Close()
		return nil, fmt.Errorf("open %s/%s: %w", obj.Bucket, obj.Key, origin.ErrChanged)
	}
	return rc, nil
}

func (r *Router) serveObjectOnce(rq *request, b dora.Bucket, key string) (bool, *httpError) {
	ctx := rq.ctx
	// The request's deadline is the shared one (deadline.go), as a
	// pipeline's: no timer of its own.
	octx := r.deadline.get(rq.realStart())
	src, obj, herr := r.statObject(octx, b, key)
	if herr != nil {
		return false, herr
	}
	h := &ctx.Response.Header
	etag := rq.objectHeaders(h, obj)
	h.Set("Accept-Ranges", "bytes")
	if preconditionFailed(&ctx.Request.Header, etag, obj.Modified) {
		writeErrorKeep(rq, errf(fasthttp.StatusPreconditionFailed, "precondition failed: the object does not match If-Match or was modified after If-Unmodified-Since"))
		return false, nil
	}
	if notModified(&ctx.Request.Header, etag, obj.Modified) {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return false, nil
	}
	mime := obj.MimeType
	if mime == "" {
		mime = "application/octet-stream"
	}
	h.SetContentType(mime)
	off, n := int64(0), obj.Size
	if rng := h2s(ctx.Request.Header.Peek("Range")); rng != "" && obj.Size >= 0 && // unknown size (mirror): whole object
		ifRangeMatches(&ctx.Request.Header, etag, obj.Modified) { // stale If-Range: whole object
		start, length, ok, unsat := parseRange(rng, obj.Size)
		switch {
		case unsat:
			e := errf(fasthttp.StatusRequestedRangeNotSatisfiable, "range %q not satisfiable for %d bytes", rng, obj.Size)
			writeErrorKeep(rq, e)
			h.Set("Content-Range", "bytes */"+strconv.FormatInt(obj.Size, 10))
			return false, nil
		case ok:
			off, n = start, length
			ctx.SetStatusCode(fasthttp.StatusPartialContent)
			h.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(start+length-1, 10)+"/"+strconv.FormatInt(obj.Size, 10))
		}
	}
	if ctx.IsHead() {
		if n >= 0 {
			h.SetContentLength(int(n))
		}
		return false, nil
	}
	obj.Bucket, obj.Key = b.Name, key
	rc, err := openPinned(octx, src, obj, off, n)
	if err != nil {
		return false, originError(err)
	}
	ctx.Response.SetBodyStream(rq.stream(rc, ctx.Response.StatusCode(), n), int(n))
	return true, nil
}

// writeErrorKeep writes e's JSON body keeping the headers already set.
func writeErrorKeep(rq *request, e *httpError) {
	h := &rq.ctx.Response.Header
	etag, lm := string(h.Peek("ETag")), string(h.Peek("Last-Modified"))
	rq.fail(e)
	if etag != "" {
		h.Set("ETag", etag)
	}
	if lm != "" {
		h.Set("Last-Modified", lm)
	}
}

func h2s(b []byte) string { return string(b) }

// preconditionFailed evaluates If-Match (which wins when present) and
// If-Unmodified-Since (second precision) against the object (RFC 9110
// 13.2.2 steps 1-2): true means 412. If-Match compares strongly; "*"
// matches any existing object.
func preconditionFailed(h *fasthttp.RequestHeader, etag string, modified time.Time) bool {
	if im := string(h.Peek("If-Match")); im != "" {
		for c := range strings.SplitSeq(im, ",") {
			c = strings.TrimSpace(c)
			if c == "*" || (etag != "" && c == etag) {
				return false
			}
		}
		return true
	}
	if ius := string(h.Peek("If-Unmodified-Since")); ius != "" && !modified.IsZero() {
		t, err := http.ParseTime(ius)
		if err != nil {
			return false // an invalid date is ignored
		}
		return modified.Truncate(time.Second).After(t)
	}
	return false
}

// ifRangeMatches evaluates If-Range (RFC 9110 13.1.5): without it a Range
// applies; with it, only when it names the current object, by a strong
// ETag equal to the object's or by a date equal to its Last-Modified.
// Otherwise the whole object is sent (200), so that a resumed download of
// a changed object is not patched with the new bytes.
func ifRangeMatches(h *fasthttp.RequestHeader, etag string, modified time.Time) bool {
	ir := strings.TrimSpace(string(h.Peek("If-Range")))
	if ir == "" {
		return true
	}
	if strings.HasPrefix(ir, `"`) || strings.HasPrefix(ir, "W/") {
		return etag != "" && ir == etag // weak tags never match
	}
	t, err := http.ParseTime(ir)
	if err != nil || modified.IsZero() {
		return false
	}
	return modified.Truncate(time.Second).Equal(t)
}

// notModified evaluates If-None-Match (which wins when present) and
// If-Modified-Since (second precision) against the object.
func notModified(h *fasthttp.RequestHeader, etag string, modified time.Time) bool {
	if inm := string(h.Peek("If-None-Match")); inm != "" {
		if etag == "" {
			return false
		}
		for c := range strings.SplitSeq(inm, ",") {
			c = strings.TrimSpace(c)
			if c == "*" || strings.TrimPrefix(c, "W/") == etag {
				return true
			}
		}
		return false
	}
	if ims := string(h.Peek("If-Modified-Since")); ims != "" && !modified.IsZero() {
		t, err := http.ParseTime(ims)
		if err != nil {
			return false
		}
		return !modified.Truncate(time.Second).After(t)
	}
	return false
}

// parseRange reads a Range header against an object of size bytes. ok is
// true for one satisfiable range; unsat is true for a well-formed single
// range that lies outside the object. Anything else (another unit, several
// ranges, a position that is not all ASCII digits, such as "+5", or past
// int64, garbage) is ignored: ok and unsat both false, serve the whole.
// Whitespace around the range and its positions is SP or HTAB (RFC 9110
// OWS).
func parseRange(s string, size int64) (start, length int64, ok, unsat bool) {
	spec, found := strings.CutPrefix(trimOWS(s), "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	a, b, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, false, false
	}
	a, b = trimOWS(a), trimOWS(b)
	if a == "" { // suffix: the last b bytes
		n, valid := rangePos(b)
		if !valid {
			return 0, 0, false, false
		}
		if n == 0 || size == 0 {
			return 0, 0, false, true
		}
		n = min(n, size)
		return size - n, n, true, false
	}
	st, valid := rangePos(a)
	if !valid {
		return 0, 0, false, false
	}
	end := size - 1
	if b != "" {
		e, valid := rangePos(b)
		if !valid || e < st {
			return 0, 0, false, false
		}
		end = min(e, size-1)
	}
	if st >= size {
		return 0, 0, false, true
	}
	return st, end - st + 1, true, false
}

// trimOWS trims the optional whitespace of RFC 9110 (SP, HTAB).
func trimOWS(s string) string { return strings.Trim(s, " \t") }

// rangePos reads a position of a byte range: 1*DIGIT (RFC 9110 14.1.1),
// which strconv.ParseInt alone would widen with a sign, within int64.
func rangePos(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// stream makes rc the response body of rq, answered with status: it
// finishes rq once closed (bodyClosed), a stream of want bytes (-1:
// unknown) read short being an error. The countingBody is rq's own (no
// allocation); fasthttp lets go of it in CloseWithError, before finish
// recycles rq.
func (rq *request) stream(rc io.ReadCloser, status int, want int64) *countingBody {
	rq.status, rq.want = status, want
	rq.body = countingBody{rc: rc, r: rq.r, done: rq, size: want}
	return &rq.body
}

// bodyClosed finishes a request whose answer streamed (stream).
func (rq *request) bodyClosed(read int64, err error) {
	if err == nil && rq.want >= 0 && read != rq.want {
		err = io.ErrUnexpectedEOF
	}
	rq.finish(rq.status, read, err)
}

// errStreamPanicked: a Read of an answer's stream panicked. fasthttp
// recovered the panic and closed the stream afterwards; whatever that
// Read was doing (a step's connection, the pipeline's streams) is in an
// unknown state, so its owner is never reused.
var errStreamPanicked = errors.New("a read of the answer's stream panicked")

// countingBody wraps a stream the router hands to fasthttp: it counts the
// bytes and reports once when fasthttp closes it (end of response, client
// gone or write error: CloseWithError).
type countingBody struct {
	rc io.ReadCloser
	r  *Router
	// size is the stream's length as the answer's Content-Length says
	// (-1: unknown).
	size   int64
	n      int64
	err    error
	closed bool
	// reading is set while a Read of rc runs: set when fasthttp closes
	// the stream, that Read panicked (fasthttp recovers a panic of the
	// body stream and closes it later).
	reading bool
	// done is told once, when the stream is closed (an interface
	// rather than a closure: nothing to allocate per request). It may
	// recycle the countingBody (request.stream): nothing of c is touched
	// after it.
	done interface{ bodyClosed(n int64, err error) }
}

func (c *countingBody) Read(p []byte) (int, error) {
	c.reading = true
	n, err := c.rc.Read(p)
	c.reading = false
	c.n += int64(n)
	c.r.metrics.bytesOut.Add(float64(n))
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// CloseWithError is how fasthttp closes the stream (its closeBodyStream:
// at the answer's end, at the connection's reset, or when a write failed,
// with werr that write's error): werr, when set, is why the answer did
// not reach the client whole (it hung up, the write timed out), the only
// word of it an answer of unknown size (chunked) gets; it is reported
// unless a read error already is. countingBody has no Close: fasthttp
// calls Close and then CloseWithError on a stream that has both, and the
// first may recycle it (done).
func (c *countingBody) CloseWithError(werr error) error {
	if c.closed {
		return nil
	}
	c.closed = true
	switch {
	case c.reading:
		c.err = errStreamPanicked
	case c.err == nil:
		c.err = werr
	}
	err := c.rc.Close()
	if c.done != nil {
		c.done.bodyClosed(c.n, c.err)
	}
	return err
}

// copyBufs are the buffers the router's response streams copy with
// (WriteTo), instead of a fresh 32 KiB one per response.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// writeTo copies r to w with a pooled buffer until EOF: the WriteTo of the
// router's response streams, which fasthttp's writer reaches through
// io.Copy once its own buffer is full.
func writeTo(w io.Writer, r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
			if m != n {
				return total, io.ErrShortWrite
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// WriteTo implements io.WriterTo (see writeTo). A stream whose whole
// bytes are in memory (memBody: a step's answer read at once, a warm
// object) and not yet read goes to w in one Write, without the copy
// through a pooled buffer. A failed Write is not the stream's error:
// fasthttp passes it on to CloseWithError.
func (c *countingBody) WriteTo(w io.Writer) (int64, error) {
	if mb, ok := c.rc.(memBody); ok && c.n == 0 && c.size > 0 {
		if b := mb.Bytes(); int64(len(b)) == c.size {
			n, err := w.Write(b)
			c.n = int64(n)
			c.r.metrics.bytesOut.Add(float64(n))
			return c.n, err
		}
	}
	return writeTo(w, c)
}
