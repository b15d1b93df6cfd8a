package auth

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The expected signatures below were computed independently in the shell
// from the rules in docs/api.md (Conventions) and docs/builtins.md, with python3:
//
//	base64.urlsafe_b64encode(hmac.new(b"SK-secret", data, hashlib.sha1).digest())
//
// and the first one cross-checked with
// `printf ... | openssl dgst -sha1 -hmac SK-secret -binary | base64 | tr '+/' '-_'`.
const (
	testAK = "AK"
	testSK = "SK-secret"
)

var (
	testDate = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	errNoKey = errors.New("no such key")
)

func lookup(_ context.Context, ak string) (string, error) {
	if ak == testAK {
		return testSK, nil
	}
	return "", errNoKey
}

func verifier() Verifier {
	return Verifier{Lookup: lookup, MaxSkew: 15 * time.Minute, Now: func() time.Time { return testDate.Add(time.Minute) }}
}

func TestVectors(t *testing.T) {
	tests := []struct{ name, got, want string }{
		{"qbox form body counted", SignQBox(testAK, testSK, "/v1/buckets?limit=10", ContentTypeForm, []byte("a=1&b=2")),
			"QBox AK:NHHm-8ulYtr8tkSagP0Wzf9qdMM="},
		{"qbox octet body not counted", SignQBox(testAK, testSK, "/v1/objects/b/k", "application/octet-stream", []byte("data")),
			"QBox AK:LdMh61gDmEqn8dB2hU4QmyhVhdI="},
		{"qbox json body not counted", SignQBox(testAK, testSK, "/v1/objects/b/k", ContentTypeJSON, []byte(`{"a":1}`)),
			"QBox AK:LdMh61gDmEqn8dB2hU4QmyhVhdI="},
		{"qiniu json body counted", SignQiniu(testAK, testSK, "POST", "/v1/objects/b/k?x=1", "127.0.0.1:8090", ContentTypeJSON,
			http.Header{"X-Qiniu-Zzz": {"z"}, "X-Qiniu-Date": {"20260102T030405Z"}, "Accept": {"x"}}, []byte(`{"a":1}`)),
			"Qiniu AK:qhaxI1Zr0dwWW-xMLaQzDjVmH8U="},
		{"qiniu octet body not counted", SignQiniu(testAK, testSK, "PUT", "/v1/objects/b/k", "127.0.0.1:8090", "application/octet-stream",
			http.Header{"X-Qiniu-Date": {"20260102T030405Z"}}, []byte("data")),
			"Qiniu AK:2zwcUTfLj68YjYaNpVrXPebdMWY="},
		{"qiniu empty type is a form", SignQiniu(testAK, testSK, "POST", "/v1/x", "h", "", nil, []byte("k=v")),
			"Qiniu AK:3K9hBEOFxlKcazAuybkmV6GEZTM="},
		{"download url", DownloadURL("http://photos.localhost:8080/a.jpg?grepd/x", testAK, testSK, 1700000000),
			"http://photos.localhost:8080/a.jpg?grepd/x&e=1700000000&token=AK:aIvE7xEaGmJ8y15gepST9mbdURU="},
		{"saveas", SaveAsSign(testSK, "photos.localhost:8080/a.jpg?grepd/x|saveas/Yjpr"), "2y-O0fu4pN6gT4pIVI4uwAsjetU="},
		{"entry", EncodedEntryURI("out", "res/a.txt"), "b3V0OnJlcy9hLnR4dA=="},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestDownloadURLSeparator(t *testing.T) {
	u := DownloadURL("http://h/k", testAK, testSK, 5)
	if !strings.HasPrefix(u, "http://h/k?e=5&token=AK:") {
		t.Fatalf("DownloadURL without query = %q", u)
	}
}

func newReq(t *testing.T, method, target, ct string, body []byte) *http.Request {
	t.Helper()
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	return req
}

func TestVerifyHTTP(t *testing.T) {
	ctx := context.Background()
	form := []byte("a=1&b=2")
	js := []byte(`{"name":"x"}`)
	tests := []struct {
		name    string
		build   func() (*http.Request, []byte)
		wantErr string // "" = ok
	}{
		{"qiniu form", func() (*http.Request, []byte) {
			r := newReq(t, "POST", "http://api.local:8090/v1/buckets?x=1", ContentTypeForm, form)
			SignRequest(r, testAK, testSK, form, testDate)
			return r, form
		}, ""},
		{"qiniu json", func() (*http.Request, []byte) {
			r := newReq(t, "POST", "http://api.local:8090/v1/ufops", ContentTypeJSON, js)
			SignRequest(r, testAK, testSK, js, testDate)
			return r, js
		}, ""},
		{"qiniu no content type signs a form", func() (*http.Request, []byte) {
			r := newReq(t, "POST", "http://api.local:8090/v1/ufops", "", form)
			SignRequest(r, testAK, testSK, form, testDate)
			return r, form
		}, ""},
		{"qiniu octet body not counted", func() (*http.Request, []byte) {
			r := newReq(t, "PUT", "http://api.local:8090/v1/objects/b/k", "application/octet-stream", []byte("data"))
			SignRequest(r, testAK, testSK, []byte("other"), testDate)
			return r, nil
		}, ""},
		{"qbox form", func() (*http.Request, []byte) {
			r := newReq(t, "POST", "http://api.local:8090/v1/buckets", ContentTypeForm, form)
			SignRequestQBox(r, testAK, testSK, form)
			return r, form
		}, ""},
		{"qbox escaped path", func() (*http.Request, []byte) {
			r := newReq(t, "GET", "http://api.local:8090/v1/stat/b/a%20b", "", nil)
			r.Header.Set("Authorization", SignQBox(testAK, testSK, "/v1/stat/b/a%20b", "", nil))
			return r, nil
		}, ""},
		{"qbox decoded path", func() (*http.Request, []byte) {
			r := newReq(t, "GET", "http://api.local:8090/v1/stat/b/a%20b", "", nil)
			r.Header.Set("Authorization", SignQBox(testAK, testSK, "/v1/stat/b/a b", "", nil))
			return r, nil
		}, ""},
		{"qbox tampered form body", func() (*http.Request, []byte) {
			r := newReq(t, "POST", "http://api.local:8090/v1/buckets", ContentTypeForm, form)
			SignRequestQBox(r, testAK, testSK, form)
			return r, []byte("a=1&b=3")
		}, "signature mismatch"},
		{"qiniu tampered json body", func() (*http.Request, []byte) {
			r := newReq(t, "POST", "http://api.local:8090/v1/ufops", ContentTypeJSON, js)
			SignRequest(r, testAK, testSK, js, testDate)
			return r, []byte(`{"name":"y"}`)
		}, "signature mismatch"},
		{"qiniu tampered host", func() (*http.Request, []byte) {
			r := newReq(t, "GET", "http://api.local:8090/v1/whoami", "", nil)
			SignRequest(r, testAK, testSK, nil, testDate)
			r.Host = "evil.local:8090"
			return r, nil
		}, "signature mismatch"},
		{"qiniu tampered method", func() (*http.Request, []byte) {
			r := newReq(t, "GET", "http://api.local:8090/v1/buckets/x", "", nil)
			SignRequest(r, testAK, testSK, nil, testDate)
			r.Method = "DELETE"
			return r, nil
		}, "signature mismatch"},
		{"qiniu tampered x-qiniu header", func() (*http.Request, []byte) {
			r := newReq(t, "GET", "http://api.local:8090/v1/whoami", "", nil)
			r.Header.Set("X-Qiniu-Foo", "1")
			SignRequest(r, testAK, testSK, nil, testDate)
			r.Header.Set("X-Qiniu-Foo", "2")
			return r, nil
		}, "signature mismatch"},
		{"unknown AK", func() (*http.Request, []byte) {
			r := newReq(t, "GET", "http://api.local:8090/v1/whoami", "", nil)
			SignRequest(r, "nobody", testSK, nil, testDate)
			return r, nil
		}, "signature mismatch"},
		{"wrong SK", func() (*http.Request, []byte) {
			r := newReq(t, "GET", "http://api.local:8090/v1/whoami", "", nil)
			SignRequest(r, testAK, "other", nil, testDate)
			return r, nil
		}, "signature mismatch"},
		{"stale date", func() (*http.Request, []byte) {
			r := newReq(t, "GET", "http://api.local:8090/v1/whoami", "", nil)
			SignRequest(r, testAK, testSK, nil, testDate.Add(-20*time.Minute))
			return r, nil
		}, "more than 15m0s from the server's clock"},
		{"future date", func() (*http.Request, []byte) {
			r := newReq(t, "GET", "http://api.local:8090/v1/whoami", "", nil)
			SignRequest(r, testAK, testSK, nil, testDate.Add(20*time.Minute))
			return r, nil
		}, "from the server's clock"},
		{"malformed date", func() (*http.Request, []byte) {
			r := newReq(t, "GET", "http://api.local:8090/v1/whoami", "", nil)
			r.Header.Set(DateHeader, "2026-01-02")
			SignRequest(r, testAK, testSK, nil, testDate)
			r.Header.Set(DateHeader, "2026-01-02")
			return r, nil
		}, "malformed X-Qiniu-Date"},
		{"missing header", func() (*http.Request, []byte) {
			return newReq(t, "GET", "http://api.local:8090/v1/whoami", "", nil), nil
		}, "missing Authorization"},
		{"unknown scheme", func() (*http.Request, []byte) {
			r := newReq(t, "GET", "http://api.local:8090/v1/whoami", "", nil)
			r.Header.Set("Authorization", "Bearer abc")
			return r, nil
		}, "unsupported Authorization scheme"},
		{"no colon", func() (*http.Request, []byte) {
			r := newReq(t, "GET", "http://api.local:8090/v1/whoami", "", nil)
			r.Header.Set("Authorization", "Qiniu AK")
			return r, nil
		}, "want Qiniu <AK>:<sign>"},
		{"short sign", func() (*http.Request, []byte) {
			r := newReq(t, "GET", "http://api.local:8090/v1/whoami", "", nil)
			r.Header.Set("Authorization", "QBox AK:abcd")
			return r, nil
		}, "not a URL-safe base64 HMAC-SHA1"},
		{"std base64 sign", func() (*http.Request, []byte) {
			r := newReq(t, "GET", "http://api.local:8090/v1/whoami", "", nil)
			r.Header.Set("Authorization", "QBox AK:+/+/+/+/+/+/+/+/+/+/+/+/+/8=")
			return r, nil
		}, "not a URL-safe base64 HMAC-SHA1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, body := tt.build()
			ak, err := verifier().VerifyHTTP(ctx, req, body)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("VerifyHTTP: %v", err)
				}
				if ak != testAK {
					t.Fatalf("ak = %q", ak)
				}
				return
			}
			if err == nil {
				t.Fatalf("VerifyHTTP succeeded, want error %q", tt.wantErr)
			}
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("error %v does not wrap ErrUnauthorized", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestVerifyDefaultNowAndSkew(t *testing.T) {
	r := newReq(t, "GET", "http://api.local/v1/whoami", "", nil)
	SignRequest(r, testAK, testSK, nil, time.Now())
	if _, err := (Verifier{Lookup: lookup}).VerifyHTTP(context.Background(), r, nil); err != nil {
		t.Fatalf("default Verifier: %v", err)
	}
}

func TestVerifyDownloadToken(t *testing.T) {
	ctx := context.Background()
	full := DownloadURL("http://photos.localhost:8080/a.jpg?grepd/x", testAK, testSK, 1700000000)
	upToE, token, _ := strings.Cut(full, "&token=")
	now := time.Unix(1700000000, 0)
	tests := []struct {
		name, url, token string
		deadline         int64
		now              time.Time
		wantErr          string
	}{
		{"ok", upToE, token, 1700000000, now, ""},
		{"expired", upToE, token, 1700000000, now.Add(time.Second), "expired"},
		{"scheme is signed", strings.Replace(upToE, "http:", "https:", 1), token, 1700000000, now, "bad download token"},
		{"other deadline", strings.Replace(upToE, "e=1700000000", "e=1700000001", 1), token, 1700000001, now, "bad download token"},
		{"url and deadline disagree", upToE, token, 1800000000, now, "does not end with"},
		{"unknown AK", upToE, "nobody" + token[len(testAK):], 1700000000, now, "bad download token"},
		{"malformed", upToE, "AK", 1700000000, now, "malformed token"},
		{"bad sign", upToE, "AK:xyz", 1700000000, now, "malformed token"},
		{"line break in the sign", upToE, token[:len(token)-8] + "\n" + token[len(token)-8:], 1700000000, now, "malformed token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ak, err := VerifyDownloadToken(ctx, lookup, tt.url, tt.token, tt.deadline, tt.now)
			if tt.wantErr == "" {
				if err != nil || ak != testAK {
					t.Fatalf("got %q, %v", ak, err)
				}
				return
			}
			if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want ErrUnauthorized containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestVerifySaveAs(t *testing.T) {
	ctx := context.Background()
	hpq := "photos.localhost:8080/a.jpg?grepd/x|saveas/Yjpr"
	sign := SaveAsSign(testSK, hpq)
	if err := VerifySaveAs(ctx, lookup, hpq, testAK, sign); err != nil {
		t.Fatalf("VerifySaveAs: %v", err)
	}
	for name, c := range map[string][3]string{
		"tampered":   {hpq + "x", testAK, sign},
		"unknown AK": {hpq, "nobody", sign},
		"empty sign": {hpq, testAK, ""},
		"bad sign":   {hpq, testAK, "!!"},
		"line break": {hpq, testAK, sign[:8] + "\r\n" + sign[8:]},
	} {
		if err := VerifySaveAs(ctx, lookup, c[0], c[1], c[2]); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("%s: error %v, want ErrUnauthorized", name, err)
		}
	}
}

func FuzzParseAuthorization(f *testing.F) {
	for _, s := range []string{"QBox AK:NHHm-8ulYtr8tkSagP0Wzf9qdMM=", "Qiniu a:b", "Qiniu ", "QBox :x", "Bearer x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		scheme, ak, sign, err := parseAuthorization(h)
		if err != nil {
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("error %v does not wrap ErrUnauthorized", err)
			}
			return
		}
		if got := scheme + " " + ak + ":" + URLSafeBase64(sign); got != h {
			t.Fatalf("parse(%q) re-formats to %q", h, got)
		}
		// Verify must not panic on anything the parser accepts.
		_, _ = verifier().Verify(context.Background(), h, "GET", "/", "h", "", nil, nil)
	})
}

// QBox signs neither the method nor a non-form body: it is accepted for
// GET, HEAD and form POSTs only, so a signed GET cannot be replayed as a
// DELETE.
func TestQBoxOnlyWhereItCoversTheRequest(t *testing.T) {
	ctx := context.Background()
	form := []byte("a=1")
	tests := []struct {
		method, ct string
		body       []byte
		ok         bool
	}{
		{"GET", "", nil, true},
		{"HEAD", "", nil, true},
		{"POST", ContentTypeForm, form, true},
		{"POST", ContentTypeForm + "; charset=utf-8", form, true},
		{"POST", ContentTypeJSON, []byte(`{"a":1}`), false},
		{"POST", "", nil, false},
		{"POST", "application/octet-stream", []byte("x"), false},
		{"PUT", "application/octet-stream", []byte("x"), false},
		{"PUT", ContentTypeForm, form, false},
		{"DELETE", "", nil, false},
		{"PATCH", ContentTypeForm, form, false},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.ct, func(t *testing.T) {
			r := newReq(t, tt.method, "http://api.local:8090/v1/buckets/x", tt.ct, tt.body)
			SignRequestQBox(r, testAK, testSK, tt.body)
			_, err := verifier().VerifyHTTP(ctx, r, tt.body)
			if tt.ok {
				if err != nil {
					t.Fatalf("VerifyHTTP: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrQBoxRefused) || !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("VerifyHTTP = %v, want ErrQBoxRefused", err)
			}
			if !strings.Contains(err.Error(), "Qiniu form") {
				t.Fatalf("error %q does not say to use the Qiniu form", err)
			}
		})
	}
	// The replay the reviewer found: a signed GET sent as DELETE.
	r := newReq(t, "GET", "http://api.local:8090/v1/buckets/x", "", nil)
	SignRequestQBox(r, testAK, testSK, nil)
	r.Method = "DELETE"
	if _, err := verifier().VerifyHTTP(ctx, r, nil); !errors.Is(err, ErrQBoxRefused) {
		t.Fatalf("QBox GET replayed as DELETE: %v", err)
	}
}

// Media types are compared bare on both sides: a charset parameter does not
// take the body out of the signature.
func TestBodySignedByBareMediaType(t *testing.T) {
	tests := []struct {
		authz, ct string
		want      bool
	}{
		{"Qiniu a:b", "application/json", true},
		{"Qiniu a:b", "application/json; charset=utf-8", true},
		{"Qiniu a:b", "Application/JSON ; charset=UTF-8", true},
		{"Qiniu a:b", "application/x-www-form-urlencoded; charset=utf-8", true},
		{"Qiniu a:b", "", true},
		{"Qiniu a:b", "text/plain", false},
		{"Qiniu a:b", "application/json;;", false},
		{"Qiniu a:b", "application/octet-stream", false},
		{"QBox a:b", "application/x-www-form-urlencoded", true},
		{"QBox a:b", "application/x-www-form-urlencoded; charset=utf-8", true},
		{"QBox a:b", "application/json", false},
		{"QBox a:b", "", false},
		{"Bearer x", "application/json", false},
		{"", "application/json", false},
	}
	for _, tt := range tests {
		if got := BodySigned(tt.authz, tt.ct); got != tt.want {
			t.Errorf("BodySigned(%q, %q) = %v, want %v", tt.authz, tt.ct, got, tt.want)
		}
	}
	js := []byte(`{"a":1}`)
	h := http.Header{"X-Qiniu-Date": {"20260102T030405Z"}}
	withCharset := SignQiniu(testAK, testSK, "POST", "/v1/x", "h", "application/json; charset=utf-8", h, js)
	tampered := SignQiniu(testAK, testSK, "POST", "/v1/x", "h", "application/json; charset=utf-8", h, []byte(`{"a":2}`))
	if withCharset == tampered {
		t.Fatal("a JSON body with a charset is not signed")
	}
	form := []byte("a=1")
	if SignQBox(testAK, testSK, "/p", ContentTypeForm+"; charset=utf-8", form) != SignQBox(testAK, testSK, "/p", ContentTypeForm, form) {
		t.Fatal("QBox: a form with a charset is signed differently from a bare form")
	}
}

// An unknown access key must get the answer a wrong secret key gets (Qiniu
// answers 401 "bad token" to both): a different text tells an attacker
// which keys exist. The lookup's error stays reachable with errors.Is, so
// that a caller can still answer a store outage with 503.
func TestUnknownKeyAnswersLikeBadSign(t *testing.T) {
	ctx := context.Background()
	v := verifier()
	mgmt := func(ak, sk string) error {
		r := newReq(t, "GET", "http://api.local:8090/v1/whoami", "", nil)
		SignRequest(r, ak, sk, nil, testDate)
		_, err := v.VerifyHTTP(ctx, r, nil)
		return err
	}
	dl := func(ak, sk string) error {
		full := DownloadURL("http://photos.localhost:8080/a.jpg", ak, sk, 1700000000)
		upToE, token, _ := strings.Cut(full, "&token=")
		_, err := VerifyDownloadToken(ctx, lookup, upToE, token, 1700000000, time.Unix(1700000000, 0))
		return err
	}
	hpq := "photos.localhost:8080/a.jpg?grepd/x|saveas/Yjpr"
	sa := func(ak, sk string) error { return VerifySaveAs(ctx, lookup, hpq, ak, SaveAsSign(sk, hpq)) }
	for name, f := range map[string]func(ak, sk string) error{"management": mgmt, "download token": dl, "saveas": sa} {
		unknown, wrongSK := f("nobody", testSK), f(testAK, "other")
		if unknown == nil || wrongSK == nil {
			t.Fatalf("%s: unknown AK %v, wrong SK %v: want both refused", name, unknown, wrongSK)
		}
		if unknown.Error() != wrongSK.Error() {
			t.Errorf("%s: unknown AK answers %q, wrong SK %q: the answer tells which keys exist", name, unknown, wrongSK)
		}
		if !strings.Contains(unknown.Error(), "bad") {
			t.Errorf("%s: %q does not say bad token/sign", name, unknown)
		}
		if !errors.Is(unknown, ErrUnauthorized) || !errors.Is(unknown, errNoKey) {
			t.Errorf("%s: %v does not wrap ErrUnauthorized and the lookup's error", name, unknown)
		}
		if strings.Contains(unknown.Error(), "nobody") {
			t.Errorf("%s: %q echoes the access key", name, unknown)
		}
	}
}

// A signature over a path with an escape ("/v1/objects/b/a%20b": the key
// "a b", as SignRequest signs it) must not verify for the request whose
// decoded path is that string ("/v1/objects/b/a%2520b": the key "a%20b"):
// the decoded form is accepted only where it cannot name another request.
func TestDecodedPathWithPercentNotReplayable(t *testing.T) {
	ctx := context.Background()
	for _, method := range []string{"DELETE", "GET"} {
		signed := newReq(t, method, "http://api.local:8090/v1/objects/b/a%20b", "", nil)
		SignRequest(signed, testAK, testSK, nil, testDate)
		if _, err := verifier().VerifyHTTP(ctx, signed, nil); err != nil {
			t.Fatalf("%s: the signed request itself: %v", method, err)
		}
		replay := newReq(t, method, "http://api.local:8090/v1/objects/b/a%2520b", "", nil)
		replay.Header = signed.Header.Clone()
		if replay.URL.Path != "/v1/objects/b/a%20b" {
			t.Fatalf("replay path %q", replay.URL.Path)
		}
		if _, err := verifier().VerifyHTTP(ctx, replay, nil); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("%s: signature for key %q accepted for key %q (err %v)", method, "a b", "a%20b", err)
		}
		// Also QBox (GET only).
		if method == "GET" {
			q := newReq(t, method, "http://api.local:8090/v1/objects/b/a%2520b", "", nil)
			q.Header.Set("Authorization", SignQBox(testAK, testSK, "/v1/objects/b/a%20b", "", nil))
			if _, err := verifier().VerifyHTTP(ctx, q, nil); !errors.Is(err, ErrUnauthorized) {
				t.Errorf("QBox: signature over the escaped path of %q accepted for %q", "a b", "a%20b")
			}
		}
	}
}
