// Package client is the Go client of the admin API (docs/api.md). qdoractl is
// built on it, and end-to-end tests drive the platform through it. Every call
// is signed with the caller's AK/SK in the Qiniu form (internal/auth.SignRequest).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/doraproject/dora/internal/api"
	"github.com/doraproject/dora/internal/auth"
)

// Limits on what the client reads into memory.
const (
	// MaxReplyBytes caps a JSON reply the client decodes.
	MaxReplyBytes = 32 << 20
	// maxErrorBytes caps the error body read for an APIError message.
	maxErrorBytes = 64 << 10
)

// APIError is a non-2xx reply of the admin API: its status, the message of
// its JSON error body and its X-Reqid, so users can quote it.
type APIError struct {
	Status  int
	Message string
	Reqid   string
}

// Error renders the message with the status and the request id.
func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Reqid != "" {
		return fmt.Sprintf("%s (status %d, reqid %s)", msg, e.Status, e.Reqid)
	}
	return fmt.Sprintf("%s (status %d)", msg, e.Status)
}

// StatusOf returns the HTTP status of an *APIError inside err, or 0.
func StatusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// Timeouts of the client New makes. There is no total timeout (uploads and
// log streams last as long as they need; callers bound them with their
// context), but a server that does not accept the connection or never
// answers the request fails the call instead of hanging.
const (
	// DialTimeout bounds connecting (TCP), DialTimeout again the TLS handshake.
	DialTimeout = 10 * time.Second
	// ResponseHeaderTimeout bounds the wait for the reply's headers after
	// the request (body included) is sent: above the server's own bound on
	// a runtime call made for a request (one minute).
	ResponseHeaderTimeout = 3 * time.Minute
)

// NewHTTPClient returns the *http.Client New uses: the default transport
// (proxy from the environment, keep-alives) with the given dial/TLS and
// response-header timeouts, and no total timeout.
func NewHTTPClient(dial, responseHeader time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = dial
	tr.ResponseHeaderTimeout = responseHeader
	return &http.Client{Transport: tr}
}

// Client calls one admin API endpoint with one key pair. It is safe for
// concurrent use.
type Client struct {
	endpoint *url.URL
	ak, sk   string
	// HTTP is the transport; New sets NewHTTPClient(DialTimeout,
	// ResponseHeaderTimeout). A nil HTTP (a Client not made by New) uses
	// such a client too, never http.DefaultClient (no timeouts).
	HTTP *http.Client
	// Now stamps X-Qiniu-Date; time.Now when nil (tests set it).
	Now func() time.Time
}

// New returns a client of the admin API at endpoint ("http://127.0.0.1:8090"
// or "127.0.0.1:8090": http is assumed when the scheme is missing). A bad
// endpoint surfaces as an error on the first call.
func New(endpoint, ak, sk string) *Client {
	return &Client{endpoint: parseEndpoint(endpoint), ak: ak, sk: sk, HTTP: NewHTTPClient(DialTimeout, ResponseHeaderTimeout)}
}

func parseEndpoint(s string) *url.URL {
	s = strings.TrimSpace(s)
	if s != "" && !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(strings.TrimRight(s, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil
	}
	u.Path, u.RawPath, u.RawQuery, u.Fragment = strings.TrimRight(u.Path, "/"), "", "", ""
	return u
}

// ErrBadEndpoint is returned by every call of a client made with an endpoint
// that is not an http(s) URL.
var ErrBadEndpoint = errors.New("endpoint must be an http(s) URL such as http://127.0.0.1:8090")

// Endpoint returns the normalised endpoint URL ("" when invalid).
func (c *Client) Endpoint() string {
	if c.endpoint == nil {
		return ""
	}
	return c.endpoint.String()
}

// Host returns the endpoint's host:port, the registry host for image pushes.
func (c *Client) Host() string {
	if c.endpoint == nil {
		return ""
	}
	return c.endpoint.Host
}

// AccessKey returns the client's AK.
func (c *Client) AccessKey() string { return c.ak }

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return NewHTTPClient(DialTimeout, ResponseHeaderTimeout)
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// request describes one call.
type request struct {
	method string
	path   string // already escaped, starting with /v1/
	query  url.Values
	// json is marshalled as the body when non-nil.
	json any
	// body is streamed when non-nil: an upload (object PUT, build POST),
	// never part of the signature whatever contentType says (the server
	// signs uploads the same way: path, query, host and type).
	body        io.Reader
	size        int64 // body length; -1 unknown
	contentType string
	header      http.Header
}

func (c *Client) newRequest(ctx context.Context, r request) (*http.Request, error) {
	if c.endpoint == nil {
		return nil, ErrBadEndpoint
	}
	u := *c.endpoint
	full := u.Path + r.path
	u.RawPath = full
	p, err := url.PathUnescape(full)
	if err != nil {
		return nil, fmt.Errorf("bad path %q: %w", full, err)
	}
	if unroutable(p) {
		return nil, errUnroutable
	}
	u.Path = p
	if len(r.query) > 0 {
		u.RawQuery = r.query.Encode()
	}
	var signed []byte
	var body io.Reader
	ctype := r.contentType
	switch {
	case r.json != nil:
		b, err := json.Marshal(r.json)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		signed, body, ctype = b, bytes.NewReader(b), "application/json"
	case r.body != nil:
		body = r.body
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if r.json != nil {
		req.ContentLength = int64(len(signed))
	} else if r.body != nil {
		req.ContentLength = r.size
		if r.size == 0 {
			req.Body = http.NoBody
		}
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("User-Agent", "qdoractl")
	auth.SignRequest(req, c.ak, c.sk, signed, c.now())
	return req, nil
}

// errUnroutable refuses a path the API's mux would answer with a redirect
// to its cleaned form, which the signature, made over the path sent, never
// verifies on.
var errUnroutable = errors.New(`an empty, "." or ".." name or path segment cannot be sent (the API would route it elsewhere)`)

// unroutable reports whether the unescaped path p has an empty, "." or ".."
// segment.
func unroutable(p string) bool {
	for _, s := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		if s == "" || s == "." || s == ".." {
			return true
		}
	}
	return false
}

// do sends the request; on a 2xx it returns the response (the caller closes
// its body), otherwise an *APIError.
func (c *Client) do(ctx context.Context, r request) (*http.Response, error) {
	req, err := c.newRequest(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// ErrorFromResponse reads a non-2xx reply (at most 64 KiB of its body) as
// the *APIError every call of the client returns: the JSON error's
// message, else a proxy's HTML page's title, else the text of the body,
// else the status text. Callers making requests of their own (qdoractl's
// pfop) use it to report errors alike.
func ErrorFromResponse(resp *http.Response) *APIError { return decodeError(resp) }

func decodeError(resp *http.Response) *APIError {
	e := &APIError{Status: resp.StatusCode, Reqid: resp.Header.Get("X-Reqid")}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
	var body api.ErrorBody
	if json.Unmarshal(b, &body) == nil && body.Error != "" {
		e.Message = body.Error
	} else if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "text/html" {
		// A reverse proxy's error page: its title, never its markup.
		e.Message = htmlTitle(string(b))
	} else if t := strings.TrimSpace(string(b)); t != "" && !strings.HasPrefix(t, "{") {
		e.Message = t
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// htmlTitle returns the text of page's <title> on one line, "" when it
// has none.
func htmlTitle(page string) string {
	lower := strings.ToLower(page)
	i := strings.Index(lower, "<title>")
	if i < 0 {
		return ""
	}
	rest := page[i+len("<title>"):]
	j := strings.Index(strings.ToLower(rest), "</title>")
	if j < 0 {
		return ""
	}
	return html.UnescapeString(strings.Join(strings.Fields(rest[:j]), " "))
}

// call sends r and decodes a JSON reply into out (when non-nil).
func (c *Client) call(ctx context.Context, r request, out any) error {
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBytes))
		return nil
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, MaxReplyBytes))
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode reply: %w", r.method, r.path, err)
	}
	return nil
}

// stream sends r and returns the reply body for the caller to read and close.
func (c *Client) stream(ctx context.Context, r request) (io.ReadCloser, error) {
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// seg escapes one path segment.
func seg(s string) string { return api.Seg(s) }

// keyPath escapes an object key segment by segment, keeping its slashes.
func keyPath(key string) string { return api.KeyPath(key) }
