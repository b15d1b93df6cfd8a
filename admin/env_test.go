package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/bolt/bolttest"
	"github.com/doraproject/dora/router/origin/local"
)

const (
	testRootAK = "rootAccessKey0123456789"
	testRootSK = "rootSecretKey0123456789abcdefghij"
)

// env is one admin server on a real bolt store, the real signatures, a
// fake runtime and in-memory objects.
type env struct {
	t     *testing.T
	dir   string
	st    store.Store
	rt    *fakeRuntime
	objs  *local.Dir
	bld   *build.Builder
	srv   *Server
	ts    *httptest.Server
	root  dora.Account
	imgMu sync.Mutex
	imgs  map[string][]Image // owner → pushed images
	clock time.Time
}

type envOption func(*Config)

// runLoops runs the server's background loops (Server.Run) until the
// returned stop is called; stop waits for Run to return and fails the test
// on its error.
func (e *env) runLoops() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Error(err)
		}
	}
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	dir := t.TempDir()
	st := bolttest.Open(t, dir)
	e := &env{t: t, dir: dir, st: st, rt: newFakeRuntime(), imgs: map[string][]Image{}}
	var err error
	e.objs, err = local.New(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.objs.Close() })
	e.root, err = EnsureRoot(context.Background(), st, testRootAK, testRootSK)
	if err != nil {
		t.Fatal(err)
	}
	e.bld, err = build.New(filepath.Join(dir, "builds"))
	if err != nil {
		t.Fatal(err)
	}
	e.start(opts...)
	return e
}

// start (re)creates the server on the env's store.
func (e *env) start(opts ...envOption) {
	e.t.Helper()
	cfg := Config{
		Store: e.st, Runtime: e.rt, Objects: e.objs, Builder: e.bld,
		Images: ImageListerFunc(func(ctx context.Context, owner string) ([]Image, error) {
			e.imgMu.Lock()
			defer e.imgMu.Unlock()
			return append([]Image(nil), e.imgs[owner]...), nil
		}),
		Regions:   []Region{{Name: "z0"}, {Name: "z1"}},
		PublicURL: "http://admin.test:8090",
		RootAK:    testRootAK, RootSK: testRootSK,
		PollInterval: 10 * time.Millisecond,
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.srv = srv
	e.ts = httptest.NewServer(srv.Handler())
	e.t.Cleanup(e.ts.Close)
	e.t.Cleanup(func() { srv.Close() })
}

// resp is a decoded reply.
type resp struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r resp) errMsg() string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &e)
	return e.Error
}

func (r resp) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// req sends a request signed (Qiniu form) with acct's keys; body is JSON
// unless it is a []byte or io.Reader (then sent raw, octet-stream).
func (e *env) req(acct dora.Account, method, path string, body any) resp {
	e.t.Helper()
	return e.reqWith(acct, method, path, body, nil)
}

func (e *env) reqWith(acct dora.Account, method, path string, body any, mod func(*http.Request)) resp {
	e.t.Helper()
	var rd io.Reader
	var raw []byte
	ctype := ""
	switch b := body.(type) {
	case nil:
	case typed:
		rd, ctype = strings.NewReader(b.data), b.ctype
	case []byte:
		rd, ctype = bytes.NewReader(b), "application/octet-stream"
	case io.Reader:
		rd, ctype = b, "application/octet-stream"
	default:
		js, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		raw, rd, ctype = js, bytes.NewReader(js), "application/json"
	}
	req, err := http.NewRequest(method, e.ts.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if acct.AccessKey != "" {
		auth.SignRequest(req, acct.AccessKey, acct.SecretKey, raw, time.Now())
	}
	if mod != nil {
		mod(req)
	}
	res, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if res.Header.Get("X-Reqid") == "" {
		e.t.Errorf("%s %s: no X-Reqid", method, path)
	}
	return resp{Status: res.StatusCode, Header: res.Header, Body: out}
}

// typed is a raw body with its Content-Type.
type typed struct{ ctype, data string }

// must sends a request and fails unless the status is want.
func (e *env) must(want int, acct dora.Account, method, path string, body any, out any) resp {
	e.t.Helper()
	r := e.req(acct, method, path, body)
	if r.Status != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.Status, want, r.Body)
	}
	if out != nil {
		r.decode(e.t, out)
	}
	return r
}

// user creates an account through the API.
func (e *env) user(name string, limit int) dora.Account {
	e.t.Helper()
	var a dora.Account
	e.must(http.StatusCreated, e.root, "POST", "/v1/accounts", map[string]any{"name": name, "instanceLimit": limit}, &a)
	return a
}

// ufop registers a ufop for acct.
func (e *env) ufop(acct dora.Account, name string, mode dora.Mode) {
	e.t.Helper()
	e.must(http.StatusCreated, acct, "POST", "/v1/ufops", map[string]any{"name": name, "mode": mode}, nil)
}

// release registers an OCI image for acct and creates a release of it.
func (e *env) release(acct dora.Account, ufop, ver string) dora.Release {
	e.t.Helper()
	img := ufop + ":" + ver
	e.push(acct, img)
	var rel dora.Release
	e.must(http.StatusCreated, acct, "POST", "/v1/releases", map[string]any{
		"ufopname": ufop, "verstr": ver, "image": img, "flavor": "C1M1",
		"health_check": map[string]any{"path": "/health", "timeout": 3},
	}, &rel)
	return rel
}

// push records a pushed OCI image of acct.
// deployGrepd registers acct's private ufop grepd, releases v1 and
// deploys it with expect instances: the starting point of the tests about
// what happens to a running deployment.
func (e *env) deployGrepd(acct dora.Account, expect int) dora.Deployment {
	e.t.Helper()
	e.ufop(acct, "grepd", dora.ModePrivate)
	e.release(acct, "grepd", "v1")
	var d dora.Deployment
	e.must(http.StatusAccepted, acct, "POST", "/v1/ufops/grepd/deployments", map[string]any{"version": "v1", "expect": expect}, &d)
	return d
}

func (e *env) push(acct dora.Account, img string) {
	e.imgMu.Lock()
	defer e.imgMu.Unlock()
	e.imgs[acct.ID] = append(e.imgs[acct.ID], Image{Name: img, Kind: ImageKindOCI})
}

func (e *env) deployment(ufop, id string) dora.Deployment {
	e.t.Helper()
	d, _, err := store.Get[dora.Deployment](context.Background(), e.st, store.DeploymentKey(ufop, id))
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func (e *env) ufopRecord(name string) dora.Ufop {
	e.t.Helper()
	u, _, err := store.Get[dora.Ufop](context.Background(), e.st, store.UfopKey(name))
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
