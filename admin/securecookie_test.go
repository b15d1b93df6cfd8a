package admin

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestSessionCookieSecureBehindTLSProxy: the session cookie is Secure when
// the admin's PublicURL is https (the TLS-terminating proxy of
// docs/production.md in front of a plain-HTTP admin), whatever
// X-Forwarded-Proto a client sends; with an http PublicURL a client's
// X-Forwarded-Proto: https does not change it either.
func TestSessionCookieSecureBehindTLSProxy(t *testing.T) {
	for _, tc := range []struct {
		public, proto string
		secure        bool
	}{
		{"https://admin.example.com", "", true},
		{"https://admin.example.com", "http", true},
		{"http://admin.test:8090", "", false},
		{"http://admin.test:8090", "https", false},
	} {
		e := newEnv(t, func(c *Config) { c.PublicURL = tc.public })
		send := func(path string, form url.Values, ck *http.Cookie) *http.Cookie {
			req, err := http.NewRequest("POST", e.ts.URL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if form != nil {
				req, _ = http.NewRequest("POST", e.ts.URL+path, strings.NewReader(form.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			if tc.proto != "" {
				req.Header.Set("X-Forwarded-Proto", tc.proto)
			}
			if ck != nil {
				req.AddCookie(ck)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			got := sessionCookie(res)
			if res.StatusCode != http.StatusOK || got == nil {
				t.Fatalf("%s %s: %d, cookie %v", tc.public, path, res.StatusCode, got)
			}
			return got
		}
		ck := send("/console/login", url.Values{"ak": {testRootAK}, "sk": {testRootSK}}, nil)
		if ck.Secure != tc.secure {
			t.Errorf("PublicURL %s, X-Forwarded-Proto %q: sign-in cookie Secure=%v, want %v", tc.public, tc.proto, ck.Secure, tc.secure)
		}
		if out := send("/console/logout", nil, ck); out.Secure != tc.secure {
			t.Errorf("PublicURL %s, X-Forwarded-Proto %q: sign-out cookie Secure=%v, want %v", tc.public, tc.proto, out.Secure, tc.secure)
		}
	}
	// An admin that terminates TLS itself sets it whatever its PublicURL.
	e := newEnv(t)
	ts := httptest.NewTLSServer(e.srv.Handler())
	defer ts.Close()
	res, err := ts.Client().PostForm(ts.URL+"/console/login", url.Values{"ak": {testRootAK}, "sk": {testRootSK}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if ck := sessionCookie(res); ck == nil || !ck.Secure {
		t.Errorf("over TLS: cookie %v, want Secure", ck)
	}
}
