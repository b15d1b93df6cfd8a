package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/auth"
)

const (
	testAK = "AK_alice"
	testSK = "SK_alice_secret"
)

// call is one request the fake API received.
type call struct {
	Method, Path, Query string
	Body                []byte
	Header              http.Header
}

// route answers one "METHOD /path" of the fake API.
type route func(c call) (status int, reply any)

// fakeAPI is an admin API stand-in: it checks every /v1/ signature with
// auth.Verifier, records calls and answers from its routes.
type fakeAPI struct {
	mu     sync.Mutex
	routes map[string]route
	calls  []call
	extra  http.Handler // serves /v2/ when set
	srv    *httptest.Server
}

func newFakeAPI(t *testing.T, routes map[string]route) *fakeAPI {
	t.Helper()
	f := &fakeAPI{routes: routes}
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/v2") && f.extra != nil {
		f.extra.ServeHTTP(w, r)
		return
	}
	w.Header().Set("X-Reqid", "reqid-42")
	body, _ := io.ReadAll(r.Body)
	var signed []byte
	if ct := r.Header.Get("Content-Type"); ct == "application/json" || ct == auth.ContentTypeForm {
		signed = body
	}
	v := auth.Verifier{Lookup: func(ctx context.Context, ak string) (string, error) {
		if ak == testAK {
			return testSK, nil
		}
		return "", errors.New("unknown access key")
	}, MaxSkew: 15 * time.Minute}
	if _, err := v.VerifyHTTP(r.Context(), r, signed); err != nil {
		writeJSON(w, 401, map[string]string{"error": err.Error()})
		return
	}
	c := call{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Body: body, Header: r.Header.Clone()}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	h := f.routes[r.Method+" "+c.Path]
	f.mu.Unlock()
	if h == nil {
		writeJSON(w, 404, map[string]string{"error": "no route " + r.Method + " " + c.Path})
		return
	}
	status, reply := h(c)
	if s, ok := reply.(string); ok {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(status)
		io.WriteString(w, s)
		return
	}
	writeJSON(w, status, reply)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// last returns the last call to "METHOD /path".
func (f *fakeAPI) last(t *testing.T, key string) call {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.calls) - 1; i >= 0; i-- {
		if f.calls[i].Method+" "+f.calls[i].Path == key {
			return f.calls[i]
		}
	}
	t.Fatalf("no call %s; calls: %v", key, f.calls)
	return call{}
}

// reply returns a route answering v with status.
func reply(status int, v any) route { return func(call) (int, any) { return status, v } }

// result of one qdoractl run.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs qdoractl in-process with HOME set to home, the keys in the
// environment and the fake API as endpoint.
func runCLI(t *testing.T, f *fakeAPI, stdin string, args ...string) result {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("QDORACTL_CONFIG", "")
	t.Setenv("DORA_AK", testAK)
	t.Setenv("DORA_SK", testSK)
	if f != nil {
		t.Setenv("DORA_API", f.srv.URL)
	}
	return runRaw(t, stdin, args...)
}

// runRaw runs qdoractl with the environment as it is.
func runRaw(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// mustOK fails the test unless the run exited 0.
func mustOK(t *testing.T, r result) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("want exit 0, got %v", r)
	}
	return r
}

// jsonEq reports whether two JSON documents are equal structurally.
func jsonEq(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("body %q: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Fatalf("body = %s, want %s", gb, wb)
	}
}
