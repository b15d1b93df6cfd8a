package admin

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"testing"
)

// consoleLogin signs in at base with ak/sk and returns the session cookie.
func consoleLogin(t *testing.T, base, ak, sk string) *http.Cookie {
	t.Helper()
	r, err := http.PostForm(base+"/console/login", url.Values{"ak": {ak}, "sk": {sk}})
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, r.Body)
	r.Body.Close()
	ck := sessionCookie(r)
	if r.StatusCode != http.StatusOK || ck == nil {
		t.Fatalf("sign-in: %d, cookie %v", r.StatusCode, ck)
	}
	return ck
}

// TestLogoutEndsSessions: signing out ends the account's sessions on the
// server, on every admin sharing the store, not only in the browser: a
// copied cookie stops working. A sign-in afterwards works again.
func TestLogoutEndsSessions(t *testing.T) {
	e := newEnv(t)
	first := e.ts.URL
	e.start() // a second admin (replica) on the same store
	second := e.ts.URL
	ck := consoleLogin(t, first, testRootAK, testRootSK)
	other := consoleLogin(t, second, testRootAK, testRootSK) // another browser
	for _, base := range []string{first, second} {
		if s := cookieCall(t, "GET", base+"/v1/buckets", ck, "", ""); s != http.StatusOK {
			t.Fatalf("before sign-out, %s: %d", base, s)
		}
	}
	req, _ := http.NewRequest("POST", first+"/console/logout", nil)
	req.AddCookie(ck)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if cleared := sessionCookie(res); res.StatusCode != http.StatusOK || cleared == nil || cleared.MaxAge >= 0 {
		t.Fatalf("sign-out: %d, cookie %v", res.StatusCode, cleared)
	}
	for _, base := range []string{first, second} {
		for _, c := range []*http.Cookie{ck, other} {
			if s := cookieCall(t, "GET", base+"/v1/buckets", c, "", ""); s != http.StatusUnauthorized {
				t.Errorf("a signed-out cookie on %s: %d, want 401", base, s)
			}
			if s := cookieCall(t, "GET", base+"/console/session", c, "", ""); s != http.StatusUnauthorized {
				t.Errorf("a signed-out cookie's /console/session on %s: %d, want 401", base, s)
			}
		}
	}
	again := consoleLogin(t, second, testRootAK, testRootSK)
	if s := cookieCall(t, "GET", first+"/v1/buckets", again, "", ""); s != http.StatusOK {
		t.Fatalf("a new sign-in after sign-out: %d", s)
	}
	// Another account's sessions are not touched.
	alice := e.user("alice", 0)
	ak := consoleLogin(t, first, alice.AccessKey, alice.SecretKey)
	req, _ = http.NewRequest("POST", first+"/console/logout", nil)
	req.AddCookie(again)
	if res, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if s := cookieCall(t, "GET", first+"/v1/buckets", ak, "", ""); s != http.StatusOK {
		t.Errorf("root's sign-out ended alice's session: %d", s)
	}
}

// TestSecretKeyChangeEndsSessions: a session lasts only as long as the
// account's secret key: once it changes, the sessions signed in with the
// old one are refused everywhere.
func TestSecretKeyChangeEndsSessions(t *testing.T) {
	e := newEnv(t)
	ck := consoleLogin(t, e.ts.URL, testRootAK, testRootSK)
	if s := cookieCall(t, "GET", e.ts.URL+"/v1/buckets", ck, "", ""); s != http.StatusOK {
		t.Fatalf("before the change: %d", s)
	}
	newSK := "a-new-root-secret-key-0123456789"
	if _, err := EnsureRoot(context.Background(), e.st, testRootAK, newSK); err != nil {
		t.Fatal(err)
	}
	if s := cookieCall(t, "GET", e.ts.URL+"/v1/buckets", ck, "", ""); s != http.StatusUnauthorized {
		t.Errorf("a session of the old secret key: %d, want 401", s)
	}
	if s := cookieCall(t, "GET", e.ts.URL+"/console/session", ck, "", ""); s != http.StatusUnauthorized {
		t.Errorf("/console/session with the old secret key's session: %d, want 401", s)
	}
	ck = consoleLogin(t, e.ts.URL, testRootAK, newSK)
	if s := cookieCall(t, "GET", e.ts.URL+"/v1/buckets", ck, "", ""); s != http.StatusOK {
		t.Errorf("a session of the new secret key: %d", s)
	}
}
