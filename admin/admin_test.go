package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/store"
)

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	disabled := e.user("mallory", 0)
	e.must(http.StatusOK, e.root, "POST", "/v1/accounts/"+disabled.ID+"/disable", nil, nil)

	cases := []struct {
		name string
		mod  func(*http.Request)
		acct dora.Account
		want int
	}{
		{"qiniu signature", nil, alice, http.StatusOK},
		{"qbox signature", func(r *http.Request) {
			r.Header.Del("X-Qiniu-Date")
			auth.SignRequestQBox(r, alice.AccessKey, alice.SecretKey, nil)
		}, alice, http.StatusOK},
		{"unsigned", func(r *http.Request) { r.Header.Del("Authorization") }, alice, http.StatusUnauthorized},
		{"garbage header", func(r *http.Request) { r.Header.Set("Authorization", "Bearer x") }, alice, http.StatusUnauthorized},
		{"tampered query", func(r *http.Request) { r.URL.RawQuery = "x=1" }, alice, http.StatusUnauthorized},
		{"wrong secret", func(r *http.Request) {
			auth.SignRequest(r, alice.AccessKey, "not-the-secret-key-at-all-000000000000", nil, time.Now())
		}, alice, http.StatusUnauthorized},
		{"unknown ak", func(r *http.Request) {
			auth.SignRequest(r, "unknownAccessKey0000000000", alice.SecretKey, nil, time.Now())
		}, alice, http.StatusUnauthorized},
		{"stale date", func(r *http.Request) {
			auth.SignRequest(r, alice.AccessKey, alice.SecretKey, nil, time.Now().Add(-time.Hour))
		}, alice, http.StatusUnauthorized},
		{"disabled account", nil, disabled, http.StatusUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.reqWith(tc.acct, "GET", "/v1/whoami", nil, tc.mod)
			if r.Status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.want, r.Body)
			}
			if r.Status != http.StatusOK && r.errMsg() == "" {
				t.Errorf("error reply without a JSON error: %s", r.Body)
			}
		})
	}

	t.Run("tampered JSON body", func(t *testing.T) {
		r := e.reqWith(alice, "POST", "/v1/ufops", map[string]any{"name": "tamper1"}, func(r *http.Request) {
			body := strings.NewReader(`{"name":"tamper2"}`)
			r.Body = io.NopCloser(body)
			r.ContentLength = int64(body.Len())
		})
		if r.Status != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401: %s", r.Status, r.Body)
		}
	})
	t.Run("whoami hides the secret", func(t *testing.T) {
		var a dora.Account
		e.must(http.StatusOK, alice, "GET", "/v1/whoami", nil, &a)
		if a.ID != alice.ID || a.SecretKey != "" {
			t.Fatalf("whoami = %+v", a)
		}
	})
	t.Run("root only", func(t *testing.T) {
		for _, p := range []struct{ method, path string }{
			{"POST", "/v1/accounts"}, {"GET", "/v1/accounts"}, {"POST", "/v1/accounts/" + alice.ID + "/disable"},
		} {
			if r := e.req(alice, p.method, p.path, nil); r.Status != http.StatusForbidden {
				t.Errorf("%s %s by a user: %d, want 403", p.method, p.path, r.Status)
			}
		}
	})
	t.Run("unknown route is JSON 404 with reqid", func(t *testing.T) {
		r := e.req(alice, "GET", "/v1/nope", nil)
		if r.Status != http.StatusNotFound || r.errMsg() == "" {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
		r = e.req(alice, "PATCH", "/v1/whoami", nil)
		if r.Status != http.StatusMethodNotAllowed || r.errMsg() == "" {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
	})
	t.Run("json body cap", func(t *testing.T) {
		big := map[string]string{"name": strings.Repeat("x", MaxJSONBytes+10)}
		if r := e.req(e.root, "POST", "/v1/accounts", big); r.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
	})
}

func TestAccounts(t *testing.T) {
	e := newEnv(t)
	var a dora.Account
	e.must(http.StatusCreated, e.root, "POST", "/v1/accounts", map[string]any{"name": "alice", "instanceLimit": 7}, &a)
	if !regexp.MustCompile(`^[1-9][0-9]{9}$`).MatchString(a.ID) {
		t.Errorf("id %q is not 10 digits", a.ID)
	}
	if len(a.AccessKey) < 24 || len(a.AccessKey) > 40 || !validKeyChars(a.AccessKey) {
		t.Errorf("ak %q", a.AccessKey)
	}
	if len(a.SecretKey) != 40 || !validKeyChars(a.SecretKey) {
		t.Errorf("sk %q", a.SecretKey)
	}
	if a.InstanceLimit != 7 || a.Root || a.Disabled {
		t.Errorf("account %+v", a)
	}
	for _, bad := range []map[string]any{{"instanceLimit": -1}, {"instanceLimit": MaxInstanceLimit + 1}, {"name": strings.Repeat("n", 65)}} {
		if r := e.req(e.root, "POST", "/v1/accounts", bad); r.Status != http.StatusBadRequest {
			t.Errorf("create %v: %d, want 400", bad, r.Status)
		}
	}
	var list []dora.Account
	e.must(http.StatusOK, e.root, "GET", "/v1/accounts", nil, &list)
	if len(list) != 2 {
		t.Fatalf("list = %+v", list)
	}
	for _, x := range list {
		if x.SecretKey != "" {
			t.Errorf("list leaks the sk of %s", x.ID)
		}
	}
	e.must(http.StatusOK, a, "GET", "/v1/whoami", nil, nil)
	var d dora.Account
	e.must(http.StatusOK, e.root, "POST", "/v1/accounts/"+a.ID+"/disable", nil, &d)
	if !d.Disabled {
		t.Fatal("not disabled")
	}
	e.must(http.StatusUnauthorized, a, "GET", "/v1/whoami", nil, nil)
	e.must(http.StatusNotFound, e.root, "POST", "/v1/accounts/1234567890/disable", nil, nil)
	e.must(http.StatusBadRequest, e.root, "POST", "/v1/accounts/"+e.root.ID+"/disable", nil, nil)
}

func TestEnsureRoot(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	again, err := EnsureRoot(ctx, e.st, testRootAK, testRootSK)
	if err != nil || again.ID != e.root.ID {
		t.Fatalf("second EnsureRoot = %+v, %v", again, err)
	}
	newSK := "anotherRootSecret0123456789"
	rotated, err := EnsureRoot(ctx, e.st, testRootAK, newSK)
	if err != nil || rotated.ID != e.root.ID || rotated.SecretKey != newSK {
		t.Fatalf("rotated = %+v, %v", rotated, err)
	}
	e.must(http.StatusUnauthorized, e.root, "GET", "/v1/whoami", nil, nil)
	e.must(http.StatusOK, rotated, "GET", "/v1/whoami", nil, nil)
	for _, bad := range [][2]string{{"", testRootSK}, {"short", testRootSK}, {testRootAK, ""}, {"bad ak with spaces!!", testRootSK}} {
		if _, err := EnsureRoot(ctx, e.st, bad[0], bad[1]); err == nil {
			t.Errorf("EnsureRoot(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

func TestRegionsFlavorsHealthMetrics(t *testing.T) {
	e := newEnv(t)
	var regions []Region
	e.must(http.StatusOK, e.root, "GET", "/v1/regions", nil, &regions)
	if len(regions) != 2 || regions[0].Name != "z0" {
		t.Fatalf("regions %+v", regions)
	}
	var flavors []dora.Flavor
	e.must(http.StatusOK, e.root, "GET", "/v1/flavors", nil, &flavors)
	if len(flavors) != len(dora.DefaultFlavors()) {
		t.Fatalf("flavors %+v", flavors)
	}
	r := e.req(dora.Account{}, "GET", "/healthz", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("healthz %d", r.Status)
	}
	r = e.req(dora.Account{}, "GET", "/metrics", nil)
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), "dora_admin_requests_total") {
		t.Fatalf("metrics %d %s", r.Status, r.Body)
	}
	if !strings.Contains(string(r.Body), `route="GET /v1/regions"`) {
		t.Errorf("metrics lack the route label: %s", r.Body)
	}
}

func TestBasicAuthenticator(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	check := BasicAuthenticator(e.st)
	ctx := context.Background()
	if a, err := check(ctx, alice.AccessKey, alice.SecretKey); err != nil || a.ID != alice.ID {
		t.Fatalf("good credentials: %+v, %v", a, err)
	}
	for _, bad := range [][2]string{{alice.AccessKey, "wrong"}, {"nobody", alice.SecretKey}, {"", ""}} {
		if _, err := check(ctx, bad[0], bad[1]); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("check(%q, %q) = %v", bad[0], bad[1], err)
		}
	}
	e.must(http.StatusOK, e.root, "POST", "/v1/accounts/"+alice.ID+"/disable", nil, nil)
	if _, err := check(ctx, alice.AccessKey, alice.SecretKey); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("disabled account accepted: %v", err)
	}
}

// QBox signs neither the method nor a JSON body: a QBox-signed GET replayed
// as DELETE must not delete, and QBox is refused for PUT, DELETE and
// non-form POSTs with a message pointing at the Qiniu form.
func TestQBoxRefusedWhereItDoesNotCoverTheRequest(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "replayme"}, nil)

	qbox := func(r *http.Request) {
		r.Header.Del("X-Qiniu-Date")
		auth.SignRequestQBox(r, alice.AccessKey, alice.SecretKey, nil)
	}
	if r := e.reqWith(alice, "GET", "/v1/buckets/replayme", nil, qbox); r.Status != http.StatusOK {
		t.Fatalf("QBox GET: %d %s", r.Status, r.Body)
	}
	// The signed GET, replayed as DELETE.
	r := e.reqWith(alice, "DELETE", "/v1/buckets/replayme", nil, func(r *http.Request) {
		r.Header.Del("X-Qiniu-Date")
		r.Header.Set("Authorization", auth.SignQBox(alice.AccessKey, alice.SecretKey, "/v1/buckets/replayme", "", nil))
	})
	if r.Status != http.StatusUnauthorized || !strings.Contains(r.errMsg(), "Qiniu form") {
		t.Fatalf("QBox DELETE: %d %s, want 401 naming the Qiniu form", r.Status, r.Body)
	}
	e.must(http.StatusOK, alice, "GET", "/v1/buckets/replayme", nil, nil)

	for _, tc := range []struct {
		method, path string
		body         any
	}{
		{"PUT", "/v1/objects/replayme/a.txt", []byte("data")},
		{"POST", "/v1/ufops", map[string]any{"name": "qboxufop"}},
		{"POST", "/v1/buckets/replayme/domains", typed{"text/plain", `{"domain":"x.example.com"}`}},
		{"POST", "/v1/ufops/qboxufop/builds", typed{"application/x-www-form-urlencoded", "a=1"}},
	} {
		r := e.reqWith(alice, tc.method, tc.path, tc.body, qbox)
		if r.Status != http.StatusUnauthorized || !strings.Contains(r.errMsg(), "Qiniu form") {
			t.Errorf("QBox %s %s: %d %s, want 401 naming the Qiniu form", tc.method, tc.path, r.Status, r.Body)
		}
	}
	if _, err := e.objs.Stat(context.Background(), "replayme", "a.txt"); err == nil {
		t.Fatal("a QBox PUT stored an object")
	}
	if r := e.req(alice, "GET", "/v1/ufops/qboxufop", nil); r.Status != http.StatusNotFound {
		t.Fatalf("a QBox JSON POST registered a ufop: %d %s", r.Status, r.Body)
	}
}

// Handlers act only on a body the signature covers: media types are
// compared bare on both sides, and an unsigned body is refused.
func TestOnlySignedBodiesAreUsed(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	signWith := func(body string) func(*http.Request) {
		return func(r *http.Request) {
			auth.SignRequest(r, alice.AccessKey, alice.SecretKey, []byte(body), time.Now())
		}
	}
	const charset = "application/json; charset=utf-8"

	// JSON with a charset is signed like bare JSON.
	body := `{"name":"charset1"}`
	if r := e.reqWith(alice, "POST", "/v1/buckets", typed{charset, body}, signWith(body)); r.Status != http.StatusCreated {
		t.Fatalf("signed JSON with a charset: %d %s", r.Status, r.Body)
	}
	// ... so a body swapped after signing is caught.
	r := e.reqWith(alice, "POST", "/v1/buckets", typed{charset, `{"name":"swapped1"}`}, signWith(`{"name":"charset2"}`))
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("swapped JSON body with a charset: %d %s, want 401", r.Status, r.Body)
	}
	// A text/plain body is not signed: refused, not decoded.
	body = `{"name":"plain1"}`
	r = e.reqWith(alice, "POST", "/v1/buckets", typed{"text/plain", body}, signWith(""))
	if r.Status != http.StatusBadRequest || !strings.Contains(r.errMsg(), "application/json") {
		t.Fatalf("text/plain body: %d %s, want 400", r.Status, r.Body)
	}
	// A QBox-signed GET with a JSON body: the body is not covered.
	r = e.reqWith(alice, "GET", "/v1/buckets", typed{"application/json", `{"x":1}`}, func(r *http.Request) {
		r.Header.Del("X-Qiniu-Date")
		auth.SignRequestQBox(r, alice.AccessKey, alice.SecretKey, nil)
	})
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("QBox GET with a JSON body: %d %s, want 401", r.Status, r.Body)
	}
	for _, name := range []string{"swapped1", "charset2", "plain1"} {
		if r := e.req(alice, "GET", "/v1/buckets/"+name, nil); r.Status != http.StatusNotFound {
			t.Errorf("bucket %s exists: %d %s", name, r.Status, r.Body)
		}
	}
}

// Changing the root keys never leaves a second root: a new AK moves to the
// root account (which keeps its buckets), an AK of an existing account
// makes it the root and demotes the former one; old root keys stop working.
func TestEnsureRootWithNewKeysLeavesOneRoot(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.must(http.StatusCreated, e.root, "POST", "/v1/buckets", map[string]any{"name": "rootbucket"}, nil)
	roots := func() []dora.Account {
		t.Helper()
		accts, _, err := store.List[dora.Account](ctx, e.st, store.PrefixAccounts)
		if err != nil {
			t.Fatal(err)
		}
		var out []dora.Account
		for _, a := range accts {
			if a.Root {
				out = append(out, a)
			}
		}
		return out
	}

	// A new AK: the same root account, new keys.
	moved, err := EnsureRoot(ctx, e.st, "newRootAccessKey000000001", "newRootSecretKey000000000001")
	if err != nil {
		t.Fatal(err)
	}
	if moved.ID != e.root.ID || !moved.Root || moved.AccessKey != "newRootAccessKey000000001" {
		t.Fatalf("moved root = %+v", moved)
	}
	if rs := roots(); len(rs) != 1 || rs[0].ID != moved.ID {
		t.Fatalf("roots after a new AK: %+v", rs)
	}
	e.must(http.StatusUnauthorized, e.root, "GET", "/v1/whoami", nil, nil)
	e.must(http.StatusOK, moved, "GET", "/v1/buckets/rootbucket", nil, nil)
	e.must(http.StatusCreated, moved, "POST", "/v1/accounts", map[string]any{"name": "x"}, nil)
	if _, err := e.st.Get(ctx, store.AccessKeyKey(testRootAK)); err == nil {
		t.Error("the old root AK is still mapped")
	}

	// The AK of an existing account: it becomes the root, the former root
	// is demoted and disabled.
	e.root = moved
	bob := e.user("bob", 0)
	promoted, err := EnsureRoot(ctx, e.st, bob.AccessKey, "bobIsRootNowSecret00000001")
	if err != nil {
		t.Fatal(err)
	}
	if promoted.ID != bob.ID || !promoted.Root {
		t.Fatalf("promoted = %+v", promoted)
	}
	if rs := roots(); len(rs) != 1 || rs[0].ID != bob.ID {
		t.Fatalf("roots after promoting bob: %+v", rs)
	}
	e.must(http.StatusUnauthorized, moved, "GET", "/v1/whoami", nil, nil)
	e.must(http.StatusOK, promoted, "GET", "/v1/accounts", nil, nil)
	// Idempotent.
	if again, err := EnsureRoot(ctx, e.st, bob.AccessKey, "bobIsRootNowSecret00000001"); err != nil || again.ID != bob.ID {
		t.Fatalf("again = %+v, %v", again, err)
	}
}
