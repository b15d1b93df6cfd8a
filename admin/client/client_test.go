package client

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/auth"
)

const (
	testAK = "AK_test"
	testSK = "SK_secret"
)

// recorded is what the fake server saw of one request.
type recorded struct {
	Method, Path, RawPath, Query, ContentType string
	Body                                      []byte
	Header                                    http.Header
	ContentLength                             int64
}

// fakeAPI verifies every request's signature with auth.Verifier, records it
// and answers with the handler's reply.
type fakeAPI struct {
	t     *testing.T
	mu    sync.Mutex
	seen  []recorded
	reply func(r recorded) (status int, body any)
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Reqid", "req-1")
	ct := r.Header.Get("Content-Type")
	var body []byte
	var err error
	body, err = io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	var signed []byte
	if ct == "application/json" {
		signed = body
	}
	v := auth.Verifier{
		Lookup: func(ctx context.Context, ak string) (string, error) {
			if ak != testAK {
				return "", errors.New("unknown ak")
			}
			return testSK, nil
		},
		MaxSkew: 15 * time.Minute,
		Now:     time.Now,
	}
	if _, err := v.VerifyHTTP(r.Context(), r, signed); err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(401)
		fmt.Fprintf(w, `{"error":%q}`, "bad signature: "+err.Error())
		return
	}
	rec := recorded{Method: r.Method, Path: r.URL.Path, RawPath: r.URL.EscapedPath(), Query: r.URL.RawQuery,
		ContentType: ct, Body: body, Header: r.Header.Clone(), ContentLength: r.ContentLength}
	f.mu.Lock()
	f.seen = append(f.seen, rec)
	f.mu.Unlock()
	status, out := 200, any(map[string]any{})
	if f.reply != nil {
		status, out = f.reply(rec)
	}
	switch b := out.(type) {
	case string:
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(status)
		io.WriteString(w, b)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(out)
	}
}

func (f *fakeAPI) last() recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) == 0 {
		f.t.Fatal("no request reached the server")
	}
	return f.seen[len(f.seen)-1]
}

func newFake(t *testing.T, reply func(recorded) (int, any)) (*fakeAPI, *Client) {
	t.Helper()
	f := &fakeAPI{t: t, reply: reply}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, New(srv.URL, testAK, testSK)
}

func TestWhoamiAndErrors(t *testing.T) {
	_, c := newFake(t, func(r recorded) (int, any) {
		return 200, dora.Account{ID: "1366779853", AccessKey: testAK, Name: "alice"}
	})
	a, err := c.Whoami(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != "1366779853" || a.Name != "alice" {
		t.Fatalf("whoami = %+v", a)
	}

	bad := New(c.Endpoint(), testAK, "wrong")
	_, err = bad.Whoami(context.Background())
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want *APIError", err)
	}
	if ae.Status != 401 || ae.Reqid != "req-1" || !strings.Contains(ae.Message, "bad signature") {
		t.Fatalf("APIError = %+v", ae)
	}
	if !strings.Contains(err.Error(), "reqid req-1") || StatusOf(err) != 401 {
		t.Fatalf("Error() = %q", err.Error())
	}
}

func TestErrorBodies(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   any
		want   string
	}{
		{"json", 404, map[string]string{"error": "no such ufop grepd"}, "no such ufop grepd"},
		{"text", 503, "backend down\n", "backend down"},
		{"empty json", 409, map[string]string{}, "Conflict"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, c := newFake(t, func(recorded) (int, any) { return tt.status, tt.body })
			_, err := c.GetUfop(context.Background(), "grepd")
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != tt.status || ae.Message != tt.want {
				t.Fatalf("err = %#v, want status %d message %q", err, tt.status, tt.want)
			}
		})
	}
}

func TestBadEndpoint(t *testing.T) {
	for _, ep := range []string{"", "ftp://x", "http://"} {
		c := New(ep, "a", "b")
		if _, err := c.Whoami(context.Background()); !errors.Is(err, ErrBadEndpoint) {
			t.Errorf("New(%q).Whoami err = %v, want ErrBadEndpoint", ep, err)
		}
	}
	tests := map[string]string{
		"127.0.0.1:8090":          "http://127.0.0.1:8090",
		"http://127.0.0.1:8090/":  "http://127.0.0.1:8090",
		"https://dora.example/x/": "https://dora.example/x",
	}
	for in, want := range tests {
		if got := New(in, "a", "b").Endpoint(); got != want {
			t.Errorf("Endpoint(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRequests checks method, path, query and JSON body of each call.
func TestRequests(t *testing.T) {
	ctx := context.Background()
	from := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name     string
		call     func(c *Client) error
		method   string
		path     string // escaped
		query    string
		wantBody string // JSON, compared structurally; "" means no check
	}{
		{"create account", func(c *Client) error { _, err := c.CreateAccount(ctx, "alice", 3); return err },
			"POST", "/v1/accounts", "", `{"name":"alice","instanceLimit":3}`},
		{"list accounts", func(c *Client) error { _, err := c.ListAccounts(ctx); return err }, "GET", "/v1/accounts", "", ""},
		{"disable", func(c *Client) error { _, err := c.DisableAccount(ctx, "42"); return err }, "POST", "/v1/accounts/42/disable", "", ""},
		{"regions", func(c *Client) error { _, err := c.Regions(ctx); return err }, "GET", "/v1/regions", "", ""},
		{"flavors", func(c *Client) error { _, err := c.Flavors(ctx); return err }, "GET", "/v1/flavors", "", ""},
		{"create bucket", func(c *Client) error {
			_, err := c.CreateBucket(ctx, BucketSpec{Name: "photos", Private: true, Domains: []string{"img.example.com"}})
			return err
		}, "POST", "/v1/buckets", "", `{"name":"photos","private":true,"domains":["img.example.com"]}`},
		{"add domain", func(c *Client) error { _, err := c.AddDomain(ctx, "photos", "a.example"); return err },
			"POST", "/v1/buckets/photos/domains", "", `{"domain":"a.example"}`},
		{"stat", func(c *Client) error { _, err := c.StatObject(ctx, "photos", "a b/c.jpg"); return err },
			"GET", "/v1/stat/photos/a%20b/c.jpg", "", ""},
		{"delete object", func(c *Client) error { return c.DeleteObject(ctx, "photos", "x/y%z") },
			"DELETE", "/v1/objects/photos/x/y%25z", "", ""},
		{"list objects", func(c *Client) error { _, err := c.ListObjects(ctx, "photos", "a/", 10); return err },
			"GET", "/v1/list/photos", "limit=10&prefix=a%2F", ""},
		{"register", func(c *Client) error { _, err := c.RegisterUfop(ctx, "grepd", "demo", dora.ModeProtected); return err },
			"POST", "/v1/ufops", "", `{"name":"grepd","desc":"demo","mode":1}`},
		{"unregister", func(c *Client) error { return c.DeleteUfop(ctx, "grepd") }, "DELETE", "/v1/ufops/grepd", "", ""},
		{"apply", func(c *Client) error { _, err := c.ApplyUfop(ctx, "grepd"); return err }, "POST", "/v1/ufops/grepd/apply", "", ""},
		{"unapply", func(c *Client) error { _, err := c.UnapplyUfop(ctx, "grepd"); return err }, "DELETE", "/v1/ufops/grepd/apply", "", ""},
		{"set version", func(c *Client) error { _, err := c.SetVersion(ctx, "grepd", 3, ""); return err },
			"POST", "/v1/ufops/grepd/version", "", `{"build":3}`},
		{"set version ufop", func(c *Client) error { _, err := c.SetVersion(ctx, "grepd", 3, "ufop"); return err },
			"POST", "/v1/ufops/grepd/version", "", `{"build":3,"protocol":"ufop"}`},
		{"release", func(c *Client) error {
			_, err := c.CreateRelease(ctx, ReleaseConfig{UfopName: "grepd", VerStr: "v1", Image: "grepd.v1", Flavor: "C1M1",
				HealthCheck: &HealthCheckConfig{Path: "/health", Timeout: 3}, LogFilePaths: []string{},
				Env: &EnvConfig{Global: []dora.EnvVar{{Key: "K", Value: "V"}}}})
			return err
		}, "POST", "/v1/releases", "", `{"ufopname":"grepd","verstr":"v1","image":"grepd.v1","flavor":"C1M1",
			"health_check":{"path":"/health","timeout":3},"log_file_paths":[],"env":{"global":[{"key":"K","value":"V"}]}}`},
		{"deploy", func(c *Client) error {
			_, err := c.Deploy(ctx, "grepd", DeployRequest{Version: "v1", Region: "z0", Expect: 2, Max: 4})
			return err
		}, "POST", "/v1/ufops/grepd/deployments", "", `{"version":"v1","region":"z0","expect":2,"max":4}`},
		{"deployment", func(c *Client) error { _, err := c.Deployment(ctx, "grepd", "deploy-1"); return err },
			"GET", "/v1/ufops/grepd/deployments/deploy-1", "", ""},
		{"events", func(c *Client) error { _, err := c.DeploymentEvents(ctx, "grepd", "deploy-1"); return err },
			"GET", "/v1/ufops/grepd/deployments/deploy-1/events", "", ""},
		{"resize", func(c *Client) error { _, err := c.Resize(ctx, "grepd", 3, "z0"); return err },
			"POST", "/v1/ufops/grepd/resize", "", `{"num":3,"region":"z0"}`},
		{"instances", func(c *Client) error { _, err := c.Instances(ctx, "grepd", "z0", true); return err },
			"GET", "/v1/ufops/grepd/instances", "all=1&region=z0", ""},
		{"stop all", func(c *Client) error { return c.StopInstances(ctx, "grepd", "", nil) },
			"POST", "/v1/ufops/grepd/instances/stop", "", `{"indexes":[]}`},
		{"start some", func(c *Client) error { return c.StartInstances(ctx, "grepd", "z0", []int{1, 2}) },
			"POST", "/v1/ufops/grepd/instances/start", "", `{"region":"z0","indexes":[1,2]}`},
		{"logtail", func(c *Client) error {
			rc, err := c.InstanceLogs(ctx, "grepd", 1, "z0", "stderr", 200)
			if err == nil {
				rc.Close()
			}
			return err
		}, "GET", "/v1/ufops/grepd/instances/1/logs", "region=z0&tail=200&type=stderr", ""},
		{"log", func(c *Client) error {
			rc, err := c.Logs(ctx, "grepd", LogQuery{Version: "v1", Instance: 2, From: from, Keyword: "err"})
			if err == nil {
				rc.Close()
			}
			return err
		}, "GET", "/v1/ufops/grepd/logs", "from=2026-01-02T03%3A04%3A05Z&instance=2&k=err&version=v1", ""},
		{"build log", func(c *Client) error {
			rc, err := c.BuildLog(ctx, "grepd", 2)
			if err == nil {
				rc.Close()
			}
			return err
		}, "GET", "/v1/ufops/grepd/builds/2/log", "", ""},
		{"images", func(c *Client) error { _, err := c.Images(ctx); return err }, "GET", "/v1/images", "", ""},
		{"releases", func(c *Client) error { _, err := c.Releases(ctx, "grepd"); return err }, "GET", "/v1/ufops/grepd/releases", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, c := newFake(t, func(r recorded) (int, any) {
				if strings.HasPrefix(r.Path, "/v1/list/") {
					return 200, map[string]any{"items": []any{}}
				}
				if strings.HasSuffix(r.Path, "s") && r.Method == "GET" && !strings.HasSuffix(r.Path, "/releases") {
					return 200, []any{}
				}
				return 200, map[string]any{}
			})
			if err := tt.call(c); err != nil {
				t.Fatal(err)
			}
			r := f.last()
			if r.Method != tt.method || r.RawPath != tt.path || r.Query != tt.query {
				t.Fatalf("got %s %s ?%s, want %s %s ?%s", r.Method, r.RawPath, r.Query, tt.method, tt.path, tt.query)
			}
			if tt.wantBody != "" {
				var got, want any
				if err := json.Unmarshal(r.Body, &got); err != nil {
					t.Fatalf("body %q: %v", r.Body, err)
				}
				if err := json.Unmarshal([]byte(tt.wantBody), &want); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("body = %s, want %s", r.Body, tt.wantBody)
				}
			}
		})
	}
}

func TestPutObjectStreamsWithProgress(t *testing.T) {
	f, c := newFake(t, func(r recorded) (int, any) {
		return 200, map[string]any{"bucket": "photos", "key": "a b/c.bin", "fsize": len(r.Body), "hash": "Fx"}
	})
	data := bytes.Repeat([]byte("0123456789"), 100000)
	var mu sync.Mutex
	var last int64
	calls := 0
	obj, err := c.PutObject(context.Background(), "photos", "a b/c.bin", bytes.NewReader(data), int64(len(data)), "",
		WithProgress(func(n int64) { mu.Lock(); last = n; calls++; mu.Unlock() }), InsertOnly())
	if err != nil {
		t.Fatal(err)
	}
	r := f.last()
	if r.RawPath != "/v1/objects/photos/a%20b/c.bin" || r.Method != "PUT" {
		t.Fatalf("request %s %s", r.Method, r.RawPath)
	}
	if !bytes.Equal(r.Body, data) || r.ContentLength != int64(len(data)) {
		t.Fatalf("body %d bytes (content-length %d), want %d", len(r.Body), r.ContentLength, len(data))
	}
	if r.Header.Get("X-Dora-Insert-Only") != "1" || r.ContentType != "application/octet-stream" {
		t.Fatalf("headers %v", r.Header)
	}
	if obj.Size != int64(len(data)) || obj.ETag != "Fx" {
		t.Fatalf("object %+v", obj)
	}
	mu.Lock()
	defer mu.Unlock()
	if last != int64(len(data)) || calls < 2 {
		t.Fatalf("progress last=%d calls=%d", last, calls)
	}
}

func TestPutObjectUnknownSize(t *testing.T) {
	f, c := newFake(t, func(r recorded) (int, any) { return 200, map[string]any{"fsize": len(r.Body)} })
	pr, pw := io.Pipe()
	go func() {
		for i := 0; i < 3; i++ {
			pw.Write([]byte("chunk"))
		}
		pw.Close()
	}()
	obj, err := c.PutObject(context.Background(), "b1b", "k", pr, -1, "text/plain")
	if err != nil {
		t.Fatal(err)
	}
	if string(f.last().Body) != "chunkchunkchunk" || obj.Size != 15 || f.last().ContentType != "text/plain" {
		t.Fatalf("body %q obj %+v", f.last().Body, obj)
	}
}

func TestGetObject(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("ETag", `"FhEtag"`)
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	}))
	defer srv.Close()
	c := New(srv.URL, testAK, testSK)
	rc, obj, err := c.GetObject(context.Background(), "photos", "k.png")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	if string(b) != "hello" || obj.Size != 5 || obj.ETag != "FhEtag" || obj.MimeType != "image/png" {
		t.Fatalf("got %q %+v", b, obj)
	}
}

func TestWaitBuild(t *testing.T) {
	var mu sync.Mutex
	polls := 0
	_, c := newFake(t, func(r recorded) (int, any) {
		mu.Lock()
		defer mu.Unlock()
		polls++
		st := dora.BuildRunning
		if polls >= 3 {
			st = dora.BuildSuccess
		}
		return 200, dora.Build{Ufop: "grepd", Number: 1, Status: st}
	})
	var seen []string
	b, err := c.WaitBuild(context.Background(), "grepd", 1, time.Millisecond, func(b dora.Build) { seen = append(seen, b.Status) })
	if err != nil {
		t.Fatal(err)
	}
	if b.Status != dora.BuildSuccess || len(seen) != 3 {
		t.Fatalf("final %+v, seen %v", b, seen)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, stuck := newFake(t, func(recorded) (int, any) { return 200, dora.Build{Status: dora.BuildRunning} })
	if _, err := stuck.WaitBuild(ctx, "grepd", 1, time.Millisecond, nil); err == nil {
		t.Fatal("WaitBuild on a cancelled context returned nil")
	}
}

// untar reads a tar.gz into name → (mode, content or link target).
func untar(t *testing.T, b []byte) map[string]string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeReg:
			c, _ := io.ReadAll(tr)
			out[h.Name] = fmt.Sprintf("%o %s", h.Mode&0o777, c)
		case tar.TypeSymlink:
			out[h.Name] = "-> " + h.Linkname
		case tar.TypeDir:
			out[h.Name] = "dir"
		}
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBuildPacksDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"ufop.yaml":      "image: ubuntu\nrun: ./grepd\n",
		"dir/grepd.sh":   "#!/bin/sh\n",
		"dir/grepd.conf": "x=1\n",
		".git/HEAD":      "ref: refs/heads/main\n",
	})
	if err := os.Symlink("dir/grepd.conf", filepath.Join(dir, "conf")); err != nil {
		t.Fatal(err)
	}
	f, c := newFake(t, func(r recorded) (int, any) {
		return 202, dora.Build{Ufop: "grepd", Number: 1, Status: dora.BuildRunning, Image: "grepd.v1"}
	})
	b, err := c.Build(context.Background(), "grepd", dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Number != 1 || b.Status != dora.BuildRunning {
		t.Fatalf("build %+v", b)
	}
	r := f.last()
	if r.RawPath != "/v1/ufops/grepd/builds" || r.ContentType != "application/gzip" {
		t.Fatalf("request %s %s", r.RawPath, r.ContentType)
	}
	got := untar(t, r.Body)
	want := map[string]string{
		"ufop.yaml":      "644 image: ubuntu\nrun: ./grepd\n",
		"dir/":           "dir",
		"dir/grepd.sh":   "755 #!/bin/sh\n",
		"dir/grepd.conf": "644 x=1\n",
		"conf":           "-> dir/grepd.conf",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("tar = %v\nwant %v", got, want)
	}
}

func TestBuildRejects(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
	}{
		{"no ufop.yaml", func(t *testing.T, dir string) { writeFiles(t, dir, map[string]string{"a": "b"}) }},
		{"absolute link", func(t *testing.T, dir string) {
			writeFiles(t, dir, map[string]string{"ufop.yaml": "run: x\n"})
			os.Symlink("/etc/passwd", filepath.Join(dir, "pw"))
		}},
		{"link up", func(t *testing.T, dir string) {
			writeFiles(t, dir, map[string]string{"ufop.yaml": "run: x\n", "sub/x": "y"})
			os.Symlink("../../secret", filepath.Join(dir, "sub", "s"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			_, c := newFake(t, func(r recorded) (int, any) { return 202, dora.Build{} })
			_, err := c.Build(context.Background(), "grepd", dir)
			if !errors.Is(err, ErrBadPackage) {
				t.Fatalf("err = %v, want ErrBadPackage", err)
			}
		})
	}
}

func TestLinkInside(t *testing.T) {
	tests := []struct {
		name, target string
		want         bool
	}{
		{"a", "b", true},
		{"d/a", "../b", true},
		{"d/a", "../../b", false},
		{"a", "..", false},
		{"a", "/etc", false},
		{"d/e/a", "./../x/../../y", true},
		{"a", "", false},
	}
	for _, tt := range tests {
		if got := linkInside(tt.name, tt.target); got != tt.want {
			t.Errorf("linkInside(%q, %q) = %v, want %v", tt.name, tt.target, got, tt.want)
		}
	}
}

// A server that accepts the request but never answers fails the call
// instead of hanging qdoractl; New's client has such bounds (and no total
// timeout, which would cut long uploads).
func TestUnresponsiveServerDoesNotHang(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	c := New(srv.URL, testAK, testSK)
	tr, ok := c.HTTP.Transport.(*http.Transport)
	if !ok || c.HTTP.Timeout != 0 || tr.ResponseHeaderTimeout != ResponseHeaderTimeout || tr.TLSHandshakeTimeout != DialTimeout || tr.DialContext == nil {
		t.Fatalf("New's HTTP client: %+v", c.HTTP)
	}
	c.HTTP = NewHTTPClient(DialTimeout, 50*time.Millisecond)
	done := make(chan error, 1)
	go func() {
		_, err := c.Whoami(context.Background())
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "timeout") {
			t.Fatalf("Whoami against a silent server = %v, want a timeout", err)
		}
	case <-time.After(30 * time.Second): // a hang guard, not a timing assertion
		t.Fatal("Whoami hung on a silent server")
	}
}

// TestUnroutablePaths: the admin API's mux answers a path with an empty,
// "." or ".." segment with a redirect to the cleaned path, which the
// signature (over the path sent) never verifies on: such a key or name is
// refused before anything is sent, with the platform's key rule for
// object keys, instead of surfacing as "signature mismatch" (401) or a
// bare 307.
func TestUnroutablePaths(t *testing.T) {
	f := &fakeAPI{t: t, reply: func(recorded) (int, any) { return 200, map[string]any{} }}
	mux := http.NewServeMux()
	mux.Handle("/", f)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c := New(srv.URL, testAK, testSK)
	ctx := context.Background()
	for _, key := range []string{"x/../y", "a//b", "./z", "q/.", "/lead"} {
		_, err := c.PutObject(ctx, "photos", key, strings.NewReader("hi"), 2, "")
		if !errors.Is(err, dora.ErrBadKey) {
			t.Errorf("put %q: %v, want dora.ErrBadKey", key, err)
		}
		if _, _, err := c.GetObject(ctx, "photos", key); !errors.Is(err, dora.ErrBadKey) {
			t.Errorf("get %q: %v, want dora.ErrBadKey", key, err)
		}
		if _, err := c.StatObject(ctx, "photos", key); !errors.Is(err, dora.ErrBadKey) {
			t.Errorf("stat %q: %v, want dora.ErrBadKey", key, err)
		}
		if err := c.DeleteObject(ctx, "photos", key); !errors.Is(err, dora.ErrBadKey) {
			t.Errorf("delete %q: %v, want dora.ErrBadKey", key, err)
		}
	}
	for _, name := range []string{"..", ".", ""} {
		_, err := c.GetUfop(ctx, name)
		if err == nil || StatusOf(err) != 0 || !strings.Contains(err.Error(), "segment") {
			t.Errorf("GetUfop(%q) = %v, want a refusal before sending", name, err)
		}
		if _, err := c.ListObjects(ctx, name, "", 0); err == nil || StatusOf(err) != 0 {
			t.Errorf("ListObjects(%q) = %v, want a refusal before sending", name, err)
		}
	}
	f.mu.Lock()
	seen := len(f.seen)
	f.mu.Unlock()
	if seen != 0 {
		t.Fatalf("%d requests reached the API", seen)
	}
	// Names that only look odd still go, escaped.
	if _, err := c.GetUfop(ctx, "a..b"); err != nil {
		t.Fatalf("GetUfop(a..b): %v", err)
	}
	if _, err := c.StatObject(ctx, "photos", "dir/.hidden/x..y"); err != nil {
		t.Fatalf("stat dir/.hidden/x..y: %v", err)
	}
}

// TestBuildThroughSymlinkedDirectory: a package directory given as a
// symlink to it (-dir ./current) is packed with its files, where walking
// the link itself sent an empty tarball that the server's build then
// failed for want of ufop.yaml.
func TestBuildThroughSymlinkedDirectory(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "grepd-1.2")
	writeFiles(t, dir, map[string]string{"ufop.yaml": "image: ubuntu\nrun: ./grepd\n", "dir/grepd.conf": "x=1\n"})
	link := filepath.Join(base, "current")
	if err := os.Symlink("grepd-1.2", link); err != nil {
		t.Fatal(err)
	}
	f, c := newFake(t, func(r recorded) (int, any) {
		return 202, dora.Build{Ufop: "grepd", Number: 1, Status: dora.BuildRunning}
	})
	if _, err := c.Build(context.Background(), "grepd", link); err != nil {
		t.Fatal(err)
	}
	got := untar(t, f.last().Body)
	want := map[string]string{
		"ufop.yaml":      "644 image: ubuntu\nrun: ./grepd\n",
		"dir/":           "dir",
		"dir/grepd.conf": "644 x=1\n",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("tar = %v\nwant %v", got, want)
	}
}

// TestHTMLErrorPage: the error page of a reverse proxy in front of the
// admin (a 502 while it restarts, a 413 on a large upload) is reported by
// its title or status on one line, not as the page's HTML.
func TestHTMLErrorPage(t *testing.T) {
	page := "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n" +
		"<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
	for _, tt := range []struct {
		status            int
		ctype, body, want string
	}{
		{413, "text/html", page, "413 Request Entity Too Large"},
		{502, "text/html; charset=utf-8", "<!DOCTYPE html><html><body><p>upstream gone</p></body></html>", "Bad Gateway"},
		{503, "text/plain", "backend down\n", "backend down"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", tt.ctype)
			w.WriteHeader(tt.status)
			io.WriteString(w, tt.body)
		}))
		_, err := New(srv.URL, testAK, testSK).Whoami(context.Background())
		srv.Close()
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != tt.status || ae.Message != tt.want {
			t.Errorf("%d %s: err = %v, want message %q", tt.status, tt.ctype, err, tt.want)
		}
	}
}
