package router

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/pool"
)

// lines makes a text object: line i is "line <i> <tag>" where every third
// line's tag is "x".
func lines(n int) (all string, withX string) {
	var b, x strings.Builder
	for i := range n {
		tag := "y"
		if i%3 == 0 {
			tag = "x"
		}
		l := fmt.Sprintf("line %d %s\n", i, tag)
		b.WriteString(l)
		if tag == "x" {
			x.WriteString(l)
		}
	}
	return b.String(), x.String()
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

type qhashOut struct {
	Hash  string `json:"hash"`
	Fsize int64  `json:"fsize"`
}

func TestPipelineOverExamples(t *testing.T) {
	e := newEnv(t, nil)
	g := startExample(t, "grepd")
	e.ufop(dora.Ufop{Name: "grepd", Owner: alice.ID, Mode: dora.ModePrivate}, dora.ProtocolDora)
	// The same program registered a second time, called over /uop.
	e.ufop(dora.Ufop{Name: "grepuop", Owner: alice.ID, Mode: dora.ModePrivate}, dora.ProtocolUfop)
	insts := []pool.Instance{poolInst("g0", "grepd", "v1", g.addr), poolInst("gu0", "grepuop", "v1", g.addr)}
	all, withX := lines(5000) // ~60 KB, several TCP segments
	e.objs.add("photos", "dir/text.txt", "text/plain", []byte(all))

	type tc struct {
		name, query string
		want        func(t *testing.T, body []byte)
	}
	exact := func(s string) func(*testing.T, []byte) {
		return func(t *testing.T, b []byte) {
			if string(b) != s {
				t.Fatalf("body (%d bytes) differs from the %d expected", len(b), len(s))
			}
		}
	}
	hashOf := func(s string) func(*testing.T, []byte) {
		return func(t *testing.T, b []byte) {
			var q qhashOut
			if err := json.Unmarshal(b, &q); err != nil {
				t.Fatalf("qhash body %q: %v", b, err)
			}
			if q.Hash != md5hex(s) || q.Fsize != int64(len(s)) {
				t.Fatalf("qhash %+v want %s/%d", q, md5hex(s), len(s))
			}
		}
	}
	cases := []tc{
		{"dora grep", "grepd/x", exact(withX)},
		{"dora grep then qhash", "grepd/x|qhash/md5", hashOf(withX)},
		{"uop grep then qhash", "grepuop/x|qhash/md5", hashOf(withX)},
		{"uop then dora", "grepuop/line|grepd/x", exact(withX)},
		{"three steps", "grepd/line|grepuop/line|grepd/x", exact(withX)},
		{"qhash between steps", "grepd/x|qhash/md5|grepd/hash", func(t *testing.T, b []byte) { hashOf(withX)(t, b[:len(b)-1]) }},
	}
	if passthruAvailable() {
		p := startExample(t, "passthru")
		e.ufop(dora.Ufop{Name: "passthru", Owner: alice.ID, Mode: dora.ModePrivate}, dora.ProtocolDora)
		insts = append(insts, poolInst("p0", "passthru", "v1", p.addr))
		cases = append(cases, tc{"passthru passthru grepd", "passthru|passthru|grepd/x", exact(withX)})
	}
	if wordcountAvailable() {
		w := startExample(t, "wordcount")
		e.ufop(dora.Ufop{Name: "wordcount", Owner: alice.ID, Mode: dora.ModePrivate}, dora.ProtocolUfop)
		insts = append(insts, poolInst("w0", "wordcount", "v1", w.addr))
		cases = append(cases, tc{"grep then wordcount over /uop", "grepd/x|wordcount", func(t *testing.T, b []byte) {
			if n := strings.Count(withX, "\n"); !strings.Contains(string(b), fmt.Sprint(n)) {
				t.Fatalf("wordcount output %q does not count %d lines", b, n)
			}
		}})
	}
	e.pool.Update(insts)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.get("photos.localhost", "/dir/text.txt?"+c.query)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			c.want(t, body)
		})
	}
	t.Run("HEAD", func(t *testing.T) {
		resp, body := e.do("HEAD", "photos.localhost", "/dir/text.txt?grepd/x|qhash/md5", nil)
		if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Type") == "" {
			t.Fatalf("HEAD: %d %q %v", resp.StatusCode, body, resp.Header)
		}
	})
	t.Run("a program's error reaches the client unchanged, the step in headers", func(t *testing.T) {
		for i, q := range []string{"grepd", "grepd/x|grepd"} {
			resp, body := e.get("photos.localhost", "/dir/text.txt?"+q)
			if resp.StatusCode != 400 || resp.Header.Get("X-Dora-Step") != fmt.Sprint(i) || resp.Header.Get("X-Dora-Ufop") != "grepd" {
				t.Fatalf("%s: %d step %q ufop %q (%s)", q, resp.StatusCode, resp.Header.Get("X-Dora-Step"), resp.Header.Get("X-Dora-Ufop"), body)
			}
			// grepd answers with http.Error: its text, its type.
			if want := "cmd \"grepd\": want grepd/<word>\n"; string(body) != want {
				t.Fatalf("%s: body %q, want the program's own %q", q, body, want)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Fatalf("%s: Content-Type %q, want the program's", q, ct)
			}
		}
	})
	t.Run("load figures reach the recorder", func(t *testing.T) {
		waitUntil(t, "a sample with completions for grepd", func() bool {
			for _, s := range e.load.all() {
				if s.Key.Ufop == "grepd" && s.Key.Version == "v1" && s.Key.Region == "z0" && s.Completed > 0 && s.Concurrency > 0 {
					return true
				}
			}
			return false
		})
	})
	// Every stream ended: no one-shot URL left, nothing in flight.
	waitUntil(t, "streams closed", func() bool {
		for _, h := range e.pool.Hosts(pool.Key{Ufop: "grepd", Version: "v1", Region: "z0"}) {
			if h.InFlight() != 0 {
				return false
			}
		}
		return e.r.src.len() == 0
	})
}

func passthruAvailable() bool  { return exampleExists("passthru") }
func wordcountAvailable() bool { return exampleExists("wordcount") }

func TestNoInstance(t *testing.T) {
	e := newEnv(t, nil)
	e.ufop(dora.Ufop{Name: "lonely", Owner: alice.ID}, dora.ProtocolDora)
	e.scaledToZero("d1", "lonely", "v1")
	e.objs.add("photos", "k", "text/plain", []byte("x"))
	resp, body := e.get("photos.localhost", "/k?lonely/a")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("status %d Retry-After %q (%s)", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	jsonError(t, body)
	waitUntil(t, "waiting demand recorded", func() bool {
		for _, s := range e.load.all() {
			if s.Key.Ufop == "lonely" && s.Waiting > 0 {
				return true
			}
		}
		return false
	})
	// An instance that refuses connections: 503 after a retry, and after
	// EjectAfter connect failures it is ejected.
	dead := freePort(t)
	e.pool.Update([]pool.Instance{poolInst("dead", "lonely", "v1", fmt.Sprintf("127.0.0.1:%d", dead))})
	k := pool.Key{Ufop: "lonely", Version: "v1", Region: "z0"}
	for e.pool.Healthy(k) > 0 {
		resp, body := e.get("photos.localhost", "/k?lonely/a")
		if resp.StatusCode != 503 {
			t.Fatalf("status %d (%s)", resp.StatusCode, body)
		}
	}
}

// TestStepTimeouts: a first-byte timeout answers 504 naming the step.
func TestStepTimeouts(t *testing.T) {
	e := newEnv(t, nil)
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	e.ufopRelease(dora.Ufop{Name: "sleepy", Owner: alice.ID},
		dora.Release{Timeouts: dora.StepTimeouts{FirstByte: 100 * time.Millisecond}})
	e.pool.Update([]pool.Instance{poolInst("s0", "sleepy", "v1", strings.TrimPrefix(slow.URL, "http://"))})
	e.objs.add("photos", "k", "text/plain", []byte("x"))
	resp, body := e.get("photos.localhost", "/k?qhash/md5|sleepy/a")
	if resp.StatusCode != 504 || resp.Header.Get("X-Dora-Step") != "1" {
		t.Fatalf("status %d step %q (%s)", resp.StatusCode, resp.Header.Get("X-Dora-Step"), body)
	}
	jsonError(t, body)
}

// fakeInstance is a Dora-protocol instance for failure injection: it
// fetches url= (or, without one, reads the body, as programs must) and
// then runs serve.
func fakeInstance(t *testing.T, serve func(w http.ResponseWriter, r *http.Request, in io.Reader)) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := r.URL.Query().Get("url")
		if u == "" {
			serve(w, r, r.Body)
			return
		}
		resp, err := http.Get(u)
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		defer resp.Body.Close()
		serve(w, r, resp.Body)
	}))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

// TestSaveAsFailureLeavesNoObject: a step that dies midway breaks the
// client's response and the saveas target never appears.
func TestSaveAsFailureLeavesNoObject(t *testing.T) {
	e := newEnv(t, nil)
	addr := fakeInstance(t, func(w http.ResponseWriter, r *http.Request, in io.Reader) {
		w.Header().Set("Content-Length", "1000000")
		w.Write([]byte(strings.Repeat("a", 70000)))
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	e.ufop(dora.Ufop{Name: "breaker", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("b0", "breaker", "v1", addr)})
	e.objs.add("photos", "in.txt", "text/plain", []byte("abc"))
	url := signedSaveAs("photos.localhost", "/in.txt", "breaker/go|", "photos", "broken.txt")
	req, _ := http.NewRequest("GET", "http://"+e.addr+url, nil)
	req.Host = "photos.localhost"
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatal("the client saw a complete response from a broken stream")
	}
	waitUntil(t, "pipeline torn down", func() bool { return e.r.src.len() == 0 })
	if _, ok := e.objs.get("photos", "broken.txt"); ok {
		t.Fatal("a broken stream was saved")
	}
}

// TestClientGoneCancelsSteps: when the client goes away mid-stream, the
// instance's request is cancelled and every stream is closed.
func TestClientGoneCancelsSteps(t *testing.T) {
	e := newEnv(t, nil)
	cancelled := make(chan struct{})
	var once sync.Once
	addr := fakeInstance(t, func(w http.ResponseWriter, r *http.Request, in io.Reader) {
		chunk := []byte(strings.Repeat("z", 4096))
		for {
			if _, err := w.Write(chunk); err != nil {
				break
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				once.Do(func() { close(cancelled) })
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		once.Do(func() { close(cancelled) })
	})
	e.ufop(dora.Ufop{Name: "endless", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("e0", "endless", "v1", addr)})
	e.objs.add("photos", "in.txt", "text/plain", []byte("abc"))
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /in.txt?endless/a HTTP/1.1\r\nHost: photos.localhost\r\n\r\n")
	buf := make([]byte, 64<<10)
	if _, err := io.ReadAtLeast(conn, buf, 20000); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	select {
	case <-cancelled:
	case <-time.After(20 * time.Second):
		t.Fatal("the instance's request was never cancelled")
	}
	k := pool.Key{Ufop: "endless", Version: "v1", Region: "z0"}
	waitUntil(t, "in-flight back to zero", func() bool {
		hs := e.pool.Hosts(k)
		return len(hs) == 1 && hs[0].InFlight() == 0 && e.r.src.len() == 0
	})
}

// TestKillInstanceUnderLoad: with two instances under steady load, killing
// one keeps requests succeeding (retried on the other) and ejects it.
func TestKillInstanceUnderLoad(t *testing.T) {
	e := newEnv(t, nil)
	a, b := startExample(t, "grepd"), startExample(t, "grepd")
	e.ufop(dora.Ufop{Name: "grepd", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("a", "grepd", "v1", a.addr), poolInst("b", "grepd", "v1", b.addr)})
	all, withX := lines(200)
	e.objs.add("photos", "t.txt", "text/plain", []byte(all))
	var killed atomic.Bool
	var afterKill, failedAfter atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 16)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				started := killed.Load()
				req, _ := http.NewRequest("GET", "http://"+e.addr+"/t.txt?grepd/x", nil)
				req.Host = "photos.localhost"
				resp, err := e.client.Do(req)
				ok := false
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					ok = err == nil && resp.StatusCode == 200 && string(body) == withX
				}
				if started {
					afterKill.Add(1)
					if !ok {
						failedAfter.Add(1)
						select {
						case errs <- fmt.Sprintf("%v %v %s", err, resp.StatusCode, body):
						default:
						}
					}
				}
			}
		})
	}
	k := pool.Key{Ufop: "grepd", Version: "v1", Region: "z0"}
	waitUntil(t, "load on both instances", func() bool {
		var n int
		for _, h := range e.pool.Hosts(k) {
			if h.InFlight() > 0 {
				n++
			}
		}
		return n == 2
	})
	b.kill()
	killed.Store(true)
	waitUntil(t, "dead instance ejected and 200 requests after the kill", func() bool {
		return e.pool.Healthy(k) == 1 && afterKill.Load() >= 200
	})
	close(stop)
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Log("failure:", s)
	}
	if n := failedAfter.Load(); n > 0 {
		t.Fatalf("%d of %d requests started after the kill failed", n, afterKill.Load())
	}
}

// A saveas target key the platform's key rule refuses is a 400 before
// anything streams: the client never gets an output that was not saved.
func TestSaveAsBadKeyRefusedUpFront(t *testing.T) {
	e := newEnv(t, nil)
	e.objs.add("photos", "in.txt", "text/plain", []byte("hello"))
	for _, key := range []string{"a/../b", "../x", "/abs", "a//b", "a\\b", "ctl\x01", strings.Repeat("k", MaxKeyBytes+1)} {
		resp, body := e.get("photos.localhost", signedSaveAs("photos.localhost", "/in.txt", "qhash/md5|", "photos", key))
		if resp.StatusCode != 400 {
			t.Errorf("saveas key %.20q: %d %q, want 400", key, resp.StatusCode, body)
			continue
		}
		if msg := jsonError(t, body); !strings.Contains(msg, "key") {
			t.Errorf("saveas key %.20q: error %q does not name the key", key, msg)
		}
	}
	e.objs.mu.Lock()
	puts := e.objs.puts
	e.objs.mu.Unlock()
	if puts != 0 {
		t.Fatalf("%d objects saved", puts)
	}
	// A good key still saves.
	if resp, body := e.get("photos.localhost", signedSaveAs("photos.localhost", "/in.txt", "qhash/md5|", "photos", "out/ok.txt")); resp.StatusCode != 200 {
		t.Fatalf("good saveas: %d %q", resp.StatusCode, body)
	}
	waitUntil(t, "the good key saved", func() bool { _, ok := e.objs.get("photos", "out/ok.txt"); return ok })
}

// TestInterimResponsesSkipped: an instance's informational answers (103
// Early Hints, 102 Processing) come before its final one: the router reads
// on to the final answer (RFC 9110 15.2), in the body and the url= mode.
// It used to take the 1xx for the program's error and answer it to the
// client as final (a client then waits for another answer that never
// comes), the real answer left on the instance's connection.
func TestInterimResponsesSkipped(t *testing.T) {
	e := newEnv(t, nil)
	addr := fakeInstance(t, func(w http.ResponseWriter, r *http.Request, in io.Reader) {
		b, _ := io.ReadAll(in)
		w.WriteHeader(http.StatusProcessing)
		w.Header().Set("Link", "</x.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Write([]byte(strings.ToUpper(string(b))))
	})
	e.ufop(dora.Ufop{Name: "hints", Owner: alice.ID}, dora.ProtocolDora)
	e.ufopRelease(dora.Ufop{Name: "hintsurl", Owner: alice.ID}, dora.Release{Protocol: dora.ProtocolDora, BodyLimit: -1})
	e.pool.Update([]pool.Instance{poolInst("h", "hints", "v1", addr), poolInst("hu", "hintsurl", "v1", addr)})
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	for _, pq := range []string{"/k?hints/x", "/k?hintsurl/x", "/k?hints/x|hintsurl/y"} {
		for range 2 { // the second over the connection the first used
			c, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second)) // a failure's bound, not a timing
			io.WriteString(c, "GET "+pq+" HTTP/1.1\r\nHost: photos.localhost\r\nConnection: close\r\n\r\n")
			raw, err := io.ReadAll(c)
			c.Close()
			if err != nil || !strings.HasPrefix(string(raw), "HTTP/1.1 200 ") || !strings.HasSuffix(string(raw), "\r\n\r\nABC") {
				t.Fatalf("%s: %q, %v; want the instance's final 200 ABC", pq, raw, err)
			}
		}
	}
}
