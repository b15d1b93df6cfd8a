package s3_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/origin/local"
	"github.com/doraproject/dora/router/origin/origintest"
	s3origin "github.com/doraproject/dora/router/origin/s3"
)

const testBucket = "dora-test"

// env is one SeaweedFS server shared by the subtests of a test.
type env struct {
	w    *agenttest.SeaweedFS
	n    atomic.Int64
	cred aws.CredentialsProvider
}

func newEnv(t *testing.T) *env {
	w := agenttest.StartSeaweedFS(t)
	w.CreateBucket(t, testBucket)
	return &env{w: w, cred: credentials.NewStaticCredentialsProvider(w.AccessKey, w.SecretKey, "")}
}

// config is a Config for the test bucket under a fresh prefix.
func (e *env) config(endpoint string) s3origin.Config {
	return s3origin.Config{
		Bucket:      testBucket,
		Prefix:      fmt.Sprintf("t%d/x", e.n.Add(1)),
		Endpoint:    endpoint,
		PathStyle:   true,
		PartSize:    s3origin.MinPartSize,
		Credentials: e.cred,
	}
}

func (e *env) open(t *testing.T, cfg s3origin.Config) *s3origin.Store {
	t.Helper()
	s, err := s3origin.New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// uploads lists the test bucket's unfinished multipart uploads.
func (e *env) uploads(t *testing.T) []string {
	t.Helper()
	out, err := e.w.Client().ListMultipartUploads(t.Context(), &awss3.ListMultipartUploadsInput{Bucket: aws.String(testBucket)})
	if err != nil {
		t.Fatalf("ListMultipartUploads: %v", err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, aws.ToString(u.Key))
	}
	return keys
}

func TestAgainstSeaweedFS(t *testing.T) {
	e := newEnv(t)
	t.Run("Contract", func(t *testing.T) {
		// S3 keys hold at most 1024 bytes, the prefix ("tN/x/") and
		// the bucket ("bkt/") included.
		origintest.Run(t, func(t *testing.T) origintest.Store { return e.open(t, e.config(e.w.Endpoint)) },
			origintest.Options{LargeSize: 11 << 20, MaxKeyBytes: 1024 - len("t999/x/bkt/")})
		if ups := e.uploads(t); len(ups) != 0 {
			t.Errorf("multipart uploads left behind by failed or cancelled puts: %q", ups)
		}
	})
	t.Run("Layout", func(t *testing.T) { testLayout(t, e) })
	t.Run("ForeignObjects", func(t *testing.T) { testForeign(t, e) })
	t.Run("ListPage", func(t *testing.T) { testListPage(t, e) })
	t.Run("StartChecks", func(t *testing.T) { testStartChecks(t, e) })
	t.Run("SlowDownRetried", func(t *testing.T) { testSlowDown(t, e) })
	t.Run("SilentStoreBounded", func(t *testing.T) { testSilent(t, e) })
	t.Run("RangeReadsOnlyTheRange", func(t *testing.T) { testRangeBytes(t, e) })
	t.Run("ExactKeys", func(t *testing.T) { testExactKeys(t, e) })
}

// testLayout: bucket b, key k is the S3 object <prefix>/b/k, with the
// Qiniu etag and type as metadata, for one PUT and for multipart.
func testLayout(t *testing.T, e *env) {
	cfg := e.config(e.w.Endpoint)
	s := e.open(t, cfg)
	c := e.w.Client()
	small := origintest.Put(t, s, "pics", "a b/c+d.txt", "hello")
	big := bytes.Repeat([]byte("0123456789abcdef"), (12<<20)/16)
	bigObj, err := s.Put(t.Context(), "pics", "big.bin", bytes.NewReader(big), origin.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]origin.Object{"a b/c+d.txt": small, "big.bin": bigObj} {
		out, err := c.HeadObject(t.Context(), &awss3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(cfg.Prefix + "/pics/" + key)})
		if err != nil {
			t.Fatalf("S3 object %s/pics/%s: %v", cfg.Prefix, key, err)
		}
		if out.Metadata["qetag"] != want.ETag || aws.ToInt64(out.ContentLength) != want.Size || aws.ToString(out.ContentType) != want.MimeType {
			t.Errorf("S3 object of %s: metadata %v, length %d, type %q; want etag %s size %d type %s",
				key, out.Metadata, aws.ToInt64(out.ContentLength), aws.ToString(out.ContentType), want.ETag, want.Size, want.MimeType)
		}
	}
	if e, _, _ := local.ETag(bytes.NewReader(big)); bigObj.ETag != e {
		t.Errorf("multipart etag %s, want %s", bigObj.ETag, e)
	}
	// Without a prefix: b/k at the bucket's root.
	cfg2 := e.config(e.w.Endpoint)
	cfg2.Prefix = ""
	s2 := e.open(t, cfg2)
	origintest.Put(t, s2, "rootbkt", "k", "at the root")
	if _, err := c.HeadObject(t.Context(), &awss3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String("rootbkt/k")}); err != nil {
		t.Errorf("no-prefix layout: %v", err)
	}
}

// testForeign: objects written by a plain S3 client are served as they
// are: their S3 ETag stands in for the etag, their type is theirs.
func testForeign(t *testing.T, e *env) {
	cfg := e.config(e.w.Endpoint)
	s := e.open(t, cfg)
	c := e.w.Client()
	put := func(key, ctype, body string) {
		in := &awss3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(cfg.Prefix + "/ext/" + key), Body: strings.NewReader(body)}
		if ctype != "" {
			in.ContentType = aws.String(ctype)
		}
		if _, err := c.PutObject(t.Context(), in); err != nil {
			t.Fatal(err)
		}
	}
	put("doc.json", "", `{"a":1}`)
	put("typed", "image/webp", "RIFF....WEBP")
	put("dir/", "", "") // a "directory marker": not a Dora key
	obj, err := s.Stat(t.Context(), "ext", "doc.json")
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.HeadObject(t.Context(), &awss3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(cfg.Prefix + "/ext/doc.json")})
	if err != nil {
		t.Fatal(err)
	}
	if obj.ETag != strings.Trim(aws.ToString(out.ETag), `"`) || obj.ETag == "" || obj.Size != 7 || obj.MimeType != "application/json" {
		t.Errorf("foreign object: %+v (S3 ETag %s)", obj, aws.ToString(out.ETag))
	}
	if got, o := origintest.Read(t, s, "ext", "doc.json", 0, -1); got != `{"a":1}` || o.ETag != obj.ETag {
		t.Errorf("foreign read: %q %+v", got, o)
	}
	if got, o := origintest.Read(t, s, "ext", "typed", 4, 4); got != "...." || o.MimeType != "image/webp" {
		t.Errorf("foreign range read: %q %+v", got, o)
	}
	objs, err := s.List(t.Context(), "ext", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	if strings.Join(keys, ",") != "doc.json,typed" {
		t.Errorf("List of foreign objects = %q, want the two Dora-addressable keys", keys)
	}
}

func testListPage(t *testing.T, e *env) {
	s := e.open(t, e.config(e.w.Endpoint))
	for _, k := range []string{"a/1", "a/2", "b", "c/x/1", "c/y", "d"} {
		origintest.Put(t, s, "lpage", k, k)
	}
	type want struct {
		objs, prefixes, next string
	}
	tests := []struct {
		opts s3origin.ListOptions
		want want
	}{
		{s3origin.ListOptions{Delimiter: "/"}, want{"b,d", "a/,c/", ""}},
		{s3origin.ListOptions{Delimiter: "/", Limit: 2}, want{"b", "a/", "b"}},
		{s3origin.ListOptions{Delimiter: "/", Marker: "b", Limit: 2}, want{"d", "c/", ""}},
		{s3origin.ListOptions{Delimiter: "/", Marker: "b"}, want{"d", "c/", ""}},
		{s3origin.ListOptions{Prefix: "c/", Delimiter: "/"}, want{"c/y", "c/x/", ""}},
		{s3origin.ListOptions{Limit: 2}, want{"a/1,a/2", "", "a/2"}},
		{s3origin.ListOptions{Marker: "a/2", Limit: 2}, want{"b,c/x/1", "", "c/x/1"}},
		{s3origin.ListOptions{Marker: "c/x/1"}, want{"c/y,d", "", ""}},
	}
	for _, tt := range tests {
		p, err := s.ListPage(t.Context(), "lpage", tt.opts)
		if err != nil {
			t.Fatalf("%+v: %v", tt.opts, err)
		}
		var ks []string
		for _, o := range p.Objects {
			ks = append(ks, o.Key)
		}
		got := want{strings.Join(ks, ","), strings.Join(p.Prefixes, ","), p.NextMarker}
		if got != tt.want {
			t.Errorf("ListPage(%+v) = %+v, want %+v", tt.opts, got, tt.want)
		}
	}
	// Keys: the listing alone, sorted, for the admin's list API.
	for prefix, want := range map[string]string{"": "a/1,a/2,b,c/x/1,c/y,d", "c/": "c/x/1,c/y", "z": ""} {
		ks, err := s.Keys(t.Context(), "lpage", prefix)
		if err != nil {
			t.Fatalf("Keys(%q): %v", prefix, err)
		}
		if got := strings.Join(ks, ","); got != want {
			t.Errorf("Keys(%q) = %q, want %q", prefix, got, want)
		}
	}
}

// testStartChecks: wrong credentials, a missing bucket and nothing
// listening fail New with a clear error that holds no secret.
func testStartChecks(t *testing.T, e *env) {
	bad := e.config(e.w.Endpoint)
	bad.Credentials = credentials.NewStaticCredentialsProvider(e.w.AccessKey, "wrong-secret-0123456789", "")
	_, err := s3origin.New(t.Context(), bad)
	if err == nil || !strings.Contains(err.Error(), "access denied") || strings.Contains(err.Error(), "wrong-secret") || strings.Contains(err.Error(), e.w.SecretKey) {
		t.Errorf("wrong secret: %v", err)
	}
	unknown := e.config(e.w.Endpoint)
	unknown.Credentials = credentials.NewStaticCredentialsProvider("NOSUCHKEY", "whatever", "")
	if _, err := s3origin.New(t.Context(), unknown); err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Errorf("unknown access key: %v", err)
	}
	missing := e.config(e.w.Endpoint)
	missing.Bucket = "no-such-bucket"
	if _, err := s3origin.New(t.Context(), missing); err == nil || !strings.Contains(err.Error(), "no such bucket") {
		t.Errorf("missing bucket: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	closed := e.config("http://" + addr)
	closed.Timeout = 3 * time.Second
	start := time.Now()
	_, err = s3origin.New(t.Context(), closed)
	if !errors.Is(err, origin.ErrUnavailable) {
		t.Errorf("nothing listening: %v, want ErrUnavailable", err)
	}
	t.Logf("nothing listening: failed after %v: %v", time.Since(start), err)
}

// faultProxy stands between the origin and SeaweedFS: it answers the
// first slowDowns requests with 503 SlowDown, then hangs every request
// while hang is set, and counts the response bytes it passes on.
type faultProxy struct {
	slowDowns atomic.Int64
	hang      atomic.Bool
	requests  atomic.Int64
	bytes     atomic.Int64
	mu        sync.Mutex
	times     []time.Time
	url       string
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(r *http.Response) error {
		r.Body = &countingBody{r.Body, &p.bytes}
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		p.mu.Lock()
		p.times = append(p.times, time.Now())
		p.mu.Unlock()
		if p.slowDowns.Add(-1) >= 0 {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
			return
		}
		if p.hang.Load() {
			<-r.Context().Done()
			return
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p.url = "http://" + ln.Addr().String()
	return p
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func testSlowDown(t *testing.T, e *env) {
	p := newFaultProxy(t, e.w.Endpoint)
	s := e.open(t, e.config(p.url))
	origintest.Put(t, s, "sdown", "k", "data")

	p.requests.Store(0)
	p.mu.Lock()
	p.times = nil
	p.mu.Unlock()
	p.slowDowns.Store(2)
	obj, err := s.Stat(t.Context(), "sdown", "k")
	if err != nil || obj.Size != 4 {
		t.Fatalf("Stat through two SlowDowns: %+v, %v", obj, err)
	}
	if n := p.requests.Load(); n != 3 {
		t.Errorf("Stat through two SlowDowns took %d requests, want 3", n)
	}
	p.mu.Lock()
	for i := 1; i < len(p.times); i++ {
		if p.times[i].Sub(p.times[i-1]) <= 0 {
			t.Errorf("retry %d sent without a pause", i)
		}
	}
	p.mu.Unlock()
	// More SlowDowns than attempts: a clear "unavailable".
	p.slowDowns.Store(1000)
	_, err = s.Stat(t.Context(), "sdown", "k")
	if !errors.Is(err, origin.ErrUnavailable) {
		t.Errorf("Stat through endless SlowDown = %v, want ErrUnavailable", err)
	}
	p.slowDowns.Store(0)
	// A write through SlowDowns (its body is replayable) lands whole.
	p.slowDowns.Store(2)
	origintest.Put(t, s, "sdown", "k2", "written through throttling")
	if got, _ := origintest.Read(t, s, "sdown", "k2", 0, -1); got != "written through throttling" {
		t.Errorf("after throttled put: %q", got)
	}
}

// testSilent: a store that accepts connections and never answers fails
// each call within the configured bound, with ErrUnavailable.
func testSilent(t *testing.T, e *env) {
	p := newFaultProxy(t, e.w.Endpoint)
	cfg := e.config(p.url)
	cfg.Timeout = 2 * time.Second
	s := e.open(t, cfg)
	origintest.Put(t, s, "sil", "k", "data")
	p.hang.Store(true)
	defer p.hang.Store(false)
	for name, call := range map[string]func() error{
		"Stat": func() error { _, err := s.Stat(t.Context(), "sil", "k"); return err },
		"Open": func() error {
			rc, _, err := s.Open(t.Context(), "sil", "k", 0, -1)
			if err == nil {
				rc.Close()
			}
			return err
		},
		"List":   func() error { _, err := s.List(t.Context(), "sil", "", 0); return err },
		"Delete": func() error { return s.Delete(t.Context(), "sil", "k") },
	} {
		// The configured bound must be what ends the call (its error says
		// so), not a default or the caller giving up; how long it took
		// is not asserted (a loaded machine stretches it), only a hang.
		done := make(chan error, 1)
		go func() { done <- call() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(2 * time.Minute):
			t.Fatalf("%s against a silent store hung (bound %v)", name, cfg.Timeout)
		}
		if !errors.Is(err, origin.ErrUnavailable) {
			t.Errorf("%s against a silent store = %v, want ErrUnavailable", name, err)
		}
		if err != nil && !strings.Contains(err.Error(), "within "+cfg.Timeout.String()) {
			t.Errorf("%s against a silent store = %v, want the configured bound (%v) to have fired", name, err, cfg.Timeout)
		}
	}
}

// testRangeBytes: a Range read asks S3 for the range only.
func testRangeBytes(t *testing.T, e *env) {
	p := newFaultProxy(t, e.w.Endpoint)
	s := e.open(t, e.config(p.url))
	data := bytes.Repeat([]byte("x"), 9<<20)
	if _, err := s.Put(t.Context(), "rng", "big", bytes.NewReader(data), origin.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	p.bytes.Store(0)
	got, obj := origintest.Read(t, s, "rng", "big", 5<<20, 100)
	if len(got) != 100 || obj.Size != int64(len(data)) {
		t.Fatalf("range read %d bytes, size %d", len(got), obj.Size)
	}
	if n := p.bytes.Load(); n > 64<<10 {
		t.Errorf("a 100-byte range moved %d bytes from S3", n)
	}
}
