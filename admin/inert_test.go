package admin

import (
	"net/http"
	"strings"
	"testing"
)

// TestStoredBytesAreInert: what the API sends back of stored bytes (an
// object, whatever type it was stored with; logs) cannot run as a page on
// the console's origin: nosniff and a sandboxing CSP on every API reply,
// and objects are downloads (Content-Disposition: attachment), so an HTML
// object opened in a tab cannot read /console/session's CSRF token.
func TestStoredBytesAreInert(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "bkt"}, nil)
	page := `<script>fetch("/console/session").then(r => r.json()).then(s => alert(s.csrf))</script>`
	e.must(http.StatusOK, alice, "PUT", "/v1/objects/bkt/dir/evil.html", typed{"text/html", page}, nil)

	inert := func(what string, r resp) {
		t.Helper()
		if got := r.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options %q, want nosniff", what, got)
		}
		if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "sandbox") || !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("%s: Content-Security-Policy %q, want a sandbox with default-src 'none'", what, csp)
		}
	}
	for _, m := range []string{"GET", "HEAD"} {
		r := e.must(http.StatusOK, alice, m, "/v1/objects/bkt/dir/evil.html", nil, nil)
		inert(m+" object", r)
		if cd := r.Header.Get("Content-Disposition"); cd != `attachment; filename=evil.html` {
			t.Errorf("%s object: Content-Disposition %q, want an attachment named evil.html", m, cd)
		}
		if ct := r.Header.Get("Content-Type"); ct != "text/html" {
			t.Errorf("%s object: Content-Type %q, want the stored text/html", m, ct)
		}
		if m == "GET" && string(r.Body) != page {
			t.Errorf("object body %q", r.Body)
		}
	}
	e.must(http.StatusOK, alice, "PUT", "/v1/objects/bkt/caf%C3%A9%20%22x%22.svg", typed{"image/svg+xml", "<svg/>"}, nil)
	r := e.must(http.StatusOK, alice, "GET", "/v1/objects/bkt/caf%C3%A9%20%22x%22.svg", nil, nil)
	if cd := r.Header.Get("Content-Disposition"); cd != `attachment; filename*=utf-8''caf%C3%A9%20%22x%22.svg` {
		t.Errorf("non-ASCII name: Content-Disposition %q", cd)
	}
	// Logs, JSON and errors carry the same headers.
	e.deployGrepd(alice, 1)
	inert("instance logs", e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/instances/1/logs", nil, nil))
	inert("ufop logs", e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/logs", nil, nil))
	inert("JSON", e.must(http.StatusOK, alice, "GET", "/v1/buckets", nil, nil))
	inert("API error", e.must(http.StatusNotFound, alice, "GET", "/v1/objects/bkt/none", nil, nil))
	inert("unknown route", e.must(http.StatusNotFound, alice, "GET", "/v1/nowhere", nil, nil))
	// The console's own pages keep their policy.
	c := e.req(alice, "GET", "/console/", nil)
	if csp := c.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "sandbox") {
		t.Errorf("/console/: Content-Security-Policy %q", csp)
	}
}
