package httpmirror

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doraproject/dora/router/netguard"
	"github.com/doraproject/dora/router/origin"
)

var modTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// content serves /base/<path> with http.ServeContent (ranges, HEAD).
func contentServer(t *testing.T, files map[string]string) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		data, ok := files[r.URL.EscapedPath()]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"etag-1"`)
		w.Header().Set("Content-Type", "text/plain")
		http.ServeContent(w, r, "", modTime, strings.NewReader(data))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func readAll(t *testing.T, m origin.Reader, key string, off, n int64) (string, origin.Object, error) {
	t.Helper()
	rc, obj, err := m.Open(context.Background(), "photos", key, off, n)
	if err != nil {
		return "", obj, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), obj, err
}

func TestOpenAndStat(t *testing.T) {
	srv, _ := contentServer(t, map[string]string{
		"/base/a%20b/c%3Fd%23e":    "hello world",
		"/base/%E6%97%A5%E6%9C%AC": "nihon",
	})
	m := New(Config{AllowPrivate: true}).At(srv.URL + "/base")
	tests := []struct {
		key    string
		off, n int64
		want   string
	}{
		{"a b/c?d#e", 0, -1, "hello world"},
		{"a b/c?d#e", 6, -1, "world"},
		{"a b/c?d#e", 0, 5, "hello"},
		{"a b/c?d#e", 2, 3, "llo"},
		{"日本", 0, -1, "nihon"},
		{"a b/c?d#e", 0, 0, ""},
	}
	for _, tt := range tests {
		got, obj, err := readAll(t, m, tt.key, tt.off, tt.n)
		if err != nil {
			t.Fatalf("Open(%q, %d, %d): %v", tt.key, tt.off, tt.n, err)
		}
		if got != tt.want {
			t.Errorf("Open(%q, %d, %d) = %q, want %q", tt.key, tt.off, tt.n, got, tt.want)
		}
		if wantSize := map[string]int64{"日本": 5}[tt.key]; wantSize == 0 && obj.Size != 11 || wantSize != 0 && obj.Size != wantSize {
			t.Errorf("Open(%q, %d, %d): Size = %d, want the whole object's", tt.key, tt.off, tt.n, obj.Size)
		}
		if obj.ETag != "etag-1" || obj.MimeType != "text/plain" || !obj.Modified.Equal(modTime) || obj.Key != tt.key || obj.Bucket != "photos" {
			t.Errorf("metadata %+v", obj)
		}
	}
	obj, err := m.Stat(context.Background(), "photos", "a b/c?d#e")
	if err != nil || obj.Size != 11 || obj.ETag != "etag-1" {
		t.Fatalf("Stat = %+v, %v", obj, err)
	}
}

func TestRangeIgnoredByMirror(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "0123456789") // always 200, whole body
	}))
	defer srv.Close()
	m := New(Config{AllowPrivate: true}).At(srv.URL)
	got, _, err := readAll(t, m, "k", 3, 4)
	if err != nil || got != "3456" {
		t.Fatalf("got %q, %v; want 3456", got, err)
	}
}

func TestNotFoundAndErrors(t *testing.T) {
	srv, _ := contentServer(t, nil)
	boom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusBadGateway)
	}))
	defer boom.Close()
	ctx := context.Background()
	m := New(Config{AllowPrivate: true}).At(srv.URL)
	if _, _, err := m.Open(ctx, "photos", "missing", 0, -1); !errors.Is(err, origin.ErrNotFound) {
		t.Errorf("404: %v", err)
	}
	if _, err := m.Stat(ctx, "photos", "missing"); !errors.Is(err, origin.ErrNotFound) {
		t.Errorf("Stat 404: %v", err)
	}
	if _, _, err := New(Config{AllowPrivate: true}).At("").Open(ctx, "nomirror", "k", 0, -1); !errors.Is(err, origin.ErrNotFound) {
		t.Errorf("bucket without mirror: %v", err)
	}
	mb := New(Config{AllowPrivate: true}).At(boom.URL)
	if _, _, err := mb.Open(ctx, "photos", "k", 0, -1); err == nil || errors.Is(err, origin.ErrNotFound) || !strings.Contains(err.Error(), "502") {
		t.Errorf("502: %v", err)
	}
	if _, _, err := m.Open(ctx, "photos", "../x", 0, -1); !errors.Is(err, origin.ErrBadKey) {
		t.Errorf("bad key: %v", err)
	}
}

func TestBaseURLs(t *testing.T) {
	for _, base := range []string{"ftp://h/x", "file:///etc/", "http://", "javascript:alert(1)", "http://h/?q=1", "://bad", "/relative"} {
		m := New(Config{AllowPrivate: true}).At(base)
		if _, _, err := m.Open(context.Background(), "photos", "k", 0, -1); err == nil || errors.Is(err, origin.ErrNotFound) {
			t.Errorf("base %q accepted: %v", base, err)
		}
	}
}

func TestSizeCap(t *testing.T) {
	big := strings.Repeat("x", 100)
	withLength := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, big) // small bodies get a Content-Length
	}))
	defer withLength.Close()
	chunked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 10; i++ {
			io.WriteString(w, big[:10])
			w.(http.Flusher).Flush() // no Content-Length: chunked
		}
	}))
	defer chunked.Close()
	ctx := context.Background()
	m := New(Config{AllowPrivate: true, MaxSize: 50}).At(withLength.URL)
	if _, _, err := m.Open(ctx, "photos", "k", 0, -1); !errors.Is(err, origin.ErrTooLarge) {
		t.Errorf("Content-Length over cap: %v", err)
	}
	if _, err := m.Stat(ctx, "photos", "k"); !errors.Is(err, origin.ErrTooLarge) {
		t.Errorf("Stat over cap: %v", err)
	}
	mc := New(Config{AllowPrivate: true, MaxSize: 50}).At(chunked.URL)
	rc, obj, err := mc.Open(ctx, "photos", "k", 0, -1)
	if err != nil {
		t.Fatalf("chunked Open: %v", err)
	}
	defer rc.Close()
	if obj.Size != -1 {
		t.Errorf("chunked Size = %d, want -1", obj.Size)
	}
	b, err := io.ReadAll(rc)
	if !errors.Is(err, origin.ErrTooLarge) || len(b) != 50 {
		t.Errorf("streaming past the cap: %d bytes, %v", len(b), err)
	}
	// Exactly at the cap is fine.
	me := New(Config{AllowPrivate: true, MaxSize: 100}).At(chunked.URL)
	got, _, err := readAll(t, me, "k", 0, -1)
	if err != nil || len(got) != 100 {
		t.Errorf("at the cap: %d bytes, %v", len(got), err)
	}
}

func TestRedirects(t *testing.T) {
	other, otherHits := contentServer(t, map[string]string{"/k": "stolen"})
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/same":
			http.Redirect(w, r, "/final", http.StatusFound)
		case "/final":
			io.WriteString(w, "ok")
		case "/away":
			http.Redirect(w, r, other.URL+"/k", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		}
	}))
	defer srv.Close()
	m := New(Config{AllowPrivate: true, Client: &http.Client{}}).At(srv.URL)
	if got, _, err := readAll(t, m, "same", 0, -1); err != nil || got != "ok" {
		t.Errorf("same-host redirect: %q, %v", got, err)
	}
	if _, _, err := readAll(t, m, "away", 0, -1); !errors.Is(err, errOtherHost) {
		t.Errorf("other-host redirect: %v", err)
	}
	if otherHits.Load() != 0 {
		t.Errorf("the other host was contacted %d times", otherHits.Load())
	}
	if _, _, err := readAll(t, m, "loop", 0, -1); err == nil {
		t.Error("redirect loop followed")
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("x"), 10))
		w.(http.Flusher).Flush()
		select { // stall mid-body until the client gives up
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	m := New(Config{AllowPrivate: true, Timeout: 50 * time.Millisecond}).At(srv.URL)
	rc, _, err := m.Open(context.Background(), "photos", "k", 0, -1)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	_, err = io.ReadAll(rc)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stalled body: %v, want deadline exceeded", err)
	}
}

// Without AllowPrivate a mirror on a non-public address is never
// contacted, whether the URL names it by address or by a host name that
// resolves to it ("localhost" → 127.0.0.1 here, as an attacker's DNS
// name could), through the default client or a caller's *http.Transport
// (whose proxy is dropped too: it would resolve the name instead of the
// guard); a RoundTripper that cannot be guarded refuses.
func TestPrivateMirrorRefusedAtConnect(t *testing.T) {
	srv, hits := contentServer(t, map[string]string{"/k": "secret"})
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	proxied := &http.Transport{Proxy: func(*http.Request) (*url.URL, error) { return url.Parse(srv.URL) }}
	for _, c := range []struct {
		name string
		cfg  Config
		base string
	}{
		{"literal", Config{}, srv.URL},
		{"name resolving to loopback", Config{}, "http://localhost:" + port},
		{"caller's transport with a proxy", Config{Client: &http.Client{Transport: proxied}}, "http://localhost:" + port},
		{"unguardable transport", Config{Client: &http.Client{Transport: roundTripFunc(http.DefaultTransport.RoundTrip)}}, srv.URL},
	} {
		m := New(c.cfg).At(c.base)
		if _, _, err := readAll(t, m, "k", 0, -1); !errors.Is(err, netguard.ErrNotPublic) {
			t.Errorf("%s: Open = %v, want ErrNotPublic", c.name, err)
		}
		if _, err := m.Stat(context.Background(), "photos", "k"); !errors.Is(err, netguard.ErrNotPublic) {
			t.Errorf("%s: Stat = %v, want ErrNotPublic", c.name, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the private mirror was contacted %d times", n)
	}
	// The same mirror with AllowPrivate (dorad dev).
	if got, _, err := readAll(t, New(Config{AllowPrivate: true}).At(srv.URL), "k", 0, -1); err != nil || got != "secret" {
		t.Fatalf("AllowPrivate: %q, %v", got, err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A mirror answering a Range request with 206 for another range than the
// one asked (here always from byte 0) is read from the offset asked for,
// or refused when it starts past it: its bytes were served as the range
// asked for.
func TestPartialContentOfAnotherRange(t *testing.T) {
	const data = "0123456789"
	var startAt atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := int(startAt.Load())
		w.Header().Set("Content-Range", "bytes "+strconv.Itoa(start)+"-9/10")
		w.Header().Set("Content-Length", strconv.Itoa(10-start))
		w.WriteHeader(http.StatusPartialContent)
		io.WriteString(w, data[start:])
	}))
	defer srv.Close()
	m := New(Config{AllowPrivate: true}).At(srv.URL)
	for _, c := range []struct {
		off, n int64
		want   string
	}{{3, 4, "3456"}, {3, -1, "3456789"}, {0, 2, "01"}} {
		got, obj, err := readAll(t, m, "k", c.off, c.n)
		if err != nil || got != c.want || obj.Size != 10 {
			t.Errorf("Open(%d, %d) = %q (size %d), %v; want %q", c.off, c.n, got, obj.Size, err, c.want)
		}
	}
	startAt.Store(5)
	if got, _, err := readAll(t, m, "k", 3, 4); err == nil {
		t.Errorf("a 206 from byte 5 for offset 3 read as %q", got)
	}
}
