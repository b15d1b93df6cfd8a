package qhttp

import (
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCap(t *testing.T) {
	for _, c := range []struct {
		body    string
		n       int64
		tooMuch bool
	}{
		{"", 0, false},
		{"abc", 3, false},
		{"abc", 10, false},
		{"abcd", 3, true},
		{"a", 0, true},
		{"", -1, true},
		{"abc", math.MaxInt64, false}, // no bound: n+1 must not overflow
	} {
		got, err := io.ReadAll(Cap(strings.NewReader(c.body), c.n))
		if c.tooMuch {
			if !errors.Is(err, ErrTooLarge) {
				t.Errorf("Cap(%q, %d): %q, %v; want ErrTooLarge", c.body, c.n, got, err)
			}
			if int64(len(got))-1 > c.n {
				t.Errorf("Cap(%q, %d) read %d bytes, more than one beyond the bound", c.body, c.n, len(got))
			}
			continue
		}
		if err != nil || string(got) != c.body {
			t.Errorf("Cap(%q, %d) = %q, %v", c.body, c.n, got, err)
		}
	}
}

func TestFront(t *testing.T) {
	mine := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "mine") })
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "next") })
	h := Front(func(r *http.Request) bool { return r.URL.Path == "/pfop" }, mine, next)
	for path, want := range map[string]string{"/pfop": "mine", "/v1/ufops": "next"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Body.String() != want {
			t.Errorf("%s served by %q, want %q", path, rec.Body.String(), want)
		}
	}
}

func TestNewReqid(t *testing.T) {
	a, b := NewReqid(), NewReqid()
	if len(a) != 16 || a == b {
		t.Fatalf("NewReqid = %q, %q", a, b)
	}
}
