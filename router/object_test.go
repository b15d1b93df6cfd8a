package router

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
)

func TestParseRange(t *testing.T) {
	for _, c := range []struct {
		in            string
		size          int64
		start, length int64
		ok, unsat     bool
	}{
		{"bytes=0-9", 100, 0, 10, true, false},
		{"bytes=90-", 100, 90, 10, true, false},
		{"bytes=90-200", 100, 90, 10, true, false},
		{"bytes=-10", 100, 90, 10, true, false},
		{"bytes=-200", 100, 0, 100, true, false},
		{"bytes=100-", 100, 0, 0, false, true},
		{"bytes=100-150", 100, 0, 0, false, true},
		{"bytes=-0", 100, 0, 0, false, true},
		{"bytes=0-0", 0, 0, 0, false, true},
		{"bytes=0-1,5-6", 100, 0, 0, false, false}, // several: ignored
		{"bytes=5-1", 100, 0, 0, false, false},     // invalid: ignored
		{"items=0-1", 100, 0, 0, false, false},
		{"bytes=x-1", 100, 0, 0, false, false},
		{"bytes=1", 100, 0, 0, false, false},
		{" bytes= 3 - 4 ", 100, 3, 2, true, false},
	} {
		s, n, ok, unsat := parseRange(c.in, c.size)
		if s != c.start || n != c.length || ok != c.ok || unsat != c.unsat {
			t.Errorf("parseRange(%q, %d) = %d,%d,%v,%v want %d,%d,%v,%v", c.in, c.size, s, n, ok, unsat, c.start, c.length, c.ok, c.unsat)
		}
	}
}

func TestObjectKey(t *testing.T) {
	for _, c := range []struct {
		path, key string
		status    int
	}{
		{"/a/b.txt", "a/b.txt", 0},
		{"/a%20b", "a b", 0},
		{"/", "", 404},
		{"/../etc/passwd", "", 400},
		{"/a/../../b", "", 400},
		{"/a/%2e%2e/b", "", 400},
		{"/./a", "", 400},
		{"//etc/passwd", "", 400},
		{"/a%00b", "", 400},
		{"/a%5cb", "", 400},
		{"/a//b", "", 400}, // the platform key rule: no empty segment
		{"/dir/", "", 400},
		{"/%zz", "", 400},
		{"/" + strings.Repeat("k", MaxKeyBytes+1), "", 400},
	} {
		k, err := objectKey(c.path)
		switch {
		case c.status == 0 && (err != nil || k != c.key):
			t.Errorf("objectKey(%q) = %q, %v want %q", c.path, k, err, c.key)
		case c.status != 0 && (err == nil || err.status != c.status):
			t.Errorf("objectKey(%q) = %q, %v want status %d", c.path, k, err, c.status)
		}
	}
}

func TestServeObject(t *testing.T) {
	e := newEnv(t, nil)
	data := []byte("0123456789abcdefghij")
	obj := e.objs.add("photos", "dir/a.txt", "text/plain", data)
	etag := `"` + obj.ETag + `"`
	lm := obj.Modified.Format(http.TimeFormat)
	for _, c := range []struct {
		name, method string
		hdr          map[string]string
		status       int
		body         string
		hdrWant      map[string]string
	}{
		{"get", "GET", nil, 200, string(data), map[string]string{"Content-Type": "text/plain", "ETag": etag, "Last-Modified": lm, "Content-Length": "20", "Accept-Ranges": "bytes"}},
		{"head", "HEAD", nil, 200, "", map[string]string{"Content-Length": "20", "ETag": etag, "Content-Type": "text/plain"}},
		{"range", "GET", map[string]string{"Range": "bytes=2-5"}, 206, "2345", map[string]string{"Content-Range": "bytes 2-5/20", "Content-Length": "4"}},
		{"suffix range", "GET", map[string]string{"Range": "bytes=-3"}, 206, "hij", map[string]string{"Content-Range": "bytes 17-19/20"}},
		{"head range", "HEAD", map[string]string{"Range": "bytes=0-0"}, 206, "", map[string]string{"Content-Length": "1", "Content-Range": "bytes 0-0/20"}},
		{"multi range ignored", "GET", map[string]string{"Range": "bytes=0-1,4-5"}, 200, string(data), nil},
		{"unsatisfiable", "GET", map[string]string{"Range": "bytes=20-"}, 416, "", map[string]string{"Content-Range": "bytes */20"}},
		{"if-none-match", "GET", map[string]string{"If-None-Match": etag}, 304, "", map[string]string{"ETag": etag}},
		{"if-none-match list", "GET", map[string]string{"If-None-Match": `"x", W/` + etag}, 304, "", nil},
		{"if-none-match other", "GET", map[string]string{"If-None-Match": `"other"`}, 200, string(data), nil},
		{"if-modified-since equal", "GET", map[string]string{"If-Modified-Since": lm}, 304, "", nil},
		{"if-modified-since older", "GET", map[string]string{"If-Modified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"}, 200, string(data), nil},
		{"inm wins over ims", "GET", map[string]string{"If-None-Match": `"other"`, "If-Modified-Since": lm}, 200, string(data), nil},
		{"head 304", "HEAD", map[string]string{"If-None-Match": etag}, 304, "", nil},
		// RFC 9110 preconditions.
		{"if-match", "GET", map[string]string{"If-Match": etag}, 200, string(data), nil},
		{"if-match star", "GET", map[string]string{"If-Match": "*"}, 200, string(data), nil},
		{"if-match list", "GET", map[string]string{"If-Match": `"x", ` + etag}, 200, string(data), nil},
		{"if-match other", "GET", map[string]string{"If-Match": `"other"`}, 412, "", map[string]string{"ETag": etag}},
		{"if-match weak never matches", "GET", map[string]string{"If-Match": "W/" + etag}, 412, "", nil},
		{"head if-match other", "HEAD", map[string]string{"If-Match": `"other"`}, 412, "", nil},
		{"if-match wins over ius", "GET", map[string]string{"If-Match": etag, "If-Unmodified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"}, 200, string(data), nil},
		{"if-unmodified-since equal", "GET", map[string]string{"If-Unmodified-Since": lm}, 200, string(data), nil},
		{"if-unmodified-since older", "GET", map[string]string{"If-Unmodified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"}, 412, "", nil},
		{"if-unmodified-since invalid ignored", "GET", map[string]string{"If-Unmodified-Since": "yesterday"}, 200, string(data), nil},
		{"if-range etag current", "GET", map[string]string{"Range": "bytes=2-5", "If-Range": etag}, 206, "2345", map[string]string{"Content-Range": "bytes 2-5/20"}},
		{"if-range etag stale", "GET", map[string]string{"Range": "bytes=2-5", "If-Range": `"stale"`}, 200, string(data), map[string]string{"Content-Range": "", "Content-Length": "20"}},
		{"if-range weak etag", "GET", map[string]string{"Range": "bytes=2-5", "If-Range": "W/" + etag}, 200, string(data), nil},
		{"if-range date current", "GET", map[string]string{"Range": "bytes=2-5", "If-Range": lm}, 206, "2345", nil},
		{"if-range date stale", "GET", map[string]string{"Range": "bytes=2-5", "If-Range": "Mon, 01 Jan 2024 00:00:00 GMT"}, 200, string(data), nil},
		{"if-range garbage", "GET", map[string]string{"Range": "bytes=2-5", "If-Range": "nonsense"}, 200, string(data), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.do(c.method, "photos.localhost", "/dir/a.txt", c.hdr)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d want %d (%s)", resp.StatusCode, c.status, body)
			}
			if resp.Header.Get("X-Reqid") == "" {
				t.Error("no X-Reqid")
			}
			if c.status == 416 || c.status == 412 {
				if c.method != "HEAD" {
					jsonError(t, body)
				}
			} else if string(body) != c.body {
				t.Errorf("body %q want %q", body, c.body)
			}
			for k, v := range c.hdrWant {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q want %q", k, got, v)
				}
			}
		})
	}
}

func TestBucketResolutionAndErrors(t *testing.T) {
	e := newEnv(t, nil)
	e.objs.add("photos", "k", "text/plain", []byte("hello"))
	for _, c := range []struct {
		name, method, host, path string
		status                   int
		body                     string // exact body for 200, error substring otherwise
	}{
		{"suffix host", "GET", "photos.localhost:8080", "/k", 200, "hello"},
		{"bound domain", "GET", "IMG.example.com", "/k", 200, "hello"},
		{"unknown host", "GET", "nope.localhost", "/k", 404, "no bucket"},
		{"no object", "GET", "photos.localhost", "/missing", 404, "no such object"},
		{"no key", "GET", "photos.localhost", "/", 404, "key"},
		{"traversal", "GET", "photos.localhost", "/a/../../etc/passwd", 400, "invalid key"},
		{"encoded traversal", "GET", "photos.localhost", "/%2e%2e/etc/passwd", 400, "invalid key"},
		{"post", "POST", "photos.localhost", "/k", 405, "not allowed"},
		{"malformed fop", "GET", "photos.localhost", "/k?grepd/x||", 400, "malformed"},
		{"oversized query", "GET", "photos.localhost", "/k?grepd/" + strings.Repeat("x", 3000), 414, "query longer"},
		{"11 steps", "GET", "photos.localhost", "/k?" + strings.TrimSuffix(strings.Repeat("qhash/md5|", 11), "|"), 400, "malformed"},
		{"unknown ufop", "GET", "photos.localhost", "/k?nosuchufop/x", 404, "no such ufop"},
		{"persisted absent", "GET", "photos.localhost", "/k?p/1/qhash/md5", 404, "persisted"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.do(c.method, c.host, c.path, nil)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d want %d (%s)", resp.StatusCode, c.status, body)
			}
			if resp.Header.Get("X-Reqid") == "" {
				t.Error("no X-Reqid")
			}
			if c.status == 200 {
				if string(body) != c.body {
					t.Errorf("body %q want %q", body, c.body)
				}
				return
			}
			if msg := jsonError(t, body); !strings.Contains(msg, c.body) {
				t.Errorf("error %q does not mention %q", msg, c.body)
			}
		})
	}
}

func TestOwnEndpoints(t *testing.T) {
	e := newEnv(t, nil)
	e.objs.add("photos", "healthz", "text/plain", []byte("a key named healthz"))
	resp, body := e.get("localhost", "/healthz")
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("ok")) {
		t.Fatalf("healthz: %d %s", resp.StatusCode, body)
	}
	// A bucket's key named like an endpoint is the bucket's.
	if _, body := e.get("photos.localhost", "/healthz"); string(body) != "a key named healthz" {
		t.Fatalf("bucket key shadowed: %s", body)
	}
	e.get("photos.localhost", "/healthz") // one more request for the counters
	resp, body = e.get(e.addr, "/metrics")
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`dora_router_requests_total{code="200",ufop="-"}`)) {
		t.Fatalf("metrics: %d\n%s", resp.StatusCode, body)
	}
	// Not the router's own name and not a bucket: no metrics.
	if resp, _ := e.get("evil.example.com", "/metrics"); resp.StatusCode != 404 {
		t.Fatalf("metrics on a foreign host: %d", resp.StatusCode)
	}
	// Unknown one-shot URL.
	resp, body = e.get(e.addr, "/_dora/src/0123456789abcdef0123456789abcdef")
	if resp.StatusCode != 404 {
		t.Fatalf("unknown src: %d", resp.StatusCode)
	}
	jsonError(t, body)
}

func TestHeaderTooLarge(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxHeaderBytes = 4096 })
	resp, body := e.do("GET", "photos.localhost", "/k", map[string]string{"X-Big": strings.Repeat("x", 8000)})
	if resp.StatusCode != 431 {
		t.Fatalf("status %d (%s)", resp.StatusCode, body)
	}
	jsonError(t, body)
}

// A bucket bound (in the store, past the admin's checks) to one of the
// router's own host names — loopback, localhost, PublicAddr's host,
// OwnHosts — does not shadow the one-shot input URLs, /healthz or
// /metrics: the binding is ignored, with a log line.
func TestOwnHostsBeatBoundDomains(t *testing.T) {
	var logs syncBuffer
	e := newEnv(t, func(c *Config) {
		c.OwnHosts = []string{"router.internal:9000"}
		c.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	e.put(store.BucketKey("shadow"), dora.Bucket{Name: "shadow", Owner: alice.ID, Domains: []string{"localhost", "127.0.0.1"}})
	e.putRaw(store.DomainKey("router.internal"), "shadow")
	waitUntil(t, "the shadow bindings", func() bool {
		_, ok := e.r.meta.Snapshot().DomainBucket("router.internal")
		_, ok2 := e.r.meta.Snapshot().DomainBucket("127.0.0.1")
		return ok && ok2
	})
	for _, k := range []string{"healthz", "metrics", "_dora/src/0123456789abcdef0123456789abcdef", "k"} {
		e.objs.add("shadow", k, "text/plain", []byte("shadow's "+k))
	}
	for _, host := range []string{e.addr, "localhost", "router.internal"} {
		resp, body := e.get(host, "/healthz")
		if resp.StatusCode != 200 || string(body) != `{"status":"ok"}`+"\n" {
			t.Errorf("%s/healthz = %d %q", host, resp.StatusCode, body)
		}
		resp, body = e.get(host, "/metrics")
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte("dora_router_requests_total")) {
			t.Errorf("%s/metrics = %d %.100q", host, resp.StatusCode, body)
		}
		resp, body = e.get(host, "/_dora/src/0123456789abcdef0123456789abcdef")
		if resp.StatusCode != 404 || !strings.Contains(jsonError(t, body), "input URL") {
			t.Errorf("%s unknown one-shot URL = %d %q", host, resp.StatusCode, body)
		}
		if resp, body := e.get(host, "/k"); resp.StatusCode != 404 || !strings.Contains(jsonError(t, body), "no bucket") {
			t.Errorf("%s/k = %d %q, want the binding ignored", host, resp.StatusCode, body)
		}
	}
	// A registered one-shot URL streams on the router's own address.
	tok, _, err := e.r.src.register(context.Background(), flow{body: io.NopCloser(strings.NewReader("input")), size: 5}, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := e.get(e.addr, srcPrefix+tok); resp.StatusCode != 200 || string(body) != "input" {
		t.Errorf("one-shot URL = %d %q", resp.StatusCode, body)
	}
	// The bucket itself still answers on its platform name.
	if _, body := e.get("shadow.localhost", "/k"); string(body) != "shadow's k" {
		t.Errorf("shadow.localhost/k = %q", body)
	}
	for _, h := range []string{"127.0.0.1", "localhost", "router.internal"} {
		if want := `"host":"` + h + `","bucket":"shadow"`; !strings.Contains(logs.String(), want) {
			t.Errorf("no log line with %s", want)
		}
	}
}

// memStream is a stream whose bytes are in memory (memBody); a Read of it
// counts (the copy the one-Write path saves).
type memStream struct {
	b     []byte
	reads int
	off   int
}

func (m *memStream) Bytes() []byte { return m.b }
func (m *memStream) Close() error  { return nil }
func (m *memStream) Read(p []byte) (int, error) {
	m.reads++
	if m.off == len(m.b) {
		return 0, io.EOF
	}
	n := copy(p, m.b[m.off:])
	m.off += n
	return n, nil
}

// failWriter fails every Write.
type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

// TestCountingBodyWritesMemoryAtOnce: an answer whose bytes are in memory
// and of the answer's length goes to fasthttp's writer in one Write with
// no Read (no copy through a buffer); one of another length is read as a
// stream; a failed Write is returned and is not the stream's error.
func TestCountingBodyWritesMemoryAtOnce(t *testing.T) {
	r, _ := hotRouterWith(t, nil)
	data := []byte("hello, world")

	m := &memStream{b: data}
	c := countingBody{rc: m, r: r, size: int64(len(data))}
	var out bytes.Buffer
	if n, err := c.WriteTo(&out); err != nil || n != int64(len(data)) || out.String() != string(data) {
		t.Fatalf("in memory: %d %v %q", n, err, out.String())
	}
	if m.reads != 0 || c.n != int64(len(data)) {
		t.Fatalf("in memory: %d reads, %d counted; want 0 and %d", m.reads, c.n, len(data))
	}

	// Bytes longer than the answer's length: read as a stream, which
	// then fails for its length (bodyClosed), not sent whole.
	m = &memStream{b: data}
	c = countingBody{rc: m, r: r, size: 5}
	out.Reset()
	if n, err := c.WriteTo(&out); err != nil || n != int64(len(data)) || m.reads == 0 {
		t.Fatalf("another length: %d %v, %d reads", n, err, m.reads)
	}

	m = &memStream{b: data}
	c = countingBody{rc: m, r: r, size: -1}
	out.Reset()
	if n, err := c.WriteTo(&out); err != nil || n != int64(len(data)) || m.reads == 0 {
		t.Fatalf("unknown length: %d %v, %d reads", n, err, m.reads)
	}

	gone := errors.New("client gone")
	m = &memStream{b: data}
	c = countingBody{rc: m, r: r, size: int64(len(data))}
	if n, err := c.WriteTo(failWriter{gone}); !errors.Is(err, gone) || n != 0 || c.err != nil {
		t.Fatalf("failed write: %d %v, stream error %v", n, err, c.err)
	}
}
