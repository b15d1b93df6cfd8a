package local

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// silentListener accepts connections and closes them without a byte, as
// podman's rootlessport does on a published port nothing listens behind.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestProbeWantsAnAnswer: without a health path the probe must get an HTTP
// response (any status) from the program; an accepted connection closed
// without a byte is unhealthy.
func TestProbeWantsAnAnswer(t *testing.T) {
	r := newRuntime(t, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/health" {
			w.Write([]byte("ok"))
			return
		}
		http.NotFound(w, req)
	}))
	defer srv.Close()
	served := srv.Listener.Addr().String()
	silent := silentListener(t)
	refused := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := ln.Addr().String()
		ln.Close()
		return a
	}()
	for _, c := range []struct {
		name, addr, path string
		healthy          bool
	}{
		{"no path, program answers 404", served, "", true},
		{"path answers 200", served, "/health", true},
		{"path answers 404", served, "/nope", false},
		{"no path, accepted and closed without a byte", silent, "", false},
		{"path, accepted and closed without a byte", silent, "/health", false},
		{"nothing listens", refused, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // hang bound
			defer cancel()
			err := r.check(ctx, c.addr, c.path)
			if (err == nil) != c.healthy {
				t.Fatalf("check(%s, %q) = %v, want healthy %v", c.addr, c.path, err, c.healthy)
			}
		})
	}
}

// TestStartupWait: until an instance is first healthy it is probed a few
// milliseconds after its start, then at a quarter of the time elapsed,
// never less often than every startupProbe nor than the release asks.
func TestStartupWait(t *testing.T) {
	for _, tt := range []struct {
		elapsed, interval, want time.Duration
	}{
		{0, 10 * time.Second, firstProbe},
		{4 * time.Millisecond, 10 * time.Second, firstProbe},
		{40 * time.Millisecond, 10 * time.Second, 10 * time.Millisecond},
		{time.Second, 10 * time.Second, startupProbe},
		{time.Minute, 10 * time.Second, startupProbe},
		{time.Second, 50 * time.Millisecond, 50 * time.Millisecond},
		{0, time.Millisecond, time.Millisecond},
	} {
		if got := startupWait(tt.elapsed, tt.interval); got != tt.want {
			t.Errorf("startupWait(%v, %v) = %v, want %v", tt.elapsed, tt.interval, got, tt.want)
		}
	}
	// The number of probes before the waits reach startupProbe stays
	// small: a program that never answers is not flooded.
	n, elapsed := 0, time.Duration(0)
	for w := startupWait(0, time.Hour); w < startupProbe; w = startupWait(elapsed, time.Hour) {
		elapsed += w
		n++
	}
	if n > 30 {
		t.Errorf("%d probes in the first %v before the waits reach %v", n, elapsed, startupProbe)
	}
	t.Logf("%d probes in the first %v before the waits reach %v", n, elapsed, startupProbe)
}
