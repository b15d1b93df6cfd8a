package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestConsoleSession: sign-in sets a signed, expiring, HttpOnly,
// SameSite=Strict cookie; the cookie authenticates API reads; writes need
// the CSRF token; tampered, expired or logged-out cookies are refused.
func TestConsoleSession(t *testing.T) {
	now := time.Now()
	e := newEnv(t, func(c *Config) {
		c.Now = func() time.Time { return now }
		c.SessionTTL = time.Hour
	})
	post := func(path string, form url.Values) *http.Response {
		r, err := http.PostForm(e.ts.URL+path, form)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := post("/console/login", url.Values{"ak": {testRootAK}, "sk": {"wrong"}}); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong SK: %d", r.StatusCode)
	}
	r := post("/console/login", url.Values{"ak": {testRootAK}, "sk": {testRootSK}})
	if r.StatusCode != http.StatusOK {
		t.Fatalf("sign-in: %d", r.StatusCode)
	}
	var info struct {
		CSRF    string
		Account struct{ SK string }
	}
	json.NewDecoder(r.Body).Decode(&info)
	r.Body.Close()
	ck := sessionCookie(r)
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.MaxAge != 3600 || info.CSRF == "" || info.Account.SK != "" {
		t.Fatalf("cookie %+v, info %+v", ck, info)
	}
	call := func(method, path string, c *http.Cookie, csrf, body string) int {
		return cookieCall(t, method, e.ts.URL+path, c, csrf, body)
	}
	if s := call("GET", "/v1/buckets", ck, "", ""); s != http.StatusOK {
		t.Fatalf("read with the cookie: %d", s)
	}
	if s := call("POST", "/v1/buckets", ck, "", `{"name":"nocsrf"}`); s != http.StatusForbidden {
		t.Fatalf("write without CSRF token: %d", s)
	}
	if s := call("POST", "/v1/buckets", ck, "not-the-token", `{"name":"badcsrf"}`); s != http.StatusForbidden {
		t.Fatalf("write with a wrong CSRF token: %d", s)
	}
	if s := call("POST", "/v1/buckets", ck, info.CSRF, `{"name":"withcsrf"}`); s != http.StatusCreated && s != http.StatusOK {
		t.Fatalf("write with the CSRF token: %d", s)
	}
	if s := call("GET", "/v1/accounts", ck, "", ""); s != http.StatusOK {
		t.Fatalf("root route with root's session: %d", s)
	}
	tampered := *ck
	tampered.Value = strings.Replace(ck.Value, ck.Value[:4], "AAAA", 1)
	if s := call("GET", "/v1/buckets", &tampered, "", ""); s != http.StatusUnauthorized {
		t.Fatalf("tampered cookie: %d", s)
	}
	now = now.Add(2 * time.Hour)
	if s := call("GET", "/v1/buckets", ck, "", ""); s != http.StatusUnauthorized {
		t.Fatalf("expired cookie: %d", s)
	}
	// The console's files are served, with a restrictive CSP.
	resp, err := http.Get(e.ts.URL + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "app.js") || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("/console/: %d %q", resp.StatusCode, resp.Header)
	}
}

// TestConsoleSessionAcrossAdmins: two admins on one store (no ConsoleKey
// configured) accept each other's sessions, and a restarted admin keeps
// them; an admin with a ConsoleKey of its own does not.
func TestConsoleSessionAcrossAdmins(t *testing.T) {
	e := newEnv(t)
	first := e.ts.URL
	ck := consoleLogin(t, first, testRootAK, testRootSK)
	session := func(base string) int {
		return cookieCall(t, http.MethodGet, base+"/console/session", ck, "", "")
	}
	e.start() // a second admin on the same store
	if e.ts.URL == first {
		t.Fatal("the env did not start a second server")
	}
	if s := session(e.ts.URL); s != http.StatusOK {
		t.Fatalf("the second admin refuses the first one's session: %d", s)
	}
	if s := session(first); s != http.StatusOK {
		t.Fatalf("the first admin refuses its own session: %d", s)
	}
	e.start(func(c *Config) { c.ConsoleKey = []byte("another-key-of-this-admin-only!!") })
	if s := session(e.ts.URL); s != http.StatusUnauthorized {
		t.Fatalf("an admin with its own ConsoleKey accepts the session: %d", s)
	}
}

// sessionCookie is the console's session cookie set by a sign-in reply r,
// nil when it sets none.
func sessionCookie(r *http.Response) *http.Cookie {
	for _, c := range r.Cookies() {
		if c.Name == SessionCookie {
			return c
		}
	}
	return nil
}

// cookieCall sends method rawURL as the console does: with cookie c (when
// not nil), the CSRF header (when not empty) and a JSON body (when not
// empty); it returns the status code.
func cookieCall(t *testing.T, method, rawURL string, c *http.Cookie, csrf, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if c != nil {
		req.AddCookie(c)
	}
	if csrf != "" {
		req.Header.Set(CSRFHeader, csrf)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
