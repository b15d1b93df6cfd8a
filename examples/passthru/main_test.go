package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestListenAddr(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, ":9100"},
		{map[string]string{"PORT_HTTP": "81"}, ":81"},
		{map[string]string{"PORT": "80", "PORT_HTTP": "81", "HOST": "127.0.0.1"}, "127.0.0.1:80"},
	}
	for _, tt := range tests {
		if got := listenAddr(func(k string) string { return tt.env[k] }); got != tt.want {
			t.Errorf("listenAddr(%v) = %q, want %q", tt.env, got, tt.want)
		}
	}
}

func TestHandler(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "image/png")
		w.Write(payload)
	}))
	defer src.Close()
	srv := httptest.NewServer(newHandler(src.Client()))
	defer srv.Close()

	tests := []struct {
		name       string
		path       string
		body       []byte
		ctype      string
		wantStatus int
		wantBody   []byte
		wantType   string
	}{
		{"body input", "/handler?cmd=passthru", []byte("hello"), "text/plain", 200, []byte("hello"), "text/plain"},
		{"empty body", "/handler?cmd=passthru", nil, "", 200, []byte{}, "application/octet-stream"},
		{"url input", "/handler?cmd=passthru&url=" + url.QueryEscape(src.URL+"/a"), []byte("ignored"), "", 200, payload, "image/png"},
		{"url 404", "/handler?cmd=passthru&url=" + url.QueryEscape(src.URL+"/missing"), nil, "", 502, nil, ""},
		{"bad url", "/handler?cmd=passthru&url=%3A", nil, "", 400, nil, ""},
		{"uop", "/uop", []byte(`{"cmd":"passthru","src":{"url":"` + src.URL + `/a","mimetype":"image/x"}}`), "application/json", 200, payload, "image/x"},
		{"uop no url", "/uop", []byte(`{"cmd":"passthru"}`), "application/json", 400, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := srv.Client().Post(srv.URL+tt.path, tt.ctype, bytes.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.wantStatus, b)
			}
			if tt.wantStatus != 200 {
				return
			}
			if !bytes.Equal(b, tt.wantBody) {
				t.Fatalf("body: got %d bytes, want %d", len(b), len(tt.wantBody))
			}
			if got := resp.Header.Get("Content-Type"); got != tt.wantType {
				t.Fatalf("content type %q, want %q", got, tt.wantType)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	rec := httptest.NewRecorder()
	newHandler(http.DefaultClient).ServeHTTP(rec, httptest.NewRequest("GET", "/health", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "ok") {
		t.Fatalf("health: %d %q", rec.Code, rec.Body.String())
	}
}

// TestInputConnectionsReused: concurrent url= fetches keep their
// connections to the input server alive and reuse them, round after round
// (Go's default client keeps 2 idle per host and would dial again). The
// input server answers a round's fetches only once all of them have
// arrived, so each round holds exactly `workers` connections at once; and a
// round starts once each of the previous one's connections is back in the
// idle pool (httptrace PutIdleConn) or closed.
//
// The transport does not promise to pool every connection: it recycles one
// only once its write goroutine has reported the request written, and
// waits 50 ms for that (net/http maxWriteWaitBeforeConnReuse); on a loaded
// machine that can miss and the connection is closed instead. So the test
// counts on behaviour, not on that race: the idle pool refuses none
// (PutIdleConn reports no error; the default client's would, 6 a round),
// every dial after the first round replaces a closed connection, and
// closing stays the exception (a handler that did not read its input to
// the end would lose all of them).
func TestInputConnectionsReused(t *testing.T) {
	const workers, rounds = 8, 10
	type barrier struct {
		n       atomic.Int64
		release chan struct{}
	}
	var cur atomic.Pointer[barrier]
	var dials, closed atomic.Int64
	src := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := cur.Load()
		if b.n.Add(1) == workers {
			close(b.release)
		}
		select {
		case <-b.release:
		case <-time.After(30 * time.Second):
			t.Error("a round's fetches never all arrived")
		}
		io.WriteString(w, "input")
	}))
	src.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			dials.Add(1)
		case http.StateClosed:
			closed.Add(1)
		}
	}
	src.Start()
	defer src.Close()
	client := inputClient()
	defer client.CloseIdleConnections()
	h := newHandler(client)
	var pooled, refused atomic.Int64
	trace := &httptrace.ClientTrace{PutIdleConn: func(err error) {
		if err == nil {
			pooled.Add(1)
		} else {
			refused.Add(1)
		}
	}}
	for round := range rounds {
		cur.Store(&barrier{release: make(chan struct{})})
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest("POST", "/handler?cmd=passthru&url="+url.QueryEscape(src.URL), nil)
				req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
				h.ServeHTTP(rec, req)
				if rec.Code != 200 || rec.Body.String() != "input" || rec.Header().Get("Content-Length") != "5" {
					t.Errorf("status %d body %q length %q", rec.Code, rec.Body.String(), rec.Header().Get("Content-Length"))
				}
			})
		}
		wg.Wait()
		want := int64((round + 1) * workers)
		for deadline := time.Now().Add(30 * time.Second); pooled.Load()+refused.Load()+closed.Load() < want; {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: of %d connections, %d returned to the idle pool, %d refused, %d closed", round, want, pooled.Load(), refused.Load(), closed.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
	n, c := dials.Load(), closed.Load()
	if r := refused.Load(); r != 0 {
		t.Fatalf("the idle pool refused %d connections (%d dials for %d concurrent fetchers over %d rounds): not reused", r, n, workers, rounds)
	}
	if n != workers+c {
		t.Fatalf("%d connections for %d concurrent fetchers over %d rounds with %d closed, want %d: not reused", n, workers, rounds, c, workers+c)
	}
	if c > rounds {
		t.Fatalf("%d of %d connections closed instead of reused", c, workers*rounds)
	}
	if c > 0 {
		t.Logf("%d of %d connections closed by the transport instead of pooled", c, workers*rounds)
	}
}
