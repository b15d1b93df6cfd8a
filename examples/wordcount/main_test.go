package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCount(t *testing.T) {
	tests := []struct {
		in   string
		want Counts
	}{
		{"", Counts{}},
		{"one", Counts{0, 1, 3}},
		{"one two\n", Counts{1, 2, 8}},
		{"  a\tb\n\nc  d e\n", Counts{3, 5, 14}},
		{"héllo wörld\n", Counts{1, 2, 14}},
		{"\xff\xfe x\n", Counts{1, 2, 5}},
	}
	for _, tt := range tests {
		got, err := count(strings.NewReader(tt.in))
		if err != nil || got != tt.want {
			t.Errorf("count(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestListenAddr(t *testing.T) {
	env := map[string]string{"PORT": "1234", "HOST": "127.0.0.1"}
	if got := listenAddr(func(k string) string { return env[k] }); got != "127.0.0.1:1234" {
		t.Fatalf("listenAddr = %q", got)
	}
}

func TestHandler(t *testing.T) {
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, "hello world\nsecond line here\n")
	}))
	defer src.Close()
	srv := httptest.NewServer(newHandler(src.Client()))
	defer srv.Close()
	tests := []struct {
		name       string
		body       string
		wantStatus int
		want       Counts
	}{
		{"ok", `{"cmd":"wordcount","src":{"url":"` + src.URL + `/a.txt","mimetype":"text/plain","fsize":29,"bucket":"b","key":"a.txt"}}`, 200, Counts{2, 5, 29}},
		{"missing url", `{"cmd":"wordcount","src":{}}`, 400, Counts{}},
		{"bad json", `{"cmd":`, 400, Counts{}},
		{"bad scheme", `{"cmd":"wordcount","src":{"url":"file:///etc/passwd"}}`, 400, Counts{}},
		{"source 404", `{"cmd":"wordcount","src":{"url":"` + src.URL + `/missing"}}`, 502, Counts{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := srv.Client().Post(srv.URL+"/uop", "application/json", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.wantStatus, b)
			}
			if tt.wantStatus != 200 {
				var e struct{ Error string }
				if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error == "" {
					t.Fatalf("error body: %+v, %v", e, err)
				}
				return
			}
			var got Counts
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
