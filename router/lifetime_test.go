package router

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/meta"
)

// The tests here look for use-after-release and aliasing bugs of the
// recycled request state (Router.requests: a request's buffers, its embedded
// response streams) and of the strings read without a copy from
// fasthttp's buffers (the Host header, the /_dora/src/ path, the ETag):
// anything kept past the request (a map key, a log record, a metric
// label, a stream still read) would show another request's bytes once
// those are reused.

// lifetimeLog is a slog.Handler that keeps every access line, as a
// handler that keeps records would: the values must stay valid after the
// request. Unlike a map by request id it also keeps a second line of one
// request (a double finish).
type lifetimeLog struct {
	mu    sync.Mutex
	lines map[string][]lifeLine
	// other counts the other records by message and host attribute.
	other map[string]int
}

type lifeLine struct {
	method, key, pipeline, err string
	status, bytes              int64
}

func newLifetimeLog() *lifetimeLog {
	return &lifetimeLog{lines: map[string][]lifeLine{}, other: map[string]int{}}
}

func (a *lifetimeLog) Enabled(context.Context, slog.Level) bool { return true }
func (a *lifetimeLog) WithAttrs([]slog.Attr) slog.Handler       { return a }
func (a *lifetimeLog) WithGroup(string) slog.Handler            { return a }

func (a *lifetimeLog) Handle(_ context.Context, rec slog.Record) error {
	if rec.Message != "access" {
		host := ""
		rec.Attrs(func(at slog.Attr) bool {
			if at.Key == "host" {
				host = at.Value.String()
			}
			return true
		})
		a.mu.Lock()
		a.other[rec.Message+" "+host]++
		a.mu.Unlock()
		return nil
	}
	var id string
	var l lifeLine
	rec.Attrs(func(at slog.Attr) bool {
		switch at.Key {
		case "reqid":
			id = at.Value.String()
		case "method":
			l.method = at.Value.String()
		case "key":
			l.key = at.Value.String()
		case "pipeline":
			l.pipeline = at.Value.String()
		case "status":
			l.status = at.Value.Int64()
		case "bytes":
			l.bytes = at.Value.Int64()
		case "err":
			l.err = at.Value.String()
		}
		return true
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lines[id] = append(a.lines[id], l)
	return nil
}

// line waits for reqid's access line and returns it; a request logged
// twice fails the test.
func (a *lifetimeLog) line(t *testing.T, reqid string) lifeLine {
	t.Helper()
	if reqid == "" {
		t.Fatal("no request id")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		a.mu.Lock()
		ls := a.lines[reqid]
		a.mu.Unlock()
		if len(ls) > 1 {
			t.Fatalf("reqid %s logged %d times: %+v", reqid, len(ls), ls)
		}
		if len(ls) == 1 {
			return ls[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no access line for reqid %s", reqid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// slowSrc is a Dora-protocol instance that fetches its url= input as a
// stream, tells got the one-shot URL answer's request id once 64 KiB are
// in, waits for release, then reads the rest and answers with the number
// of bytes read.
type slowSrc struct {
	got     chan string
	release chan struct{}
}

func (s *slowSrc) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	resp, err := http.Get(req.URL.Query().Get("url"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	n, err := io.ReadFull(resp.Body, make([]byte, 64<<10))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	s.got <- resp.Header.Get("X-Reqid")
	<-s.release
	m, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%d", int64(n)+m)
}

// lifetimeRouter is hotRouterWith's router (bucket photos, the ufops
// passthru, passurl and cached on the in-process instance) plus the ufop
// slowsrc served by src, logging into log, with a disk tier for results
// (so that big cached results stream from a file).
func lifetimeRouter(t *testing.T, log *lifetimeLog, src *slowSrc) (*Router, *memOrigin) {
	objs := newMemOrigin()
	addr := benchInstance(t)
	srv := &http.Server{Handler: src}
	ln := listenLoopback(t)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p := pool.New(pool.Options{})
	var insts []pool.Instance
	var ufops []dora.Ufop
	var rels []dora.Release
	for _, u := range []struct {
		name, addr string
		limit      int64
		cache      *dora.CachePolicy
	}{
		{"passthru", addr, 0, nil}, {"passurl", addr, -1, nil},
		{"cached", addr, 0, &dora.CachePolicy{Enabled: true, TTL: time.Hour}},
		{"slowsrc", ln.Addr().String(), -1, nil},
	} {
		insts = append(insts, pool.Instance{ID: u.name + "0", Ufop: u.name, Version: "v1", Region: dora.DefaultRegion, Addr: u.addr})
		ufops = append(ufops, dora.Ufop{Name: u.name, Owner: alice.ID, Mode: dora.ModePublic, ActiveVersion: "v1"})
		// The streams are held while the other requests run (slowly
		// under -race): no step timeout may end them meanwhile.
		rels = append(rels, dora.Release{Ufop: u.name, Version: "v1", Protocol: dora.ProtocolDora, BodyLimit: u.limit, Cache: u.cache,
			Timeouts: dora.StepTimeouts{FirstByte: 5 * time.Minute, Idle: 5 * time.Minute}})
	}
	p.Update(insts)
	r, err := New(Config{
		Meta: staticMeta{meta.NewSnapshot(meta.Data{
			Accounts: []dora.Account{alice},
			Buckets:  []dora.Bucket{{Name: "photos", Owner: alice.ID}},
			Ufops:    ufops,
			Releases: rels,
		})},
		Objects: objs, Pool: p,
		Logger:         slog.New(log),
		ResultCacheDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	benchServe(t, r)
	return r, objs
}

// lifeGet sends a GET of uri with Host host (and the extra header
// name: value pairs) to r through tr, failing the test on a transport
// error.
func lifeGet(t *testing.T, tr http.RoundTripper, r *Router, host, uri string, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+r.publicAddr()+uri, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestRecycledRequestLifetimes holds streamed answers of every kind half
// read (an object, a range of it, a pipeline's output, a result streamed
// from the cache's disk tier, an instance's read of its one-shot input
// URL), hangs up on as many others mid-stream, and meanwhile runs many
// requests that take and give back recycled requests: conditional GETs
// of objects with distinct validators, cached results. Every answer must
// carry its own bytes and validators, every request exactly one access
// line with its own key, pipeline, status and byte count (a recycled
// request reused under a stream, or finished twice, would log another's
// or twice), and the metric labels must stay the step names.
func TestRecycledRequestLifetimes(t *testing.T) {
	log := newLifetimeLog()
	src := &slowSrc{got: make(chan string, 1), release: make(chan struct{})}
	r, objs := lifetimeRouter(t, log, src)
	const bigSize = 16 << 20 // far more than the socket buffers hold
	big := make([]byte, bigSize)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	objs.add("photos", "big", "application/octet-stream", big)
	// Small objects with distinct validators (etag and date).
	type small struct {
		key, etag, lm string
		data          []byte
	}
	var smalls []small
	for i := range 8 {
		data := bytes.Repeat([]byte{byte('a' + i)}, 4<<10+i)
		key := fmt.Sprintf("small%d", i)
		o := objs.add("photos", key, "text/plain", data)
		o.Modified = time.Date(2026, 1, 1+i, 3, 4, 5, 0, time.UTC)
		objs.mu.Lock()
		objs.objs["photos/"+key] = memObj{data: data, obj: o}
		objs.mu.Unlock()
		smalls = append(smalls, small{key, `"` + o.ETag + `"`, o.Modified.Format(http.TimeFormat), data})
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	defer tr.CloseIdleConnections()
	const host = "photos.localhost"

	// The big result goes to the cache's disk tier once read whole;
	// then its hits stream from the file.
	for i := 0; ; i++ {
		resp := lifeGet(t, tr, r, host, "/big?cached")
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(b, big) {
			t.Fatalf("/big?cached: %d bytes, %v", len(b), err)
		}
		if resp.Header.Get("X-Dora-Cache") == "hit" {
			break
		}
		if i == 20 {
			t.Fatal("/big?cached never served from the cache")
		}
		time.Sleep(50 * time.Millisecond)
	}

	type stream struct {
		uri, rng string
		want     []byte
		status   int64
		pipeline string
		resp     *http.Response
	}
	streams := func() []*stream {
		return []*stream{
			{uri: "/big", want: big, status: 200},
			{uri: "/big", rng: "bytes=1-", want: big[1:], status: 206},
			{uri: "/big?passthru", want: big, status: 200, pipeline: "passthru"},
			{uri: "/big?cached", want: big, status: 200, pipeline: "cached"},
		}
	}
	open := func(s *stream) {
		var hdr []string
		if s.rng != "" {
			hdr = []string{"Range", s.rng}
		}
		s.resp = lifeGet(t, tr, r, host, s.uri, hdr...)
		if s.resp.StatusCode != int(s.status) {
			t.Fatalf("%s %s: status %d", s.uri, s.rng, s.resp.StatusCode)
		}
		if _, err := io.ReadFull(s.resp.Body, make([]byte, 64<<10)); err != nil {
			t.Fatal(err)
		}
	}
	held, hung := streams(), streams()
	for _, s := range held {
		open(s)
	}
	for _, s := range hung {
		open(s)
		s.resp.Body.Close() // not read to its end: the connection is closed
	}
	// An instance reads its one-shot input URL half (the URL's answer is
	// a recycled request's own stream).
	type result struct {
		body []byte
		err  error
	}
	srcDone := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+r.publicAddr()+"/big?slowsrc", nil)
		req.Host = host
		resp, err := tr.RoundTrip(req)
		if err != nil {
			srcDone <- result{nil, err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		srcDone <- result{b, err}
	}()
	var srcReqid string
	select {
	case srcReqid = <-src.got:
	case res := <-srcDone:
		t.Fatalf("slowsrc answered before reading its input: %q, %v", res.body, res.err)
	}

	// Many requests meanwhile, which take and give back recycled
	// requests.
	type fast struct {
		reqid, key, pipeline string
		status, bytes        int64
	}
	var mu sync.Mutex
	var fasts []fast
	var wg sync.WaitGroup
	for i := range 128 {
		wg.Go(func() {
			s := smalls[i%len(smalls)]
			var resp *http.Response
			var f fast
			switch i % 4 {
			case 0: // 304 by the request's own ETag
				resp = lifeGet(t, tr, r, host, "/"+s.key, "If-None-Match", s.etag)
				f = fast{key: s.key, status: 304}
			case 1: // 412: another ETag
				resp = lifeGet(t, tr, r, host, "/"+s.key, "If-Match", smalls[(i+1)%len(smalls)].etag)
				f = fast{key: s.key, status: 412}
			case 2:
				resp = lifeGet(t, tr, r, host, "/"+s.key)
				f = fast{key: s.key, status: 200, bytes: int64(len(s.data))}
			case 3: // a cached result (hit after the first)
				resp = lifeGet(t, tr, r, host, "/"+s.key+"?cached")
				f = fast{key: s.key, pipeline: "cached", status: 200, bytes: int64(len(s.data))}
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != int(f.status) {
				t.Errorf("%d %s: status %d, %v: %.100s", i, s.key, resp.StatusCode, err, b)
				return
			}
			if f.status == 200 && !bytes.Equal(b, s.data) {
				t.Errorf("%d %s: %d bytes not the object's", i, s.key, len(b))
			}
			if f.pipeline == "" && f.status != 412 {
				if got := resp.Header.Get("ETag"); got != s.etag {
					t.Errorf("%d %s: ETag %s, want %s", i, s.key, got, s.etag)
				}
				if got := resp.Header.Get("Last-Modified"); got != s.lm {
					t.Errorf("%d %s: Last-Modified %s, want %s", i, s.key, got, s.lm)
				}
			}
			if f.status == 412 {
				f.bytes = int64(len(b))
			}
			f.reqid = resp.Header.Get("X-Reqid")
			mu.Lock()
			fasts = append(fasts, f)
			mu.Unlock()
		})
	}
	wg.Wait()

	close(src.release)
	res := <-srcDone
	if res.err != nil || string(res.body) != fmt.Sprint(bigSize) {
		t.Errorf("/big?slowsrc: %q, %v", res.body, res.err)
	}
	for _, s := range held {
		rest, err := io.ReadAll(s.resp.Body)
		s.resp.Body.Close()
		if err != nil || !bytes.Equal(rest, s.want[64<<10:]) {
			t.Errorf("%s %s: the rest (%d bytes, %v) is not the object's", s.uri, s.rng, len(rest), err)
		}
		l := log.line(t, s.resp.Header.Get("X-Reqid"))
		if l.key != "big" || l.pipeline != s.pipeline || l.status != s.status || l.bytes != int64(len(s.want)) || l.err != "" || l.method != "GET" {
			t.Errorf("%s %s: access line %+v", s.uri, s.rng, l)
		}
	}
	for _, s := range hung {
		l := log.line(t, s.resp.Header.Get("X-Reqid"))
		if l.key != "big" || l.pipeline != s.pipeline || l.status != s.status || l.bytes >= int64(len(s.want)) || l.err == "" {
			t.Errorf("%s %s (client gone): access line %+v", s.uri, s.rng, l)
		}
	}
	if l := log.line(t, srcReqid); l.pipeline != "_src" || l.status != 200 || l.bytes != bigSize || l.err != "" {
		t.Errorf("one-shot input URL: access line %+v", l)
	}
	for _, f := range fasts {
		l := log.line(t, f.reqid)
		if l.key != f.key || l.pipeline != f.pipeline || l.status != f.status || (f.status != 304 && l.bytes != f.bytes) {
			t.Errorf("%s?%s (reqid %s): access line %+v, want %+v", f.key, f.pipeline, f.reqid, l, f)
		}
	}

	// The request counter's labels are step names (or - and unknown).
	resp := lifeGet(t, tr, r, r.publicAddr(), "/metrics")
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	labels := 0
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, `dora_router_requests_total{code="`)
		if !ok {
			continue
		}
		labels++
		_, rest, _ = strings.Cut(rest, `ufop="`)
		ufop, _, _ := strings.Cut(rest, `"`)
		switch ufop {
		case "-", "passthru", "cached", "slowsrc":
		default:
			t.Errorf("request counter labelled ufop=%q: %s", ufop, line)
		}
	}
	if labels == 0 {
		t.Errorf("no request counter in /metrics:\n%s", b)
	}
}

// TestNoCopyStringsNotKept runs a cached pipeline's request, then many
// requests on the same keep-alive connection (fasthttp reuses the same
// request buffers) whose Host, path and query have the same lengths but
// other bytes: what the first request left in the router (its hot route,
// its cache entry) must still name it, and it must still be served from
// the cache.
func TestNoCopyStringsNotKept(t *testing.T) {
	log := newLifetimeLog()
	r, objs := lifetimeRouter(t, log, &slowSrc{})
	obj := objs.add("photos", "small", "text/plain", bytes.Repeat([]byte("x"), 4<<10))
	tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}
	defer tr.CloseIdleConnections()
	get := func(host, uri string) (*http.Response, []byte) {
		resp := lifeGet(t, tr, r, host, uri)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}
	const host, uri = "photos.localhost", "/small?cached"
	// First longer ones, so that the connection's buffers do not grow
	// (move) after the request under test: its bytes are overwritten in
	// place by the next ones.
	get(strings.Repeat("h", 64)+".localhost", "/"+strings.Repeat("k", 64)+"?"+strings.Repeat("q", 64))
	for range 2 { // the miss stores it, the hit remembers the route
		if resp, b := get(host, uri); resp.StatusCode != 200 || len(b) != 4<<10 {
			t.Fatalf("%s: status %d, %d bytes", uri, resp.StatusCode, len(b))
		}
	}
	// Same lengths, other bytes: an unknown bucket, a missing key, an
	// unknown ufop, a /_dora/src/ token, the router's own host.
	for i := range 50 {
		c := string(rune('a' + i%26))
		get(r.publicAddr(), "/healthz")
		get(host, "/_dora/src/"+strings.Repeat(c, 32))
		get(host, "/small?cache"+c)
		get(c+host[1:], uri)
		get(host, "/smal"+c+"?cache"+c) // last: no byte of the route left
	}
	tb := r.hot.t.Load()
	if tb == nil {
		t.Fatal("no hot route remembered")
	}
	var found *hotRoute
	for i := range tb.slots {
		if rt := tb.slots[i].Load(); rt != nil {
			if !strings.HasPrefix(rt.id, host+"\x00/small?cache") {
				t.Errorf("hot route id %q: not a request of this test's cached route", rt.id)
			}
			if rt.id == host+"\x00"+uri {
				found = rt
			}
		}
	}
	if found == nil {
		t.Fatalf("the route of %s%s is not remembered", host, uri)
	}
	if found.bucket != "photos" || found.key != "small" || found.pipeline != "cached" || found.tail != "cached\x00cached@v1|" ||
		len(found.names) != 1 || found.names[0] != "cached" {
		t.Errorf("hot route %+v", found)
	}
	ck := append(appendKeyHead(nil, "photos", "small", &obj), found.tail...)
	if h, ok := r.results.GetBytes(ck, r.now()); !ok {
		t.Errorf("result cache: no entry under %q", ck)
	} else {
		closeHit(h)
	}
	resp, b := get(host, uri)
	if resp.StatusCode != 200 || resp.Header.Get("X-Dora-Cache") != "hit" || !bytes.Equal(b, bytes.Repeat([]byte("x"), 4<<10)) {
		t.Errorf("%s again: status %d, X-Dora-Cache %q, %d bytes", uri, resp.StatusCode, resp.Header.Get("X-Dora-Cache"), len(b))
	}
	if l := log.line(t, resp.Header.Get("X-Reqid")); l.key != "small" || l.pipeline != "cached" || l.status != 200 {
		t.Errorf("access line %+v", l)
	}
}

// listenLoopback listens on a free loopback port.
func listenLoopback(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestOwnHostWarningKeyKept binds the router's own host name as a bucket's
// domain: the router ignores the binding and warns once per snapshot,
// remembering the host read without a copy from the request. After
// same-length other hosts on the same connection (the Host bytes
// overwritten in place), the own host must still be known as warned.
func TestOwnHostWarningKeyKept(t *testing.T) {
	log := newLifetimeLog()
	objs := newMemOrigin()
	objs.add("photos", "small", "text/plain", []byte("x"))
	r, err := New(Config{
		Meta: staticMeta{meta.NewSnapshot(meta.Data{
			Accounts: []dora.Account{alice},
			Buckets:  []dora.Bucket{{Name: "photos", Owner: alice.ID, Domains: []string{"127.0.0.1"}}},
		})},
		Objects: objs, Pool: pool.New(pool.Options{}),
		Logger: slog.New(log),
	})
	if err != nil {
		t.Fatal(err)
	}
	benchServe(t, r)
	tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	get := func(host, uri string) int {
		resp := lifeGet(t, tr, r, host, uri)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	own := r.publicAddr()                                 // 127.0.0.1:port
	get(strings.Repeat("h", 64)+".localhost", "/healthz") // sizes the buffers
	if st := get(own, "/healthz"); st != 200 {
		t.Fatalf("/healthz on the own host: status %d", st)
	}
	for i := range 20 {
		get("127.0.0."+string(rune('2'+i%8))+own[len("127.0.0.1"):], "/healthz")
	}
	r.ownWarned.Range(func(k, _ any) bool {
		if k.(string) != "127.0.0.1" {
			t.Errorf("ownWarned keeps host %q", k)
		}
		return true
	})
	// Again, on another connection (whose buffers hold nothing of the
	// first one's): no second warning.
	tr.CloseIdleConnections()
	get(own, "/healthz")
	const msg = "router: ignoring a domain binding of the router's own host name 127.0.0.1"
	log.mu.Lock()
	defer log.mu.Unlock()
	if n := log.other[msg]; n != 1 {
		t.Errorf("%d warnings of the own host's binding, want 1: %v", n, log.other)
	}
}

// TestSrcBodyEndsAtItsSize: fasthttp reads a one-shot URL's answer on
// until EOF after its last byte, by which time the pipeline may have
// ended (its instance answered once it had the whole input). That read
// is the answer's end, not a failure; a read before the end still fails
// with the pipeline's end, and so does one of an input of unknown size.
func TestSrcBodyEndsAtItsSize(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	in := func(size int64) flow { return flow{body: io.NopCloser(strings.NewReader("abc")), size: size} }
	full := &srcBody{e: &srcEntry{in: in(3), ctx: ctx}}
	short := &srcBody{e: &srcEntry{in: in(3), ctx: ctx}}
	unknown := &srcBody{e: &srcEntry{in: in(-1), ctx: ctx}}
	buf := make([]byte, 3)
	if n, err := io.ReadFull(full, buf); n != 3 || err != nil {
		t.Fatalf("read %d, %v", n, err)
	}
	if n, err := short.Read(buf[:1]); n != 1 || err != nil {
		t.Fatalf("read %d, %v", n, err)
	}
	if n, err := io.ReadFull(unknown, buf); n != 3 || err != nil {
		t.Fatalf("read %d, %v", n, err)
	}
	cancel()
	if n, err := full.Read(buf); n != 0 || err != io.EOF || full.err != nil {
		t.Errorf("after the whole input: read %d, %v (recorded %v), want EOF", n, err, full.err)
	}
	if _, err := short.Read(buf); err != context.Canceled || short.err != context.Canceled {
		t.Errorf("before the input's end: %v (recorded %v), want the pipeline's end", err, short.err)
	}
	if _, err := unknown.Read(buf); err != context.Canceled {
		t.Errorf("input of unknown size: %v, want the pipeline's end", err)
	}
}
