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
