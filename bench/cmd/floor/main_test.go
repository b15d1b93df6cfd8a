package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// upper is an instance that answers POST /handler?cmd=upper with its body in
// upper case and a dot added, so an answer shows how many times it went
// through the instance.
func upper(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/handler" || r.URL.Query().Get("cmd") != "upper" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.String(), http.StatusBadRequest)
			return
		}
		b, _ := io.ReadAll(r.Body)
		b = append(bytes.ToUpper(b), '.')
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestRelaysThroughTheInstance(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		steps int
	}{{"raw", 1}, {"fasthttp", 1}, {"raw", 3}} {
		mode := tc.mode
		t.Run(mode+"-"+strconv.Itoa(tc.steps), func(t *testing.T) {
			instance := upper(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = ln.Close() })
			input := []byte(strings.Repeat("floor ", 700))
			path := "/handler?cmd=upper"
			if mode == "raw" {
				go func() { _ = serveRaw(ln, instance, rawRequest(instance, path, input), tc.steps) }()
			} else {
				go func() { _ = serveFasthttp(ln, instance, path, input) }()
			}
			client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
			for i := 0; i < 3; i++ { // one keep-alive connection, three requests
				resp, err := client.Get("http://" + ln.Addr().String() + "/small")
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
				want := append(bytes.ToUpper(input), strings.Repeat(".", tc.steps)...)
				if resp.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
					t.Fatalf("request %d: %d, %d bytes …%q; want 200 and the input in upper case with %d dots", i, resp.StatusCode, len(got), got[max(0, len(got)-8):], tc.steps)
				}
			}
		})
	}
}

func TestReadAnswerNeedsContentLength(t *testing.T) {
	buf := make([]byte, 1024)
	_, err := readAnswer(strings.NewReader("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), buf)
	if err != errNoLength {
		t.Fatalf("chunked answer: %v, want errNoLength", err)
	}
	_, err = readAnswer(strings.NewReader("HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n"), buf)
	if err == nil {
		t.Fatal("an answer larger than the buffer was accepted")
	}
	got, err := readAnswer(strings.NewReader("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA"), buf)
	if err != nil || !bytes.HasSuffix(got, []byte("\r\n\r\nabc")) {
		t.Fatalf("framed answer: %q, %v", got, err)
	}
}
