package admin

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestConsoleSignInCrossSite: another site's page cannot sign the browser
// in (login CSRF: a form posting the attacker's keys would leave the
// victim working, and uploading, in the attacker's account) nor out: a
// cross-site POST /console/login or /console/logout is refused with 403
// and a JSON error, and sets no cookie. The console's own fetch
// (same-origin), a request through the public URL and clients that send
// neither Sec-Fetch-Site nor Origin (curl, scripts) still sign in.
func TestConsoleSignInCrossSite(t *testing.T) {
	e := newEnv(t) // PublicURL http://admin.test:8090
	h := e.srv.Handler()
	post := func(path string, hdr map[string]string, ck *http.Cookie) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8090"+path,
			strings.NewReader(url.Values{"ak": {testRootAK}, "sk": {testRootSK}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		if ck != nil {
			r.AddCookie(ck)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	crossSite := []map[string]string{
		{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
		{"Sec-Fetch-Site": "same-site", "Origin": "http://other.127.0.0.1:8090"},
		{"Origin": "https://evil.example"}, // an older browser: Origin only
	}
	for _, hdr := range crossSite {
		w := post("/console/login", hdr, nil)
		var body struct{ Error string }
		if json.Unmarshal(w.Body.Bytes(), &body); w.Code != http.StatusForbidden || body.Error == "" {
			t.Errorf("cross-site sign-in %v: %d %q", hdr, w.Code, w.Body)
		}
		if c := w.Result().Cookies(); len(c) != 0 {
			t.Errorf("cross-site sign-in %v set cookies %v", hdr, c)
		}
	}
	var ck *http.Cookie
	for _, hdr := range []map[string]string{
		{"Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:8090"},
		{"Origin": "http://127.0.0.1:8090"},
		{"Origin": "http://admin.test:8090"}, // the public URL, whatever Host the proxy sends
		nil,
	} {
		w := post("/console/login", hdr, nil)
		if w.Code != http.StatusOK {
			t.Fatalf("sign-in %v: %d %s", hdr, w.Code, w.Body)
		}
		ck = sessionCookie(w.Result())
	}
	if w := post("/console/logout", crossSite[0], ck); w.Code != http.StatusForbidden {
		t.Fatalf("cross-site sign-out: %d %s", w.Code, w.Body)
	}
	if s := cookieCall(t, "GET", e.ts.URL+"/console/session", ck, "", ""); s != http.StatusOK {
		t.Fatalf("the session after a cross-site sign-out: %d", s)
	}
}

// TestConsoleLoginBodyTooLarge: a sign-in form over its 64 KiB is 413, as
// every other body over its cap (docs/api.md), not 400.
func TestConsoleLoginBodyTooLarge(t *testing.T) {
	e := newEnv(t)
	form := url.Values{"ak": {testRootAK}, "sk": {testRootSK}, "pad": {strings.Repeat("x", 64<<10)}}.Encode()
	r := httptest.NewRequest(http.MethodPost, "/console/login", strings.NewReader(form))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(w, r)
	var body struct{ Error string }
	if json.Unmarshal(w.Body.Bytes(), &body); w.Code != http.StatusRequestEntityTooLarge || body.Error == "" {
		t.Fatalf("a 64 KiB+ sign-in form: %d %q", w.Code, w.Body)
	}
}

// TestConsoleLoginFormTypes: the sign-in fields are read from a URL-encoded
// or a multipart form (curl -F, a FormData posted as is); any other body
// is 415 naming the types, not "access key and secret key are both
// required" when both were sent.
func TestConsoleLoginFormTypes(t *testing.T) {
	e := newEnv(t)
	h := e.srv.Handler()
	post := func(ct string, body io.Reader) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/console/login", body)
		if ct != "" {
			r.Header.Set("Content-Type", ct)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	mw.WriteField("ak", testRootAK)
	mw.WriteField("sk", testRootSK)
	mw.Close()
	if w := post(mw.FormDataContentType(), &mp); w.Code != http.StatusOK || sessionCookie(w.Result()) == nil {
		t.Fatalf("multipart sign-in: %d %s", w.Code, w.Body)
	}
	big := strings.NewReader("--b\r\nContent-Disposition: form-data; name=\"pad\"\r\n\r\n" + strings.Repeat("x", 64<<10) + "\r\n--b--\r\n")
	if w := post("multipart/form-data; boundary=b", big); w.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("a 64 KiB+ multipart sign-in: %d %s", w.Code, w.Body)
	}
	for _, ct := range []string{"application/json", ""} {
		w := post(ct, strings.NewReader(`{"ak":"`+testRootAK+`","sk":"`+testRootSK+`"}`))
		var body struct{ Error string }
		json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != http.StatusUnsupportedMediaType || !strings.Contains(body.Error, "application/x-www-form-urlencoded or multipart/form-data") ||
			strings.Contains(body.Error, "both required") {
			t.Fatalf("sign-in as %q: %d %q", ct, w.Code, body.Error)
		}
	}
}
