package rs_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/doraproject/dora/internal/auth"
)

// Any signed rs path or batch body gets a JSON reply with a status, never
// a panic or a hang.
func FuzzSignedOps(f *testing.F) {
	for _, s := range []string{
		"/stat/" + entry("photos", "a.txt"), "/move/" + entry("photos", "a.txt") + "/" + entry("photos", "b.txt") + "/force/true",
		"/copy/x/y/force", "/chgm/" + entry("photos", "a.txt") + "/mime/", "/deleteAfterDays//", "/list?bucket=photos&marker=eyJrIjoiYSJ9&delimiter=/",
		"/fetch/" + enc("http://127.0.0.1:1/") + "/to/" + enc("photos"), "/chtype/" + entry("photos", "a.txt") + "/type/1", "/batch",
	} {
		f.Add(s, "op="+s)
	}
	e := newEnv(f, nil)
	e.object("photos", "a.txt", "A")
	f.Fuzz(func(t *testing.T, pathQuery, form string) {
		if !strings.HasPrefix(pathQuery, "/") {
			pathQuery = "/" + pathQuery
		}
		req, err := http.NewRequest(http.MethodPost, "http://admin.test"+pathQuery, strings.NewReader(form))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		auth.SignRequestQBox(req, alice.AccessKey, alice.SecretKey, []byte(form))
		if !e.h.Match(req) {
			return
		}
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		var v any
		if rec.Code < 200 || json.Unmarshal(rec.Body.Bytes(), &v) != nil {
			t.Fatalf("%s %q: %d %q", pathQuery, form, rec.Code, rec.Body.Bytes())
		}
	})
}
