package router

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/pool"
)

// seenReq is what a recording instance saw of one request.
type seenReq struct {
	path   string
	url    string // url= (Dora) or src.url (UFOP)
	body   int    // bytes of the request body (Dora)
	hadURL bool
}

// recInstance speaks both protocols: it answers with its input (from url=
// or src.url when given, else from the body) and records each request.
type recInstance struct {
	mu   sync.Mutex
	seen []seenReq
}

func (ri *recInstance) serve(w http.ResponseWriter, r *http.Request) {
	var s seenReq
	s.path = r.URL.Path
	var in io.Reader
	switch r.URL.Path {
	case "/uop":
		var req uopRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		s.url, s.hadURL = req.Src.URL, req.Src.URL != ""
	default:
		s.url = r.URL.Query().Get("url")
		s.hadURL = r.URL.Query().Has("url")
	}
	if s.url != "" {
		resp, err := http.Get(s.url)
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		defer resp.Body.Close()
		in = resp.Body
		if resp.ContentLength >= 0 {
			w.Header().Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
		}
	} else {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		s.body = len(b)
		in = bytes.NewReader(b)
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	}
	ri.mu.Lock()
	ri.seen = append(ri.seen, s)
	ri.mu.Unlock()
	io.Copy(w, in)
}

func (ri *recInstance) take() []seenReq {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	s := ri.seen
	ri.seen = nil
	return s
}

func startRec(t *testing.T) (*recInstance, string) {
	ri := &recInstance{}
	s := httptest.NewServer(http.HandlerFunc(ri.serve))
	t.Cleanup(s.Close)
	return ri, strings.TrimPrefix(s.URL, "http://")
}

// TestBodyMode: a Dora-protocol step gets an input of known size up to the
// release's body limit as its POST body without url=, a larger one through
// url=; a negative limit always uses url=; a UFOP-protocol step always gets
// its JSON with src.url; the result is the same either way, and an
// in-memory step output feeds the next step's body too.
func TestBodyMode(t *testing.T) {
	e := newEnv(t, nil)
	ri, addr := startRec(t)
	e.ufopRelease(dora.Ufop{Name: "rec", Owner: alice.ID}, dora.Release{Protocol: dora.ProtocolDora})
	e.ufopRelease(dora.Ufop{Name: "recsmall", Owner: alice.ID}, dora.Release{Protocol: dora.ProtocolDora, BodyLimit: 100})
	e.ufopRelease(dora.Ufop{Name: "recnever", Owner: alice.ID}, dora.Release{Protocol: dora.ProtocolDora, BodyLimit: -1})
	e.ufopRelease(dora.Ufop{Name: "recuop", Owner: alice.ID}, dora.Release{Protocol: dora.ProtocolUfop})
	e.pool.Update([]pool.Instance{
		poolInst("r0", "rec", "v1", addr), poolInst("r1", "recsmall", "v1", addr),
		poolInst("r2", "recnever", "v1", addr), poolInst("r3", "recuop", "v1", addr),
	})
	at := bytes.Repeat([]byte("0123456789abcdef"), dora.DefaultBodyLimit/16)
	above := append(append([]byte{}, at...), 'X')
	e.objs.add("photos", "at", "text/plain", at)
	e.objs.add("photos", "above", "text/plain", above)
	e.objs.add("photos", "100", "text/plain", at[:100])
	e.objs.add("photos", "101", "text/plain", at[:101])

	for _, c := range []struct {
		path  string
		want  []byte
		steps int
		url   bool
	}{
		{"/at?rec/a", at, 1, false},
		{"/above?rec/a", above, 1, true},
		{"/100?recsmall/a", at[:100], 1, false},
		{"/101?recsmall/a", at[:101], 1, true},
		{"/100?recnever/a", at[:100], 1, true},
		{"/100?recuop/a", at[:100], 1, true},
		{"/at?rec/a|rec/b", at, 2, false},
	} {
		resp, body := e.get("photos.localhost", c.path)
		if resp.StatusCode != 200 || !bytes.Equal(body, c.want) {
			t.Fatalf("%s: status %d, %d bytes (want %d)", c.path, resp.StatusCode, len(body), len(c.want))
		}
		seen := ri.take()
		if len(seen) != c.steps {
			t.Fatalf("%s: instance saw %d requests, want %d", c.path, len(seen), c.steps)
		}
		for _, s := range seen {
			if s.hadURL != c.url {
				t.Errorf("%s: url given = %v, want %v (%+v)", c.path, s.hadURL, c.url, s)
			}
			if !c.url && s.body != len(c.want) {
				t.Errorf("%s: body mode sent %d bytes, want %d", c.path, s.body, len(c.want))
			}
			if strings.HasSuffix(c.path, "recuop/a") && s.path != "/uop" {
				t.Errorf("%s: path %s, want /uop", c.path, s.path)
			}
		}
	}
	e.settled(t, pool.Key{Ufop: "rec", Version: "v1", Region: "z0"})
}

// TestBodyModeAnswerWithoutReading: a program that answers before reading
// its body (and never reads it) does not hang a step whose input is exactly
// the default limit: the router writes the whole request, then reads the
// answer.
func TestBodyModeAnswerWithoutReading(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var conns sync.WaitGroup
	t.Cleanup(func() { close(done); ln.Close(); conns.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for { // the request line and headers only
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nContent-Type: text/plain\r\n\r\nanswered")
				<-done // holds the connection, never reading the body
			})
		}
	}()
	e := newEnv(t, nil)
	e.ufopRelease(dora.Ufop{Name: "rude", Owner: alice.ID}, dora.Release{Protocol: dora.ProtocolDora,
		Timeouts: dora.StepTimeouts{FirstByte: 20 * time.Second, Idle: 20 * time.Second}})
	e.pool.Update([]pool.Instance{poolInst("x0", "rude", "v1", ln.Addr().String())})
	e.objs.add("photos", "at", "application/octet-stream", bytes.Repeat([]byte{7}, dora.DefaultBodyLimit))
	resp, body := e.get("photos.localhost", "/at?rude/a")
	if resp.StatusCode != 200 || string(body) != "answered" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
}

// TestStepReadingNothing: a step that reads neither its body nor its url=
// still completes, for a small input (body) and a large one (url=), and
// leaves no input URL behind.
func TestStepReadingNothing(t *testing.T) {
	e := newEnv(t, nil)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ignored")
	}))
	t.Cleanup(s.Close)
	e.ufop(dora.Ufop{Name: "deaf", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("d0", "deaf", "v1", strings.TrimPrefix(s.URL, "http://"))})
	e.objs.add("photos", "small", "text/plain", []byte("abc"))
	e.objs.add("photos", "large", "text/plain", bytes.Repeat([]byte("z"), 1<<20))
	for _, k := range []string{"small", "large"} {
		resp, body := e.get("photos.localhost", "/"+k+"?deaf/a|deaf/b")
		if resp.StatusCode != 200 || string(body) != "ignored" {
			t.Fatalf("%s: status %d body %q", k, resp.StatusCode, body)
		}
	}
	e.settled(t, pool.Key{Ufop: "deaf", Version: "v1", Region: "z0"})
}
