package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestUncleanPathRefused: a path with an empty, "." or ".." segment is a
// 400 with the API's JSON error, for every method, never the mux's
// redirect to the cleaned path: a browser follows a 307/301 of a PUT with
// its body, so a console upload to "x/../y" would have overwritten "y".
func TestUncleanPathRefused(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "bkt"}, nil)
	e.must(http.StatusOK, alice, "PUT", "/v1/objects/bkt/y", []byte("keep me"), nil)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct{ method, path, seg string }{
		{"PUT", "/v1/objects/bkt/x/../y", `".."`},
		{"PUT", "/v1/objects/bkt/x/%2E%2E/y", `".."`},
		{"PUT", "/v1/objects/bkt/./y", `"."`},
		{"PUT", "/v1/objects/bkt//y", "empty"},
		{"POST", "/v1/ufops/x/../../buckets", `".."`},
		{"DELETE", "/v1/objects/bkt/x/../y", `".."`},
		{"GET", "/v1/objects/bkt/x/../y", `".."`},
		{"HEAD", "/v1/objects/bkt/x/../y", `".."`},
		{"GET", "/console/../v1/buckets", `".."`},
		{"GET", "/v1//whoami", "empty"},
		{"GET", "/v1/whoami/.", `"."`},
		{"OPTIONS", "/v1/buckets/..", `".."`},
	} {
		req, err := http.NewRequest(tc.method, e.ts.URL+tc.path, strings.NewReader("overwritten"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var body struct{ Error string }
		_ = json.Unmarshal(b, &body)
		if res.StatusCode != http.StatusBadRequest || res.Header.Get("Location") != "" || res.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d Location %q %s, want a 400 JSON error", tc.method, tc.path, res.StatusCode, res.Header.Get("Location"), b)
			continue
		}
		if tc.method != "HEAD" && (!strings.Contains(body.Error, tc.seg) || !strings.Contains(body.Error, "segment")) {
			t.Errorf("%s %s: error %q does not name the %s segment", tc.method, tc.path, body.Error, tc.seg)
		}
	}
	if r := e.must(http.StatusOK, alice, "GET", "/v1/objects/bkt/y", nil, nil); string(r.Body) != "keep me" {
		t.Errorf("y = %q", r.Body)
	}
	// Clean paths, a trailing slash included, still route.
	e.must(http.StatusOK, alice, "GET", "/v1/whoami", nil, nil)
	e.must(http.StatusOK, alice, "GET", "/console/", nil, nil)
}
