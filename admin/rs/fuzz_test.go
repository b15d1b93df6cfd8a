package rs_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/internal/auth"
)

// noNetwork is a fetch transport that reaches nothing: a fuzzed fetch URL
// ("http://E") would otherwise be looked up and dialled for real, and a
// slow resolver stalls the fuzzing workers. It answers as a dial refused.
type noNetwork struct{}

func (noNetwork) RoundTrip(r *http.Request) (*http.Response, error) {
	return nil, fmt.Errorf("dial %s: %w", r.URL.Host, syscall.ECONNREFUSED)
}

// Any signed rs path or batch body gets a JSON reply with a status, never
// a panic or a hang. Fetches go nowhere (noNetwork).
func FuzzSignedOps(f *testing.F) {
	for _, s := range []string{
		"/stat/" + entry("photos", "a.txt"), "/move/" + entry("photos", "a.txt") + "/" + entry("photos", "b.txt") + "/force/true",
		"/copy/x/y/force", "/chgm/" + entry("photos", "a.txt") + "/mime/", "/deleteAfterDays//", "/list?bucket=photos&marker=eyJrIjoiYSJ9&delimiter=/",
		"/fetch/" + enc("http://127.0.0.1:1/") + "/to/" + enc("photos"), "/chtype/" + entry("photos", "a.txt") + "/type/1", "/batch",
	} {
		f.Add(s, "op="+s)
	}
	e := newEnv(f, func(c *rs.Config) { c.FetchTransport = noNetwork{} })
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
