package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

const input = "alpha one\nbeta two\nalpha three\r\ngamma\nlast alpha"

func TestListenAddr(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, ":9100"},
		{map[string]string{"PORT_HTTP": "81"}, ":81"},
		{map[string]string{"PORT": "80", "PORT_HTTP": "81"}, ":80"},
		{map[string]string{"PORT": "80", "HOST": "127.0.0.1"}, "127.0.0.1:80"},
		{map[string]string{"HOST": "::1"}, "[::1]:9100"},
	}
	for _, tt := range tests {
		if got := listenAddr(func(k string) string { return tt.env[k] }); got != tt.want {
			t.Errorf("listenAddr(%v) = %q, want %q", tt.env, got, tt.want)
		}
	}
}

func TestHandler(t *testing.T) {
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, input)
	}))
	defer src.Close()
	srv := httptest.NewServer(newHandler(src.Client()))
	defer srv.Close()

	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		ctype      string
		wantStatus int
		wantBody   string
	}{
		{"body input", "POST", "/handler?cmd=grepd/alpha", input, "", 200, "alpha one\nalpha three\nlast alpha\n"},
		{"url input", "POST", "/handler?cmd=grepd/alpha&url=" + url.QueryEscape(src.URL+"/x"), "ignored alpha", "", 200, "alpha one\nalpha three\nlast alpha\n"},
		{"percent-encoded arg", "POST", "/handler?cmd=" + url.QueryEscape("grepd/a%20t"), "gamma\nbeta two\nalphathree", "", 200, "beta two\n"},
		{"arg with slash", "POST", "/handler?cmd=grepd/a/b", "x a/b y\nab", "", 200, "x a/b y\n"},
		{"no match", "POST", "/handler?cmd=grepd/zzz", input, "", 200, ""},
		{"missing arg", "POST", "/handler?cmd=grepd", input, "", 400, ""},
		{"empty arg", "POST", "/handler?cmd=grepd/", input, "", 400, ""},
		{"bad url", "POST", "/handler?cmd=grepd/a&url=ftp://x", "", "", 400, ""},
		{"input 404", "POST", "/handler?cmd=grepd/a&url=" + url.QueryEscape(src.URL+"/missing"), "", "", 502, ""},
		{"uop", "POST", "/uop", `{"cmd":"grepd/beta","src":{"url":"` + src.URL + `/x","mimetype":"text/plain"}}`, "application/json", 200, "beta two\n"},
		{"uop no url", "POST", "/uop", `{"cmd":"grepd/beta","src":{}}`, "application/json", 400, ""},
		{"uop bad json", "POST", "/uop", `{`, "application/json", 400, ""},
		{"health", "GET", "/health", "", "", 200, "ok\n"},
		{"GET handler", "GET", "/handler?cmd=grepd/a", "", "", 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.wantStatus, b)
			}
			if tt.wantStatus == 200 && string(b) != tt.wantBody {
				t.Fatalf("body %q, want %q", b, tt.wantBody)
			}
		})
	}
}

func TestLineTooLong(t *testing.T) {
	rec := httptest.NewRecorder()
	body := strings.NewReader(strings.Repeat("x", maxLine+10))
	req := httptest.NewRequest("POST", "/handler?cmd=grepd/x", body)
	newHandler(http.DefaultClient).ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", rec.Code)
	}
}

// TestStreams checks that matching lines reach the client before the input
// ends: the handler must not buffer its whole output.
func TestStreams(t *testing.T) {
	srv := httptest.NewServer(newHandler(http.DefaultClient))
	defer srv.Close()
	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { io.WriteString(pw, "first hit\nmiss\n") }()
	resp, err := http.Post(srv.URL+"/handler?cmd=grepd/hit", "text/plain", pr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, len("first hit\n"))
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first hit\n" {
		t.Fatalf("first line %q, %v", buf, err)
	}
	go func() { io.WriteString(pw, "second hit\n"); pw.Close() }()
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "second hit\n" {
		t.Fatalf("rest %q", rest)
	}
}
