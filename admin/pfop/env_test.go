package pfop_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/pfop/boltq"
	"github.com/doraproject/dora/admin/pfop/redisq"
	"github.com/doraproject/dora/internal/accountstest"
	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/redisconn"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/bolt"
	"github.com/doraproject/dora/internal/store/bolt/bolttest"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router"
	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/origin/local"
)

var (
	alice   = accountstest.Alice
	bob     = accountstest.Bob
	signers = accountstest.Signers()
)

type signer = accountstest.Signer

// countingObjects counts the Puts of every key (the "written once" checks).
type countingObjects struct {
	*local.Dir
	mu   sync.Mutex
	puts map[string]int
}

func (c *countingObjects) Put(ctx context.Context, bucket, key string, r io.Reader, opts origin.PutOptions) (origin.Object, error) {
	o, err := c.Dir.Put(ctx, bucket, key, r, opts)
	if err == nil {
		c.mu.Lock()
		c.puts[bucket+"/"+key]++
		c.mu.Unlock()
	}
	return o, err
}

func (c *countingObjects) putCount(bucket, key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.puts[bucket+"/"+key]
}

// env is a store, an object directory, a serving router with fake ufop
// instances, the pfop API on an httptest server and a boltq queue.
type env struct {
	t      *testing.T
	st     *bolt.Store
	objs   *countingObjects
	r      *router.Router
	rAddr  string
	api    *httptest.Server
	h      *pfop.Handler
	q      pfop.Queue
	qPath  string
	jobs   pfop.Jobs
	client *http.Client // dials the router for any host
}

func testLogger() *slog.Logger {
	if os.Getenv("PFOP_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fakeInstance is a Dora-protocol instance: it takes its input from the POST
// body, or fetches url= when the router sends one, and runs serve.
func fakeInstance(t *testing.T, serve func(w http.ResponseWriter, r *http.Request, in []byte)) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		src := r.URL.Query().Get("url")
		if src == "" {
			in, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			serve(w, r, in)
			return
		}
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, src, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		in, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		serve(w, r, in)
	}))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	st := bolttest.Open(t, dir)
	ld, err := local.New(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ld.Close() })
	e := &env{t: t, st: st, objs: &countingObjects{Dir: ld, puts: map[string]int{}}, jobs: pfop.Jobs{Store: st}}

	accountstest.Seed(t, st, dora.Bucket{Name: "photos", Owner: alice.ID}, dora.Bucket{Name: "results", Owner: alice.ID}, dora.Bucket{Name: "bobs", Owner: bob.ID})
	upper := fakeInstance(t, func(w http.ResponseWriter, r *http.Request, in []byte) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(bytes.ToUpper(in))
	})
	failer := fakeInstance(t, func(w http.ResponseWriter, r *http.Request, in []byte) {
		http.Error(w, "cannot frobnicate "+r.URL.Query().Get("cmd"), http.StatusUnprocessableEntity)
	})
	p := pool.New(pool.Options{})
	var insts []pool.Instance
	for name, addr := range map[string]string{"upper": upper, "failer": failer} {
		e.putJSON(store.UfopKey(name), dora.Ufop{Name: name, Owner: alice.ID, Mode: dora.ModePrivate, ActiveVersion: "v1"})
		// The fakes read their whole input (9 MiB in the resumable tests)
		// before answering: under -race on a loaded machine that took more
		// than the default 30 s to the first byte. The bound is a hang
		// detector here, not part of what is tested.
		e.putJSON(store.ReleaseKey(name, "v1"), dora.Release{Ufop: name, Version: "v1", Protocol: dora.ProtocolDora,
			Timeouts: dora.StepTimeouts{FirstByte: 5 * time.Minute, Idle: 5 * time.Minute}})
		insts = append(insts, pool.Instance{ID: name + "-0", Ufop: name, Version: "v1", Region: "z0", Addr: addr})
	}
	p.Update(insts)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.rAddr = ln.Addr().String()
	r, err := router.New(router.Config{
		Store: st, Objects: e.objs, Writer: e.objs, Pool: p, Region: "z0", Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.r = r
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(ctx) })
	wg.Go(func() { r.Serve(ctx, ln) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	select {
	case <-r.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("router never ready")
	}
	e.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", e.rAddr)
		},
	}}
	t.Cleanup(e.client.CloseIdleConnections)

	e.qPath = filepath.Join(dir, "queue.db")
	q, err := boltq.Open(e.qPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	e.q = q
	e.h, err = pfop.NewHandler(pfop.HandlerConfig{
		Store: st, Queue: q, Objects: e.objs, Notify: pfop.NotifyConfig{AllowPrivate: true}, Logger: testLogger(),
		SpoolDir: filepath.Join(dir, "uploads"),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.api = httptest.NewServer(e.h.Wrap(http.NotFoundHandler()))
	t.Cleanup(e.api.Close)
	return e
}

func (e *env) putJSON(key string, v any) {
	e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	e.putRaw(key, string(b))
}

func (e *env) putRaw(key, v string) {
	e.t.Helper()
	if _, err := e.st.Put(context.Background(), key, []byte(v)); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) object(bucket, key, data string) {
	e.t.Helper()
	if _, err := e.objs.Dir.Put(context.Background(), bucket, key, strings.NewReader(data), origin.PutOptions{MimeType: "text/plain"}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) read(bucket, key string) (string, bool) {
	e.t.Helper()
	rc, _, err := e.objs.Open(context.Background(), bucket, key, 0, -1)
	if err != nil {
		return "", false
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b), true
}

// redisQueues starts a redis-server and returns it with an opener of
// redisq.Queues on it, each closed when the test ends.
func redisQueues(t *testing.T) (*agenttest.Redis, func() *redisq.Queue) {
	t.Helper()
	rs := agenttest.StartRedis(t)
	return rs, func() *redisq.Queue {
		t.Helper()
		q, err := redisq.New(redisq.Config{Server: redisconn.Config{Addr: rs.Addr}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
		return q
	}
}

// submitUpper submits upper/x on photos/a.txt for alice through a Handler
// on q, without HTTP, and returns the job.
func (e *env) submitUpper(q pfop.Queue) pfop.Job {
	e.t.Helper()
	h, err := pfop.NewHandler(pfop.HandlerConfig{Store: e.st, Queue: q, Objects: e.objs})
	if err != nil {
		e.t.Fatal(err)
	}
	j, err := h.Submit(context.Background(), pfop.Submission{Bucket: "photos", Key: "a.txt", Fops: "upper/x", Owner: alice.ID})
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

// startWorker runs a worker on q until the test ends or stop is called.
func (e *env) startWorker(q pfop.Queue, mod func(*pfop.WorkerConfig)) (stop func()) {
	e.t.Helper()
	cfg := pfop.WorkerConfig{
		Store: e.st, Queue: q, Processor: e.r, Objects: e.objs,
		Notify:       pfop.NotifyConfig{AllowPrivate: true, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, Attempts: 3},
		PollInterval: 5 * time.Millisecond, Logger: testLogger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	w, err := pfop.NewWorker(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(stop)
	return stop
}

// --- requests as the Qiniu Go SDK sends them, signed by accountstest (docs/api.md, Conventions) ---

// pfopCall POSTs the form to path (/pfop or /pfop/) signed by a.
func (e *env) pfopCall(path string, a dora.Account, sign signer, form url.Values) (int, map[string]any, http.Header) {
	e.t.Helper()
	body := form.Encode()
	req, err := http.NewRequest(http.MethodPost, e.api.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	sign(req, a, body)
	return e.do(req)
}

func (e *env) do(req *http.Request) (int, map[string]any, http.Header) {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		e.t.Fatalf("%s %s: body %q is not JSON: %v", req.Method, req.URL, b, err)
	}
	if resp.Header.Get("X-Reqid") == "" {
		e.t.Fatalf("%s %s: no X-Reqid", req.Method, req.URL)
	}
	return resp.StatusCode, v, resp.Header
}

// submit sends a pfop and returns the persistentId.
func (e *env) submit(form url.Values) string {
	e.t.Helper()
	status, v, _ := e.pfopCall("/pfop/", alice, signers["qiniu"], form)
	id, _ := v["persistentId"].(string)
	if status != 200 || id == "" {
		e.t.Fatalf("pfop %v: %d %v", form, status, v)
	}
	return id
}

// prefop GETs the status of id (unsigned, as the SDK's Prefop).
func (e *env) prefop(id string) (int, pfop.Status) {
	e.t.Helper()
	resp, err := http.Get(e.api.URL + "/status/get/prefop?id=" + url.QueryEscape(id))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("X-Reqid") == "" {
		e.t.Fatal("prefop: no X-Reqid")
	}
	var s pfop.Status
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(b, &s); err != nil {
			e.t.Fatalf("prefop body %q: %v", b, err)
		}
	}
	return resp.StatusCode, s
}

// waitFinal polls prefop until the job ends and returns every code seen.
func (e *env) waitFinal(id string) (pfop.Status, []int) {
	e.t.Helper()
	var seen []int
	deadline := time.Now().Add(2 * time.Minute) // a hang, not a slow machine
	for {
		status, s := e.prefop(id)
		if status != 200 {
			e.t.Fatalf("prefop %s: %d", id, status)
		}
		if len(seen) == 0 || seen[len(seen)-1] != s.Code {
			seen = append(seen, s.Code)
		}
		if s.Code == pfop.CodeSuccess || s.Code == pfop.CodeFailed || s.Code == pfop.CodeNotifyFailed {
			return s, seen
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s never ended; codes %v", id, seen)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// get fetches a URL of the router for host.
func (e *env) get(host, pathQuery string) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+e.rAddr+pathQuery, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Host = host
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitUntil polls cond; the bound only catches a hang (a loaded machine
// running the suite five times under -race took more than 30 s for 200 jobs).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func entry(bucket, key string) string {
	return base64.URLEncoding.EncodeToString([]byte(bucket + ":" + key))
}

func etagOf(t *testing.T, s string) string {
	t.Helper()
	h, _, err := local.ETag(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return h
}
