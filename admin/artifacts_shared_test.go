package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/router/origin"
)

// TestArtifactServedByEveryAdmin: a build's result is kept in the shared
// objects store, so a second admin (same store and objects, its own
// build directory, as on another host) serves the artifact the runtime
// fetches; no account can create the bucket that holds it, and deleting
// the ufop deletes it.
func TestArtifactServedByEveryAdmin(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ShareBuilds = true })
	alice := e.user("alice", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	var b dora.Build
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "ubuntu", "true"))}, &b)
	if b = e.waitBuild(alice, "grepd", b.Number); b.Status != dora.BuildSuccess {
		t.Fatalf("build = %+v", b)
	}
	ctx := context.Background()
	key := artifactKey(b)
	if _, err := e.objs.Stat(ctx, dora.SystemBucket, key); err != nil {
		t.Fatalf("no shared copy of the build at %s/%s: %v", dora.SystemBucket, key, err)
	}

	// A second admin, whose builder never ran the build.
	bld2, err := build.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv2, err := New(Config{
		Store: e.st, Runtime: newFakeRuntime(), Objects: e.objs, Builder: bld2,
		PublicURL: "http://admin.test:8090", RootAK: testRootAK, RootSK: testRootSK, ShareBuilds: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv2.Close() })
	ts2 := httptest.NewServer(srv2.Handler())
	t.Cleanup(ts2.Close)
	if bld2.Has("grepd", b.Number) {
		t.Fatal("the second builder has the build")
	}
	signed, err := url.Parse(auth.DownloadURL("http://admin.test:8090/v1/artifacts/grepd/1.tar.gz", testRootAK, testRootSK, time.Now().Add(time.Hour).Unix()))
	if err != nil {
		t.Fatal(err)
	}
	get := func(base string) (int, []byte) {
		res, err := http.Get(base + signed.RequestURI())
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, body
	}
	code1, body1 := get(e.ts.URL)
	code2, body2 := get(ts2.URL)
	if code1 != 200 || code2 != 200 || string(body1) != string(body2) || len(body2) == 0 {
		t.Fatalf("artifact from the building admin %d (%d bytes), from the other %d (%d bytes), equal %v",
			code1, len(body1), code2, len(body2), string(body1) == string(body2))
	}

	// The bucket is reserved.
	r := e.req(alice, "POST", "/v1/buckets", map[string]any{"name": dora.SystemBucket})
	if r.Status != http.StatusBadRequest {
		t.Fatalf("creating bucket %s: %d %s", dora.SystemBucket, r.Status, r.Body)
	}

	// Deleting the ufop deletes the shared copy.
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/grepd", nil, nil)
	if _, err := e.objs.Stat(ctx, dora.SystemBucket, key); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("shared copy after the ufop's deletion: %v", err)
	}
	if code, _ := get(ts2.URL); code != http.StatusNotFound {
		t.Fatalf("artifact of a deleted ufop: %d", code)
	}
}
