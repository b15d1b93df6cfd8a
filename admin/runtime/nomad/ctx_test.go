package nomad

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
)

// TestApplyHonoursContext: a Nomad agent that accepts the job but never
// answers must not hold Apply beyond its context.
func TestApplyHonoursContext(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet {
			http.Error(w, "job not found", http.StatusNotFound)
			return
		}
		select { // a hung agent
		case <-release:
		case <-req.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	r, err := New(Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	spec := runtime.Spec{
		Deployment: dora.Deployment{ID: "d1", Ufop: "grepd", Version: "v1", Region: dora.DefaultRegion, Desired: 1},
		Flavor:     dora.Flavor{Name: "small", CPU: 500, MemoryMB: 256},
		Package:    &runtime.Package{ArtifactURL: "http://127.0.0.1:1/a.tar.gz", Run: "./grepd"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Apply(ctx, spec) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Apply against a hung agent: %v, want the context's deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Apply against a hung agent did not return when its context ended")
	}
}
