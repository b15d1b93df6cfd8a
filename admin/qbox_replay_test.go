package admin

import (
	"net/http"
	"strings"
	"testing"

	"github.com/doraproject/dora/internal/auth"
)

// QBox signs neither the method nor an empty body: a QBox-signed GET of
// /v1/accounts (a listing) signs exactly what a POST of /v1/accounts with
// an empty form body signs, and that POST creates an account and answers
// its keys. A signed read must not pass for a write of the same path.
func TestQBoxSignedGetNotReplayableAsEmptyPost(t *testing.T) {
	e := newEnv(t)
	qbox := func(sign string) func(*http.Request) {
		return func(r *http.Request) {
			r.Header.Del(auth.DateHeader)
			r.Header.Set("Authorization", sign)
		}
	}
	before := e.must(http.StatusOK, e.root, "GET", "/v1/accounts", nil, nil)
	sign := auth.SignQBox(e.root.AccessKey, e.root.SecretKey, "/v1/accounts", "", nil)
	if r := e.reqWith(e.root, "GET", "/v1/accounts", nil, qbox(sign)); r.Status != http.StatusOK {
		t.Fatalf("QBox GET: %d %s", r.Status, r.Body)
	}
	r := e.reqWith(e.root, "POST", "/v1/accounts", typed{auth.ContentTypeForm, ""}, qbox(sign))
	if r.Status != http.StatusUnauthorized || !strings.Contains(r.errMsg(), "Qiniu form") {
		t.Fatalf("the QBox GET signature replayed as an empty form POST: %d %s, want 401 naming the Qiniu form", r.Status, r.Body)
	}
	if after := e.must(http.StatusOK, e.root, "GET", "/v1/accounts", nil, nil); string(after.Body) != string(before.Body) {
		t.Fatalf("accounts changed:\n%s\n%s", before.Body, after.Body)
	}

	// A QBox form POST of a path no GET serves is still accepted.
	bob := e.user("bob", 0)
	path := "/v1/accounts/" + bob.ID + "/disable"
	r = e.reqWith(e.root, "POST", path, typed{auth.ContentTypeForm, ""},
		qbox(auth.SignQBox(e.root.AccessKey, e.root.SecretKey, path, auth.ContentTypeForm, nil)))
	if r.Status != http.StatusOK {
		t.Fatalf("QBox form POST %s: %d %s", path, r.Status, r.Body)
	}
}
