package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestSleepOf(t *testing.T) {
	tests := []struct {
		cmd     string
		want    time.Duration
		wantErr bool
	}{
		{"slowpoke/0", 0, false},
		{"slowpoke/250", 250 * time.Millisecond, false},
		{"slowpoke/600000", 10 * time.Minute, false},
		{"slowpoke/600001", 0, true},
		{"slowpoke/-1", 0, true},
		{"slowpoke/abc", 0, true},
		{"slowpoke/", 0, true},
		{"slowpoke", 0, true},
		{"slowpoke/99999999999999999999", 0, true},
	}
	for _, tt := range tests {
		got, err := sleepOf(tt.cmd)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("sleepOf(%q) = %v, %v; want %v, err=%v", tt.cmd, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestListenAddr(t *testing.T) {
	env := map[string]string{"PORT_HTTP": "9200"}
	if got := listenAddr(func(k string) string { return env[k] }); got != ":9200" {
		t.Fatalf("listenAddr = %q", got)
	}
}

func TestHandler(t *testing.T) {
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "from url") }))
	defer src.Close()
	srv := httptest.NewServer(newHandler(src.Client(), slog.New(slog.DiscardHandler)))
	defer srv.Close()
	tests := []struct {
		name, path, body string
		wantStatus       int
		wantBody         string
	}{
		{"body", "/handler?cmd=slowpoke/1", "echo me", 200, "echo me"},
		{"url", "/handler?cmd=slowpoke/0&url=" + url.QueryEscape(src.URL), "ignored", 200, "from url"},
		{"bad ms", "/handler?cmd=slowpoke/x", "", 400, ""},
		{"uop", "/uop", `{"cmd":"slowpoke/1","src":{"url":"` + src.URL + `"}}`, 200, "from url"},
		{"uop bad", "/uop", `{"cmd":"slowpoke/1","src":{}}`, 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := srv.Client().Post(srv.URL+tt.path, "text/plain", strings.NewReader(tt.body))
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

// TestCancelledSleep checks a caller going away ends the sleep: the request
// for a 10-minute sleep returns as soon as its context is cancelled.
func TestCancelledSleep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := httptest.NewRecorder()
	req := httptest.NewRequestWithContext(ctx, "POST", "/handler?cmd=slowpoke/600000", strings.NewReader("x"))
	var logged strings.Builder
	newHandler(http.DefaultClient, slog.New(slog.NewTextHandler(&logged, nil))).ServeHTTP(rec, req)
	if rec.Body.Len() != 0 {
		t.Fatalf("cancelled request echoed %q", rec.Body.String())
	}
	if !strings.Contains(logged.String(), "request cancelled") {
		t.Fatalf("the cancellation was not logged: %q", logged.String())
	}
}
