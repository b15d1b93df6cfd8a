package s3

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
)

// lateTimer fires as it is stopped: the header bound passing just as the
// headers came in, between GetObject returning and the timer's Stop.
type lateTimer struct{ f func() }

func (l lateTimer) Stop() bool { l.f(); return false }

// TestHeaderBoundPassingAsHeadersArrive: a GET whose headers arrived in
// time is read whole even when the header bound's timer fires right after
// them; it used to cancel the body's request, so the read failed midway.
func TestHeaderBoundPassingAsHeadersArrive(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			return
		}
		w.Header().Set("Content-Length", "11")
		w.Header().Set("ETag", `"abc"`)
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		time.Sleep(50 * time.Millisecond) // the body comes after the timer fired
		io.WriteString(w, "hello world")
	}))
	defer srv.Close()
	s, err := New(t.Context(), Config{Bucket: "dora-test", Endpoint: srv.URL, PathStyle: true, MaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
	if err != nil {
		t.Fatal(err)
	}
	old := afterFunc
	afterFunc = func(d time.Duration, f func()) stopper { return lateTimer{f} }
	defer func() { afterFunc = old }()
	rc, _, err := s.Open(t.Context(), "bkt", "k", 0, -1)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil || string(b) != "hello world" {
		t.Errorf("read %q, %v; want the whole body", b, err)
	}
}
