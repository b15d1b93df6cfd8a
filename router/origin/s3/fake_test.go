package s3_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/doraproject/dora/router/origin"
	s3origin "github.com/doraproject/dora/router/origin/s3"
)

// fakeStore is an S3 endpoint answering the bucket's HEAD (New's check)
// with 200 and every other request with get: a store answering oddly.
func fakeStore(t *testing.T, get http.HandlerFunc) *s3origin.Store {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead && (r.URL.Path == "/"+testBucket || r.URL.Path == "/"+testBucket+"/") {
			w.WriteHeader(http.StatusOK)
			return
		}
		get(w, r)
	}))
	t.Cleanup(srv.Close)
	s, err := s3origin.New(t.Context(), s3origin.Config{
		Bucket:      testBucket,
		Endpoint:    srv.URL,
		PathStyle:   true,
		Timeout:     5 * time.Second,
		MaxAttempts: 1,
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// objectHeaders sets what S3 answers about a 100-byte object.
func objectHeaders(w http.ResponseWriter) {
	w.Header().Set("ETag", `"0123456789abcdef0123456789abcdef"`)
	w.Header().Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
	w.Header().Set("Content-Type", "application/octet-stream")
}

// hundred is the fake object: "00", "01", ... "49" (no two of its 10-byte
// windows at different offsets alike).
var hundred = func() string {
	var b strings.Builder
	for i := range 50 {
		fmt.Fprintf(&b, "%02d", i)
	}
	return b.String()
}()

// TestMidStreamErrorNamesTheObject: a store whose connection breaks in
// the middle of a body fails the read with an error that says so and
// names the object (ErrStreamBroken), not with the transport's bare
// error, and never as a cancellation (which callers report as the client
// having gone).
func TestMidStreamErrorNamesTheObject(t *testing.T) {
	s := fakeStore(t, func(w http.ResponseWriter, r *http.Request) {
		objectHeaders(w)
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, hundred[:10])
		w.(http.Flusher).Flush()
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	rc, _, err := s.Open(t.Context(), "bkt", "dir/obj", 0, -1)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if string(b) != hundred[:10] {
		t.Errorf("read %q before the break", b)
	}
	if err == nil {
		t.Fatal("a body cut after 10 of 100 bytes read without error")
	}
	t.Logf("cut body: %v", err)
	if !errors.Is(err, s3origin.ErrStreamBroken) {
		t.Errorf("error %v does not wrap ErrStreamBroken", err)
	}
	if !strings.Contains(err.Error(), "bkt/dir/obj") {
		t.Errorf("error %q does not name the object", err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, origin.ErrNotFound) {
		t.Errorf("error %v reads as a cancellation or a missing object", err)
	}
}

// TestMidStreamCancelStaysCancel: the caller cancelling its context while
// the body streams is reported as the caller's cancellation.
func TestMidStreamCancelStaysCancel(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s := fakeStore(t, func(w http.ResponseWriter, r *http.Request) {
		objectHeaders(w)
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, hundred[:10])
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	ctx, cancel := context.WithCancel(t.Context())
	rc, _, err := s.Open(ctx, "bkt", "k", 0, -1)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	buf := make([]byte, 10)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	_, err = io.ReadAll(rc)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("read after the caller cancelled = %v, want context.Canceled", err)
	}
}

// rangeAnswer answers a Range request with the bytes from first (not the
// ones asked for), as 206 with a matching Content-Range.
func rangeAnswer(first int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		objectHeaders(w)
		end := len(hundred) - 1
		w.Header().Set("Content-Range", "bytes "+itoa(first)+"-"+itoa(end)+"/100")
		w.Header().Set("Content-Length", itoa(end-first+1))
		w.WriteHeader(http.StatusPartialContent)
		io.WriteString(w, hundred[first:])
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestRangeAnswerChecked: a 206 whose Content-Range starts after the
// offset asked for is refused (those bytes are missing); one starting
// before it is skipped to the offset, as router/origin/httpmirror does.
func TestRangeAnswerChecked(t *testing.T) {
	t.Run("after", func(t *testing.T) {
		s := fakeStore(t, rangeAnswer(50))
		rc, _, err := s.Open(t.Context(), "bkt", "k", 20, 10)
		if err == nil {
			b, _ := io.ReadAll(rc)
			rc.Close()
			t.Fatalf("asked for bytes 20-29, answered from 50: read %q without error", b)
		}
		if !strings.Contains(err.Error(), "bytes 50-99/100") {
			t.Errorf("error %q does not show the answered range", err)
		}
	})
	t.Run("before", func(t *testing.T) {
		s := fakeStore(t, rangeAnswer(0))
		rc, obj, err := s.Open(t.Context(), "bkt", "k", 20, 10)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil || string(b) != hundred[20:30] {
			t.Errorf("asked for 20-29, answered from 0: read %q, %v; want %q", b, err, hundred[20:30])
		}
		if obj.Size != 100 {
			t.Errorf("size %d, want 100", obj.Size)
		}
	})
	t.Run("ends early", func(t *testing.T) {
		s := fakeStore(t, func(w http.ResponseWriter, r *http.Request) {
			objectHeaders(w)
			w.Header().Set("Content-Range", "bytes 20-24/100")
			w.Header().Set("Content-Length", "5")
			w.WriteHeader(http.StatusPartialContent)
			io.WriteString(w, hundred[20:25])
		})
		if rc, _, err := s.Open(t.Context(), "bkt", "k", 20, 10); err == nil {
			b, _ := io.ReadAll(rc)
			rc.Close()
			t.Errorf("asked for bytes 20-29 of 100, answered 20-24: read %q without error", b)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		s := fakeStore(t, func(w http.ResponseWriter, r *http.Request) {
			objectHeaders(w)
			w.Header().Set("Content-Range", "pages 1-2/3")
			w.Header().Set("Content-Length", "10")
			w.WriteHeader(http.StatusPartialContent)
			io.WriteString(w, hundred[:10])
		})
		if rc, _, err := s.Open(t.Context(), "bkt", "k", 20, 10); err == nil {
			rc.Close()
			t.Error("an unreadable Content-Range was accepted")
		}
	})
}

// TestChunkedAnswer: a GET answered without Content-Length (chunked) has
// an unknown size, not 0, and is read whole.
func TestChunkedAnswer(t *testing.T) {
	s := fakeStore(t, func(w http.ResponseWriter, r *http.Request) {
		objectHeaders(w)
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, hundred[:50])
		w.(http.Flusher).Flush()
		io.WriteString(w, hundred[50:])
	})
	rc, obj, err := s.Open(t.Context(), "bkt", "k", 0, -1)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil || string(b) != hundred {
		t.Errorf("chunked read: %q, %v", b, err)
	}
	if obj.Size != -1 && obj.Size != 100 {
		t.Errorf("chunked answer: size %d, want -1 (unknown) or 100", obj.Size)
	}
}

// TestShortBodyIsAnError: a body that ends cleanly before its announced
// length (a chunked answer cut short, an answer to a range shorter than
// asked) is an error, not a silent short read.
func TestShortBodyIsAnError(t *testing.T) {
	s := fakeStore(t, func(w http.ResponseWriter, r *http.Request) {
		objectHeaders(w)
		w.Header().Set("Content-Range", "bytes 10-19/100")
		w.Header().Set("Content-Length", "5")
		w.WriteHeader(http.StatusPartialContent)
		io.WriteString(w, hundred[10:15])
	})
	rc, _, err := s.Open(t.Context(), "bkt", "k", 10, 10)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err == nil {
		t.Errorf("a range of 10 bytes answered with %q read without error", b)
	} else if !errors.Is(err, s3origin.ErrStreamBroken) {
		t.Errorf("short range: %v, want ErrStreamBroken", err)
	}
}

// TestListTruncatedWithoutToken: a store answering a listing page as
// truncated but with no continuation token (or the one it was sent) fails
// the listing instead of asking for the same page forever.
func TestListTruncatedWithoutToken(t *testing.T) {
	for name, token := range map[string]string{"none": "", "same": "tok"} {
		t.Run(name, func(t *testing.T) {
			var pages atomic.Int64
			s := fakeStore(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Query().Get("list-type") != "2" {
					http.Error(w, "unexpected", http.StatusBadRequest)
					return
				}
				pages.Add(1)
				next := ""
				if token != "" {
					next = "<NextContinuationToken>" + token + "</NextContinuationToken>"
				}
				w.Header().Set("Content-Type", "application/xml")
				fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>%s</Name><Prefix>bkt/</Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>%s<Contents><Key>bkt/k%d</Key><Size>1</Size></Contents></ListBucketResult>`,
					testBucket, next, pages.Load())
			})
			done := make(chan error, 1)
			go func() {
				_, err := s.Keys(t.Context(), "bkt", "")
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil {
					t.Error("an endless listing ended without error")
				}
				t.Logf("pages asked: %d; err: %v", pages.Load(), err)
			case <-time.After(10 * time.Second):
				t.Fatalf("listing still running after %d pages", pages.Load())
			}
		})
	}
}

// TestIgnoredRangeBeyondEnd: a store ignoring the Range of a read past
// the object's end (sending the whole, shorter object) fails the Open as
// the offset being outside the object, not as the store being unavailable
// (a 503 inviting retries that fail alike); at the very end it is empty.
func TestIgnoredRangeBeyondEnd(t *testing.T) {
	s := fakeStore(t, func(w http.ResponseWriter, r *http.Request) {
		objectHeaders(w)
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, hundred)
	})
	rc, _, err := s.Open(t.Context(), "bkt", "k", 150, 10)
	if err == nil {
		rc.Close()
		t.Fatal("offset 150 of a 100-byte object opened")
	}
	if errors.Is(err, origin.ErrUnavailable) || !strings.Contains(err.Error(), "outside") {
		t.Errorf("offset 150 of 100 bytes: %v, want the offset outside the object", err)
	}
	rc, obj, err := s.Open(t.Context(), "bkt", "k", 100, -1)
	if err != nil {
		t.Fatalf("offset at the end: %v", err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if len(b) != 0 || err != nil || obj.Size != 100 {
		t.Errorf("offset at the end: %q, %v, size %d", b, err, obj.Size)
	}
}

// TestListOutsidePrefixIgnored: a store ignoring a listing's prefix (or
// start-after) answers keys of other Dora buckets; they are not this
// bucket's keys (before, "other/secret.txt" was listed as bucket bkt's
// key "other/secret.txt").
func TestListOutsidePrefixIgnored(t *testing.T) {
	s := fakeStore(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			objectHeaders(w)
			w.Header().Set("Content-Length", "1")
			return
		}
		if r.URL.Query().Get("list-type") != "2" {
			http.Error(w, "unexpected", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/xml")
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>%s</Name><KeyCount>4</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>
<Contents><Key>a/x</Key><Size>1</Size></Contents>
<Contents><Key>bkt/a</Key><Size>1</Size></Contents>
<Contents><Key>bkt/b/c</Key><Size>1</Size></Contents>
<Contents><Key>bktz/d</Key><Size>1</Size></Contents>
<Contents><Key>other/secret.txt</Key><Size>1</Size></Contents>
<CommonPrefixes><Prefix>other/dir/</Prefix></CommonPrefixes>
</ListBucketResult>`, testBucket)
	})
	keys, err := s.Keys(t.Context(), "bkt", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keys, ","); got != "a,b/c" {
		t.Errorf("Keys of bkt = %q, want a,b/c", got)
	}
	keys, err = s.Keys(t.Context(), "bkt", "b/")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keys, ","); got != "b/c" {
		t.Errorf("Keys of bkt under b/ = %q, want b/c", got)
	}
	// A store ignoring start-after repeats the previous page's keys.
	p, err := s.ListPage(t.Context(), "bkt", s3origin.ListOptions{Marker: "a", Delimiter: "/"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Objects) != 1 || p.Objects[0].Key != "b/c" || len(p.Prefixes) != 0 {
		t.Errorf("ListPage of bkt after a = %+v, want b/c alone", p)
	}
}

// TestHeadWithoutLength: a HEAD answered without Content-Length describes
// an object of unknown size (-1), not an empty one, which readers served
// as 0 bytes.
func TestHeadWithoutLength(t *testing.T) {
	s := fakeStore(t, func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 200 OK\r\nETag: \"abc\"\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
		buf.Flush()
	})
	obj, err := s.Stat(t.Context(), "bkt", "k")
	if err != nil {
		t.Fatal(err)
	}
	if obj.Size != -1 {
		t.Errorf("HEAD without Content-Length: size %d, want -1", obj.Size)
	}
}
