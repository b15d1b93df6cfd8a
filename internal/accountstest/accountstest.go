// Package accountstest is the account fixture of the HTTP API tests: two
// accounts (Alice and Bob), Seed to write them and their buckets into a
// store, and requests signed as the Qiniu SDKs sign them (docs/api.md, Conventions),
// written out here rather than through internal/auth so that a test checks
// the server's verifier against an independent signer.
//
// It is test support: production code must not import it.
package accountstest

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"mime"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
)

// Alice and Bob are the two accounts the API tests sign as: Alice owns the
// buckets under test, Bob is the other tenant whose calls must be refused.
// They are values: a test that changes its copy changes nothing else.
var (
	Alice = dora.Account{ID: "1001", Name: "alice", AccessKey: "AK-alice", SecretKey: "SK-alice"}
	Bob   = dora.Account{ID: "1002", Name: "bob", AccessKey: "AK-bob", SecretKey: "SK-bob"}
)

// Putter is the part of store.Store that Seed writes through.
type Putter interface {
	Put(ctx context.Context, key string, value []byte) (uint64, error)
}

// Seed writes Alice and Bob (account record and access-key index) and the
// given buckets into st, failing t on any error.
func Seed(t testing.TB, st Putter, buckets ...dora.Bucket) {
	t.Helper()
	put := func(key string, v []byte) {
		t.Helper()
		if _, err := st.Put(context.Background(), key, v); err != nil {
			t.Fatalf("seed %s: %v", key, err)
		}
	}
	putJSON := func(key string, v any) {
		t.Helper()
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		put(key, b)
	}
	for _, a := range []dora.Account{Alice, Bob} {
		putJSON(store.AccountKey(a.ID), a)
		put(store.AccessKeyKey(a.AccessKey), []byte(a.ID))
	}
	for _, b := range buckets {
		putJSON(store.BucketKey(b.Name), b)
	}
}

// HMACB64 is urlsafe_base64(hmac_sha1(sk, data)), the signature of every
// Qiniu token and Authorization header.
func HMACB64(sk, data string) string {
	m := hmac.New(sha1.New, []byte(sk))
	m.Write([]byte(data))
	return base64.URLEncoding.EncodeToString(m.Sum(nil))
}

func pathQuery(req *http.Request) string {
	pq := req.URL.Path
	if req.URL.RawQuery != "" {
		pq += "?" + req.URL.RawQuery
	}
	return pq
}

// SignQBox sets "Authorization: QBox AK:sign", sign = HMACB64(SK,
// "<path>[?<query>]\n" + body), the body counting only for a form
// request (media type application/x-www-form-urlencoded, any parameters).
func SignQBox(req *http.Request, a dora.Account, body string) {
	if mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		body = ""
	}
	req.Header.Set("Authorization", "QBox "+a.AccessKey+":"+HMACB64(a.SecretKey, pathQuery(req)+"\n"+body))
}

// SignQiniu sets X-Qiniu-Date to date and "Authorization: Qiniu AK:sign"
// over "<METHOD> <path>[?<query>]\nHost: <host>\nContent-Type: <type>\n" +
// the X-Qiniu-* headers sorted + "\n" + body.
func SignQiniu(req *http.Request, a dora.Account, body string, date time.Time) {
	req.Header.Set("X-Qiniu-Date", date.UTC().Format("20060102T150405Z"))
	s := req.Method + " " + pathQuery(req) + "\nHost: " + req.URL.Host + "\nContent-Type: " + req.Header.Get("Content-Type") + "\n"
	var names []string
	for k := range req.Header {
		if strings.HasPrefix(k, "X-Qiniu-") {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		s += k + ": " + req.Header.Get(k) + "\n"
	}
	req.Header.Set("Authorization", "Qiniu "+a.AccessKey+":"+HMACB64(a.SecretKey, s+"\n"+body))
}

// Signer signs req as account a; body is the request body as sent.
type Signer func(req *http.Request, a dora.Account, body string)

// Signers are the two SDK schemes by name ("qbox", "qiniu"), Qiniu dated now.
func Signers() map[string]Signer {
	return map[string]Signer{
		"qbox":  SignQBox,
		"qiniu": func(req *http.Request, a dora.Account, body string) { SignQiniu(req, a, body, time.Now()) },
	}
}
