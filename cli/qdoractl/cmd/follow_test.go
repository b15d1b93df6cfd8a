package cmd

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/agenttest"
)

// TestLogtailFollowEndsCleanlyOnInterrupt: -f asks the server to follow,
// prints lines as they arrive, and Ctrl-C (the context ending) is a clean
// exit 0 with no error message.
func TestLogtailFollowEndsCleanlyOnInterrupt(t *testing.T) {
	var gotQuery string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotQuery = r.URL.RawQuery
		w.Header().Set("X-Reqid", "r1")
		w.WriteHeader(200)
		io.WriteString(w, "2026-01-02T03:04:05Z first line\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // a follow lasts until the client hangs up
	}))
	defer srv.Close()
	t.Setenv("HOME", t.TempDir())
	t.Setenv("QDORACTL_CONFIG", "")
	t.Setenv("DORA_AK", testAK)
	t.Setenv("DORA_SK", testSK)
	t.Setenv("DORA_API", srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb agenttest.SyncBuffer
	code := make(chan int, 1)
	go func() {
		code <- Run(ctx, []string{"logtail", "grepd", "-index", "1", "-f"}, strings.NewReader(""), &out, &errb)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "first line") {
		if time.Now().After(deadline) {
			t.Fatalf("the followed line never printed; stdout %q stderr %q", out.String(), errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case c := <-code:
		t.Fatalf("logtail -f ended (exit %d) while the server still followed", c)
	default:
	}
	cancel() // Ctrl-C
	if c := <-code; c != ExitOK || errb.String() != "" {
		t.Fatalf("after Ctrl-C: exit %d, stderr %q", c, errb.String())
	}
	if !strings.Contains(gotQuery, "follow=1") || !strings.Contains(gotQuery, "type=stdout") {
		t.Fatalf("query %q lacks follow=1", gotQuery)
	}
}

// TestBuildStreamsLog: build prints the build's log as it comes (asked
// with follow=1), then the status; a failed build exits 1; with --json the
// log goes to stderr and stdout holds only the build as JSON.
func TestBuildStreamsLog(t *testing.T) {
	f := buildAPI(t, dora.Build{Ufop: "grepd", Number: 3, Status: dora.BuildFailed, Error: "build_script line 1 failed"})
	r := runCLI(t, f, "", "build", "grepd", "-dir", pkgDir(t), "--poll-interval", "1ms")
	if r.code != ExitError || !strings.Contains(r.stdout, "$ go build\nok\n") || !strings.Contains(r.stdout, "Status: FAILED") {
		t.Fatalf("failed build: %v", r)
	}
	if q := f.last(t, "GET /v1/ufops/grepd/builds/3/log").Query; q != "follow=1" {
		t.Fatalf("build log query %q, want follow=1", q)
	}
	if strings.Index(r.stdout, "$ go build") > strings.Index(r.stdout, "Status: FAILED") {
		t.Fatalf("the log must come before the final status:\n%s", r.stdout)
	}

	f = buildAPI(t, dora.Build{Ufop: "grepd", Number: 3, Status: dora.BuildSuccess, Image: "grepd.v3"})
	r = mustOK(t, runCLI(t, f, "", "--json", "build", "grepd", "-dir", pkgDir(t), "--poll-interval", "1ms"))
	var b dora.Build
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil || b.Status != dora.BuildSuccess {
		t.Fatalf("--json stdout is not the build: %v %q", err, r.stdout)
	}
	if !strings.Contains(r.stderr, "$ go build\nok\n") {
		t.Fatalf("--json: the log belongs on stderr: %q", r.stderr)
	}
}

func TestBuildlogFollowAsksTheServerToFollow(t *testing.T) {
	f := buildAPI(t, dora.Build{})
	if r := mustOK(t, runCLI(t, f, "", "buildlog", "grepd", "-v", "1", "-f")); r.stdout != "$ false\nexit 1\n" {
		t.Fatalf("buildlog -f: %q", r.stdout)
	}
	if q := f.last(t, "GET /v1/ufops/grepd/builds/1/log").Query; q != "follow=1" {
		t.Fatalf("query %q", q)
	}
}
