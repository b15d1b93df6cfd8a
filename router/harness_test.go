package router

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler/load"
	"github.com/doraproject/dora/internal/accountstest"
	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/bolt"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/origin"
)

// memOrigin is an in-memory origin.Reader and Writer for the tests.
type memOrigin struct {
	mu   sync.Mutex
	objs map[string]memObj
	puts int
}

type memObj struct {
	data []byte
	obj  origin.Object
}

func newMemOrigin() *memOrigin { return &memOrigin{objs: map[string]memObj{}} }

func (m *memOrigin) add(bucket, key, mime string, data []byte) origin.Object {
	m.mu.Lock()
	defer m.mu.Unlock()
	o := origin.Object{Bucket: bucket, Key: key, Size: int64(len(data)), ETag: fmt.Sprintf("Fetag%d-%08x", len(data), crc32.ChecksumIEEE(data)),
		MimeType: mime, Modified: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	m.objs[bucket+"/"+key] = memObj{data: data, obj: o}
	return o
}

func (m *memOrigin) get(bucket, key string) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[bucket+"/"+key]
	return o.data, ok
}

func (m *memOrigin) Stat(_ context.Context, bucket, key string) (origin.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[bucket+"/"+key]
	if !ok {
		return origin.Object{}, origin.ErrNotFound
	}
	return o.obj, nil
}

// OpenKeepsNoContext: Open keeps nothing of its context (noContextKeeper).
func (m *memOrigin) OpenKeepsNoContext() {}

func (m *memOrigin) Open(ctx context.Context, bucket, key string, off, n int64) (io.ReadCloser, origin.Object, error) {
	o, err := m.Stat(ctx, bucket, key)
	if err != nil {
		return nil, o, err
	}
	data, _ := m.get(bucket, key)
	if n < 0 {
		n = int64(len(data)) - off
	}
	return io.NopCloser(bytes.NewReader(data[off : off+n])), o, nil
}

func (m *memOrigin) Put(_ context.Context, bucket, key string, r io.Reader, opts origin.PutOptions) (origin.Object, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return origin.Object{}, err
	}
	m.mu.Lock()
	m.puts++
	m.mu.Unlock()
	return m.add(bucket, key, opts.MimeType, data), nil
}

func (m *memOrigin) Delete(_ context.Context, bucket, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objs, bucket+"/"+key)
	return nil
}

// env is one running router with its store, origin and pool.
type env struct {
	t      *testing.T
	r      *Router
	addr   string
	st     *bolt.Store
	objs   *memOrigin
	pool   *pool.Pool
	load   *recLoad
	reg    *prometheus.Registry
	client *http.Client
	stop   func() // ends Serve and Run and waits for them (idempotent)
}

// recLoad records load samples.
type recLoad struct {
	mu      sync.Mutex
	samples []load.Sample
}

func (l *recLoad) Record(_ context.Context, s []load.Sample) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.samples = append(l.samples, s...)
	return nil
}

func (l *recLoad) all() []load.Sample {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]load.Sample(nil), l.samples...)
}

// Test accounts: alice (the shared fixture, internal/accountstest) owns
// the buckets and the private ufop; bob applied for the protected one;
// carol is nobody.
var (
	alice = accountstest.Alice
	bob   = dora.Account{ID: "1002", Name: "bob", AccessKey: "AK-bob", SecretKey: "SK-bob", Applied: []string{"protufop"}}
	carol = dora.Account{ID: "1003", Name: "carol", AccessKey: "AK-carol", SecretKey: "SK-carol"}
)

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, st: st, objs: newMemOrigin(), pool: pool.New(pool.Options{}), load: &recLoad{}, reg: prometheus.NewRegistry()}
	for _, a := range []dora.Account{alice, bob, carol} {
		e.put(store.AccountKey(a.ID), a)
		e.putRaw(store.AccessKeyKey(a.AccessKey), a.ID)
	}
	e.put(store.BucketKey("photos"), dora.Bucket{Name: "photos", Owner: alice.ID, Domains: []string{"img.example.com"}})
	e.put(store.BucketKey("secret"), dora.Bucket{Name: "secret", Owner: alice.ID, Private: true})
	e.put(store.BucketKey("bobs"), dora.Bucket{Name: "bobs", Owner: bob.ID})
	e.put(store.BucketKey("carols"), dora.Bucket{Name: "carols", Owner: carol.ID})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	cfg := Config{
		Store: st, Objects: e.objs, Writer: e.objs, Pool: e.pool, Load: e.load,
		Region: "z0", DomainSuffix: "localhost", Metrics: e.reg,
		Logger:      testLogger(t),
		HoldTimeout: 200 * time.Millisecond, // no-instance cases answer quickly; hold_test.go sets its own
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.r = r
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(ctx) })
	wg.Go(func() { r.Serve(ctx, ln) })
	var stopOnce sync.Once
	e.stop = func() { stopOnce.Do(func() { cancel(); wg.Wait(); r.Close() }) }
	t.Cleanup(e.stop)
	select {
	case <-r.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("router metadata never ready")
	}
	e.client = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", e.addr)
		},
		DisableCompression: true,
	}}
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

func (e *env) put(key string, v any) {
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

// ufop registers a ufop with an active release speaking proto and waits
// until the router's snapshot has it.
func (e *env) ufop(u dora.Ufop, proto dora.Protocol) {
	e.t.Helper()
	e.ufopRelease(u, dora.Release{Protocol: proto})
}

// ufopRelease registers a ufop and its active release.
func (e *env) ufopRelease(u dora.Ufop, rel dora.Release) {
	e.t.Helper()
	if u.ActiveVersion == "" {
		u.ActiveVersion = "v1"
	}
	rel.Ufop, rel.Version = u.Name, u.ActiveVersion
	e.put(store.ReleaseKey(u.Name, u.ActiveVersion), rel)
	e.put(store.UfopKey(u.Name), u)
	waitUntil(e.t, "ufop "+u.Name+" in the snapshot", func() bool {
		got, ok := e.r.meta.Snapshot().Ufop(u.Name)
		r, rok := e.r.meta.Snapshot().Release(u.Name, u.ActiveVersion)
		return ok && rok && got == u && r.Timeouts == rel.Timeouts && r.Protocol == rel.Protocol
	})
}

// signedSaveAs returns path?fops+saveas/<entry>/sign/<alice's sign>.
func signedSaveAs(host, path, fops, bucket, key string) string {
	q := fops + "saveas/" + auth.EncodedEntryURI(bucket, key)
	return path + "?" + q + "/sign/" + alice.AccessKey + ":" + auth.SaveAsSign(alice.SecretKey, host+path+"?"+q)
}

// do sends a request for pathQuery (path and query, verbatim) to host.
func (e *env) do(method, host, pathQuery string, hdr map[string]string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, "http://"+e.addr+pathQuery, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s%s: %v", method, host, pathQuery, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s%s: read body: %v", method, host, pathQuery, err)
	}
	return resp, body
}

func (e *env) get(host, pathQuery string) (*http.Response, []byte) {
	return e.do(http.MethodGet, host, pathQuery, nil)
}

// jsonError decodes {"error": ...}.
func jsonError(t *testing.T, body []byte) string {
	t.Helper()
	var v struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Error == "" {
		t.Fatalf("body %q is not a JSON error: %v", body, err)
	}
	return v.Error
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testLogger discards logs unless ROUTER_TEST_LOG is set.
func testLogger(*testing.T) *slog.Logger {
	if os.Getenv("ROUTER_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

// --- example ufop processes ---

var (
	buildMu  sync.Mutex
	built    = map[string]string{}
	buildDir string
)

// exampleBin builds examples/<name> once per test binary.
func exampleBin(t *testing.T, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[name]; ok {
		return p
	}
	if p := os.Getenv("ROUTER_TEST_BIN_" + name); p != "" { // a prebuilt program
		built[name] = p
		return p
	}
	if !exampleExists(name) {
		t.Fatalf("example %s not found under ../examples (or ROUTER_TEST_BIN_%s)", name, name)
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "router-examples-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d
	}
	out := filepath.Join(buildDir, name)
	cmd := exec.Command("go", "build", "-o", out, "./examples/"+name)
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, b)
	}
	built[name] = out
	return out
}

// exampleExists reports whether examples/<name> has its program yet.
func exampleExists(name string) bool {
	if os.Getenv("ROUTER_TEST_BIN_"+name) != "" {
		return true
	}
	_, err := os.Stat(filepath.Join("..", "examples", name, "main.go"))
	return err == nil
}

// instance is one running example process.
type instance struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

// freePort is a loopback port free a moment ago, for a process the test
// starts (or a "dead" instance address).
func freePort(t *testing.T) int {
	t.Helper()
	return agenttest.FreePort(t) // below the ephemeral range: no one else is handed it
}

// startExample runs examples/<name> on a free loopback port and waits
// until it accepts connections.
func startExample(t *testing.T, name string) *instance {
	t.Helper()
	return startExampleLog(t, name, io.Discard)
}

// startExampleLog is startExample with the program's stderr (its log)
// going to stderr.
func startExampleLog(t *testing.T, name string, stderr io.Writer) *instance {
	t.Helper()
	bin := exampleBin(t, name)
	port := freePort(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port), "HOST=127.0.0.1")
	cmd.Stdout = io.Discard
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in := &instance{cmd: cmd, addr: fmt.Sprintf("127.0.0.1:%d", port), done: make(chan struct{})}
	go func() { cmd.Wait(); close(in.done) }()
	t.Cleanup(in.kill)
	waitUntil(t, name+" listening", func() bool {
		c, err := net.DialTimeout("tcp", in.addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return true
		}
		return false
	})
	return in
}

func (in *instance) kill() {
	in.cmd.Process.Kill()
	<-in.done
}

// poolInst describes an instance for pool.Update.
func poolInst(id, ufop, version, addr string) pool.Instance {
	return pool.Instance{ID: id, Ufop: ufop, Version: version, Region: "z0", Addr: addr}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}
