// Package httpmirror is a read-only origin that fetches objects from a
// bucket's back-to-source mirror: GET <mirror base><escaped key>, with a
// timeout and a size cap, never following a redirect to another host, and,
// unless Config.AllowPrivate, never connecting to a loopback, private,
// link-local or otherwise non-public address (checked when dialling, after
// DNS: see router/netguard).
package httpmirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/router/netguard"
	"github.com/doraproject/dora/router/origin"
)

// Defaults for a zero Config.
const (
	DefaultTimeout = 30 * time.Second
	DefaultMaxSize = 1 << 30
	maxRedirects   = 5
)

// Config tunes a Mirror.
type Config struct {
	Timeout time.Duration // whole request, body included; DefaultTimeout when 0
	MaxSize int64         // largest object fetched; DefaultMaxSize when 0
	// Client is a client built on http.DefaultTransport (without proxy)
	// when nil; its CheckRedirect is replaced. Unless AllowPrivate, its
	// Transport must be nil or an *http.Transport, which is cloned with
	// the address guard as its dialer and no proxy; any other
	// RoundTripper is refused (every request fails with
	// netguard.ErrNotPublic), since the guard could not be applied.
	Client *http.Client
	// AllowPrivate lets mirrors be reached on loopback, private and other
	// non-public addresses (dorad dev, tests). Off in production: the
	// admin refuses private literals in a mirror URL, but a host name can
	// resolve to anything, so the check is repeated at connect time.
	AllowPrivate bool
}

// Mirror fetches objects from HTTP mirrors (back-to-source). At binds it
// to one bucket's mirror base URL: the caller, which knows the bucket, names
// the URL, so the Mirror needs no lookup of its own (and no late wiring).
type Mirror struct {
	cfg    Config
	client *http.Client
}

// At returns the reader of the objects under baseURL, a bucket's mirror:
// key k is fetched from <baseURL>/<escaped k>. An empty baseURL (the bucket
// has no mirror) finds nothing: every object is origin.ErrNotFound.
func (m *Mirror) At(baseURL string) origin.Reader { return bound{m: m, base: baseURL} }

// bound is a Mirror bound to one base URL.
type bound struct {
	m    *Mirror
	base string
}

var _ origin.Reader = bound{}

// Stat asks the mirror for an object's metadata (HEAD, or GET when HEAD is
// not allowed).
func (b bound) Stat(ctx context.Context, bucket, key string) (origin.Object, error) {
	return b.m.stat(ctx, b.base, bucket, key)
}

// open GETs an object from the mirror at base, [offset, offset+length) of it (length < 0: to the
// end); see Mirror.open.
func (b bound) Open(ctx context.Context, bucket, key string, offset, length int64) (io.ReadCloser, origin.Object, error) {
	return b.m.open(ctx, b.base, bucket, key, offset, length)
}

// New returns a Mirror.
func New(cfg Config) *Mirror {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	var c http.Client
	if cfg.Client != nil {
		c = *cfg.Client
	}
	c.CheckRedirect = sameHostRedirects
	if !cfg.AllowPrivate {
		c.Transport = guarded(c.Transport, false)
	} else if _, ok := orDefault(c.Transport).(*http.Transport); ok {
		// Loopback and private addresses allowed; link-local and
		// metadata addresses still refused.
		c.Transport = guarded(c.Transport, true)
	}
	return &Mirror{cfg: cfg, client: &c}
}

// dialTimeout bounds connecting to a mirror.
const dialTimeout = 30 * time.Second

// guarded returns rt with its dialer replaced by one refusing non-public
// addresses and its proxy removed (a proxy would resolve the name instead
// of the guard); rt nil means http.DefaultTransport. A RoundTripper that is
// no *http.Transport cannot be guarded and is replaced by one that refuses.
func guarded(rt http.RoundTripper, allowPrivate bool) http.RoundTripper {
	t, ok := orDefault(rt).(*http.Transport)
	if !ok {
		return refuse{}
	}
	t = t.Clone()
	t.Proxy = nil
	t.DialContext = netguard.Dialer(dialTimeout, allowPrivate).DialContext
	t.DialTLSContext = nil
	t.Dial, t.DialTLS = nil, nil //nolint:staticcheck // cleared so that DialContext is the only dialer
	return t
}

func orDefault(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		return http.DefaultTransport
	}
	return rt
}

// refuse is the transport of a Mirror whose custom RoundTripper could not
// be guarded.
type refuse struct{}

func (refuse) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	return nil, fmt.Errorf("%w: a custom mirror transport cannot be guarded (set AllowPrivate or use an *http.Transport)", netguard.ErrNotPublic)
}

var errOtherHost = errors.New("mirror redirected to another host")

// sameHostRedirects follows at most maxRedirects redirects, all to the
// original scheme and host.
func sameHostRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	first := via[0].URL
	if req.URL.Host != first.Host || req.URL.Scheme != first.Scheme {
		return fmt.Errorf("%w: %s", errOtherHost, req.URL.Redacted())
	}
	return nil
}

// objectURL builds <base><escaped key>, checking the base.
func (m *Mirror) objectURL(base, bucket, key string) (string, error) {
	if err := dora.ValidateKey(key); err != nil {
		return "", err
	}
	if base == "" {
		return "", origin.ErrNotFound
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("mirror of %s: bad base URL: %w", bucket, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("mirror of %s: base URL scheme %q: only http and https", bucket, u.Scheme)
	}
	if u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("mirror of %s: base URL %q must be scheme://host[/path] without query", bucket, u.Redacted())
	}
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	b := u.String()
	if !strings.HasSuffix(b, "/") {
		b += "/"
	}
	return b + strings.Join(segs, "/"), nil
}

// stat asks the mirror at base for an object's metadata (HEAD, or GET when
// HEAD is not allowed).
func (m *Mirror) stat(ctx context.Context, base, bucket, key string) (origin.Object, error) {
	obj, err := m.head(ctx, base, bucket, key)
	if err != errHeadUnsupported {
		return obj, err
	}
	rc, obj, err := m.open(ctx, base, bucket, key, 0, -1)
	if err != nil {
		return origin.Object{}, err
	}
	rc.Close()
	return obj, nil
}

var errHeadUnsupported = errors.New("HEAD not supported")

func (m *Mirror) head(ctx context.Context, base, bucket, key string) (origin.Object, error) {
	u, err := m.objectURL(base, bucket, key)
	if err != nil {
		return origin.Object{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return origin.Object{}, fmt.Errorf("mirror %s/%s: %w", bucket, key, err)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return origin.Object{}, fmt.Errorf("mirror %s/%s: %w", bucket, key, err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented:
		return origin.Object{}, errHeadUnsupported
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return origin.Object{}, fmt.Errorf("mirror %s/%s: %w", bucket, key, origin.ErrNotFound)
	case resp.StatusCode != http.StatusOK:
		return origin.Object{}, fmt.Errorf("mirror %s/%s: status %d", bucket, key, resp.StatusCode)
	}
	obj := objectOf(bucket, key, resp)
	obj.Size = resp.ContentLength
	if obj.Size > m.cfg.MaxSize {
		return origin.Object{}, fmt.Errorf("mirror %s/%s: %d bytes, over %d: %w", bucket, key, obj.Size, m.cfg.MaxSize, origin.ErrTooLarge)
	}
	return obj, nil
}

func objectOf(bucket, key string, resp *http.Response) origin.Object {
	obj := origin.Object{Bucket: bucket, Key: key, Size: -1, MimeType: resp.Header.Get("Content-Type")}
	etag := strings.TrimPrefix(resp.Header.Get("ETag"), "W/")
	obj.ETag = strings.Trim(etag, `"`)
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		obj.Modified = t.UTC()
	}
	return obj
}

// open GETs an object from the mirror at base, [offset, offset+length) of it (length < 0: to the
// end), asking the mirror for a range and skipping bytes itself when the
// mirror ignores it. The stream fails with ErrTooLarge past MaxSize, and
// with the context's error past Timeout. Object.Size is the whole object's
// size when the mirror tells it, else -1.
func (m *Mirror) open(ctx context.Context, base, bucket, key string, offset, length int64) (io.ReadCloser, origin.Object, error) {
	if offset < 0 {
		return nil, origin.Object{}, fmt.Errorf("mirror %s/%s: negative offset %d", bucket, key, offset)
	}
	u, err := m.objectURL(base, bucket, key)
	if err != nil {
		return nil, origin.Object{}, err
	}
	fail := func(err error) (io.ReadCloser, origin.Object, error) {
		return nil, origin.Object{}, fmt.Errorf("mirror %s/%s: %w", bucket, key, err)
	}
	if length == 0 {
		obj, err := m.stat(ctx, base, bucket, key)
		if err != nil {
			return nil, origin.Object{}, err
		}
		return io.NopCloser(strings.NewReader("")), obj, nil
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		cancel()
		return fail(err)
	}
	if offset > 0 || length > 0 {
		r := "bytes=" + strconv.FormatInt(offset, 10) + "-"
		if length > 0 {
			r += strconv.FormatInt(offset+length-1, 10)
		}
		req.Header.Set("Range", r)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		cancel()
		return fail(err)
	}
	closeAll := func() { resp.Body.Close(); cancel() }
	obj := objectOf(bucket, key, resp)
	skip := int64(0)
	switch resp.StatusCode {
	case http.StatusOK:
		obj.Size = resp.ContentLength
		skip = offset
	case http.StatusPartialContent:
		cr := resp.Header.Get("Content-Range")
		obj.Size = totalOf(cr)
		// The range sent may start before the one asked for (not
		// after: those bytes are missing).
		first, ok := firstOf(cr)
		if !ok || first > offset {
			closeAll()
			return fail(fmt.Errorf("asked for bytes from %d, answered range %q", offset, cr))
		}
		skip = offset - first
	case http.StatusNotFound, http.StatusGone:
		closeAll()
		return fail(origin.ErrNotFound)
	case http.StatusRequestedRangeNotSatisfiable:
		closeAll()
		return fail(fmt.Errorf("offset %d beyond the object", offset))
	default:
		closeAll()
		return fail(fmt.Errorf("status %d", resp.StatusCode))
	}
	if obj.Size > m.cfg.MaxSize || resp.ContentLength > m.cfg.MaxSize {
		closeAll()
		return fail(fmt.Errorf("%d bytes, over %d: %w", max(obj.Size, resp.ContentLength), m.cfg.MaxSize, origin.ErrTooLarge))
	}
	if obj.Size >= 0 && offset > obj.Size {
		closeAll()
		return fail(fmt.Errorf("offset %d beyond the object of %d bytes", offset, obj.Size))
	}
	var r io.Reader = &capReader{r: resp.Body, left: m.cfg.MaxSize}
	if skip > 0 {
		if _, err := io.CopyN(io.Discard, r, skip); err != nil {
			closeAll()
			return fail(fmt.Errorf("skip to offset %d: %w", skip, err))
		}
	}
	if length > 0 {
		r = io.LimitReader(r, length)
	}
	return &body{Reader: r, close: closeAll}, obj, nil
}

// totalOf reads the total of "bytes a-b/total"; -1 when unknown.
func totalOf(cr string) int64 {
	i := strings.LastIndexByte(cr, '/')
	if i < 0 {
		return -1
	}
	n, err := strconv.ParseInt(cr[i+1:], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// firstOf reads the first byte of "bytes a-b/total".
func firstOf(cr string) (int64, bool) {
	unit, rest, ok := strings.Cut(strings.TrimSpace(cr), " ")
	if !ok || !strings.EqualFold(unit, "bytes") {
		return 0, false
	}
	a, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(a), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// capReader fails with ErrTooLarge once more than left bytes arrive.
type capReader struct {
	r    io.Reader
	left int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, origin.ErrTooLarge
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return n - 1, fmt.Errorf("mirror object over the size cap: %w", origin.ErrTooLarge)
	}
	return n, err
}

type body struct {
	io.Reader
	close func()
}

func (b *body) Close() error { b.close(); return nil }
