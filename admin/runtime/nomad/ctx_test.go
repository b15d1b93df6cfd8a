package nomad

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/hashicorp/nomad/api"
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

// TestFollowLogsLeavesNoGoroutine: closing a followed log (`logtail -f`
// ended, the console's pane closed) must not leave a goroutine behind:
// Nomad's reader ends with an error, not by closing its frames, when the
// follow is cancelled while it waits for more output.
func TestFollowLogsLeavesNoGoroutine(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !strings.HasPrefix(req.URL.Path, "/v1/client/fs/logs/") {
			http.NotFound(w, req)
			return
		}
		json.NewEncoder(w).Encode(api.StreamFrame{Data: []byte("hello\n"), File: "stdout", Offset: 6})
		w.(http.Flusher).Flush()
		<-req.Context().Done() // no more output yet
	}))
	defer srv.Close()
	r, err := New(Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ours := func() int {
		buf := make([]byte, 1<<20)
		buf = buf[:goruntime.Stack(buf, true)]
		return strings.Count(string(buf), "admin/runtime/nomad.followLogs")
	}
	for range 3 {
		rc := followLogs(context.Background(), r.client, &api.Allocation{ID: "a1"}, "t", "stdout", nil, &api.QueryOptions{})
		line, err := bufio.NewReader(rc).ReadString('\n')
		if err != nil || !strings.HasSuffix(line, " hello\n") {
			t.Fatalf("followed %q, %v", line, err)
		}
		rc.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for ours() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of followLogs left after the follows were closed", ours())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFollowLogsKeepsTheLastLine: when Nomad ends the follow (the task
// is gone), output after the last newline (a program's last words
// without one) is a line too.
func TestFollowLogsKeepsTheLastLine(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !strings.HasPrefix(req.URL.Path, "/v1/client/fs/logs/") {
			http.NotFound(w, req)
			return
		}
		json.NewEncoder(w).Encode(api.StreamFrame{Data: []byte("one\ntwo"), File: "stdout", Offset: 7})
	}))
	defer srv.Close()
	r, err := New(Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	rc := followLogs(context.Background(), r.client, &api.Allocation{ID: "a1"}, "t", "stdout", nil, &api.QueryOptions{})
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], " one") || !strings.HasSuffix(lines[1], " two") {
		t.Fatalf("followed %q", b)
	}
}
