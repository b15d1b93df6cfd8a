package admin

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/auth"
)

// A signature covers the path exactly as sent: one made for the key
// "victim?x=1" (escaped %3F) cannot be replayed unescaped to delete the key
// "victim", and a decoded-path signature (Go SDK style) is accepted only
// where decoding is unambiguous.
func TestSignatureCoversThePathAsSent(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "bkt"}, nil)
	e.must(http.StatusOK, alice, "PUT", "/v1/objects/bkt/victim", []byte("keep me"), nil)
	e.must(http.StatusOK, alice, "PUT", "/v1/objects/bkt/victim%3Fx=1", []byte("odd key"), nil)

	// Alice signs a DELETE of "victim?x=1"; the signed headers are replayed
	// on the unescaped path.
	signed, err := http.NewRequest("DELETE", e.ts.URL+"/v1/objects/bkt/victim%3Fx=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	auth.SignRequest(signed, alice.AccessKey, alice.SecretKey, nil, time.Now())
	r := e.reqWith(dora.Account{}, "DELETE", "/v1/objects/bkt/victim?x=1", nil, func(r *http.Request) {
		r.Header = signed.Header.Clone()
	})
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("replayed unescaped: %d %s, want 401", r.Status, r.Body)
	}
	e.must(http.StatusOK, alice, "GET", "/v1/stat/bkt/victim", nil, nil)

	// A Go-SDK-style signature over the decoded path is refused where the
	// path escapes a '?' ...
	r = e.reqWith(alice, "GET", "/v1/stat/bkt/victim%3Fx=1", nil, func(r *http.Request) {
		signDecoded(r, alice.AccessKey, alice.SecretKey)
	})
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("decoded signature over an escaped '?': %d %s, want 401", r.Status, r.Body)
	}
	// ... and accepted where decoding is unambiguous.
	e.must(http.StatusOK, alice, "PUT", "/v1/objects/bkt/caf%C3%A9%20x", []byte("x"), nil)
	r = e.reqWith(alice, "GET", "/v1/stat/bkt/caf%C3%A9%20x", nil, func(r *http.Request) {
		signDecoded(r, alice.AccessKey, alice.SecretKey)
	})
	if r.Status != http.StatusOK {
		t.Fatalf("decoded signature over a plain escaped path: %d %s, want 200", r.Status, r.Body)
	}
}

// signDecoded signs r as the Qiniu Go SDK does: over the decoded path.
func signDecoded(r *http.Request, ak, sk string) {
	r.Header.Set(auth.DateHeader, time.Now().UTC().Format(auth.DateFormat))
	pq := r.URL.Path
	if r.URL.RawQuery != "" {
		pq += "?" + r.URL.RawQuery
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = auth.ContentTypeForm
		r.Header.Set("Content-Type", ct)
	}
	r.Header.Set("Authorization", auth.SignQiniu(ak, sk, r.Method, pq, r.Host, ct, r.Header, nil))
}

// Bad names in admin paths (non-UTF-8, over-long, control characters) are a
// 4xx with a JSON error, never a 500.
func TestBadNamesAre4xx(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "good"}, nil)
	long := strings.Repeat("n", 3000)
	bad := []string{"%ff", "%c3%28", long, "a%00b", "%e2%82", url.PathEscape(strings.Repeat("é", 1500))}
	for _, n := range bad {
		for _, p := range []struct{ method, path string }{
			{"GET", "/v1/buckets/" + n},
			{"DELETE", "/v1/buckets/" + n},
			{"POST", "/v1/buckets/" + n + "/domains"},
			{"GET", "/v1/objects/" + n + "/x"},
			{"PUT", "/v1/objects/" + n + "/x"},
			{"DELETE", "/v1/objects/" + n + "/x"},
			{"GET", "/v1/stat/" + n + "/x"},
			{"GET", "/v1/list/" + n},
			{"GET", "/v1/objects/good/" + n},
			{"PUT", "/v1/objects/good/" + n},
			{"DELETE", "/v1/objects/good/" + n},
			{"GET", "/v1/stat/good/" + n},
			{"GET", "/v1/ufops/" + n},
			{"DELETE", "/v1/ufops/" + n},
			{"POST", "/v1/ufops/" + n + "/apply"},
			{"GET", "/v1/ufops/" + n + "/builds"},
			{"GET", "/v1/ufops/" + n + "/builds/1"},
			{"GET", "/v1/ufops/" + n + "/releases"},
			{"GET", "/v1/ufops/" + n + "/deployments"},
			{"GET", "/v1/ufops/" + n + "/deployments/" + n},
			{"POST", "/v1/ufops/" + n + "/resize"},
			{"GET", "/v1/ufops/" + n + "/instances"},
			{"GET", "/v1/ufops/" + n + "/logs"},
			{"POST", "/v1/accounts/" + n + "/disable"},
			{"GET", "/v1/artifacts/" + n + "/" + n},
		} {
			var body any
			if p.method == "PUT" {
				body = []byte("x")
			}
			acct := alice
			if strings.HasPrefix(p.path, "/v1/accounts") {
				acct = e.root
			}
			r := e.req(acct, p.method, p.path, body)
			if r.Status < 400 || r.Status >= 500 || r.errMsg() == "" {
				t.Errorf("%s %.60s: %d %.200s, want a 4xx JSON error", p.method, p.path, r.Status, r.Body)
			}
		}
	}
}
