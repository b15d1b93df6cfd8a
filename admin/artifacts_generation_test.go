package admin

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
)

// heldUploads is an ObjectStore whose artifact uploads, once armed, are
// read whole and then held until released; the held upload then completes
// whatever became of its caller's context, as an upload already sent to
// the store does.
type heldUploads struct {
	ObjectStore
	mu       sync.Mutex
	armed    bool
	entered  chan struct{} // closed when an armed upload is held
	release  chan struct{} // closed by the test to let it complete
	finished chan error    // the held upload's result
}

func newHeldUploads() *heldUploads {
	return &heldUploads{entered: make(chan struct{}), release: make(chan struct{}), finished: make(chan error, 1)}
}

func (h *heldUploads) Put(ctx context.Context, bucket, key string, r io.Reader, opts origin.PutOptions) (origin.Object, error) {
	h.mu.Lock()
	hold := h.armed && bucket == dora.SystemBucket && strings.HasPrefix(key, "artifacts/")
	if hold {
		h.armed = false
	}
	h.mu.Unlock()
	if !hold {
		return h.ObjectStore.Put(ctx, bucket, key, r, opts)
	}
	body, err := io.ReadAll(r)
	if err != nil {
		return origin.Object{}, fmt.Errorf("held upload %s: %w", key, err)
	}
	close(h.entered)
	<-h.release
	obj, err := h.ObjectStore.Put(context.WithoutCancel(ctx), bucket, key, bytes.NewReader(body), opts)
	h.finished <- err
	return obj, err
}

// filesOf reads a tar.gz into name → content.
// grepdArtifact fetches build n of grepd's artifact from this admin with a
// root-signed URL, as a runtime does, and returns the status and body.
func (e *env) grepdArtifact(n int) (int, []byte) {
	e.t.Helper()
	signed, err := url.Parse(auth.DownloadURL(fmt.Sprintf("http://admin.test:8090/v1/artifacts/grepd/%d.tar.gz", n),
		testRootAK, testRootSK, time.Now().Add(time.Hour).Unix()))
	if err != nil {
		e.t.Fatal(err)
	}
	res, err := http.Get(e.ts.URL + signed.RequestURI())
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return res.StatusCode, body
}

func filesOf(t *testing.T, tarGz []byte) map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tarGz))
	if err != nil {
		t.Fatalf("artifact is not gzip: %v", err)
	}
	tr := tar.NewReader(zr)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatalf("artifact is not a tar: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = string(b)
	}
}

// TestArtifactOfADeletedUfopLeavesTheNextOwnersAlone: alice's build 1 of
// grepd, on a first admin, is uploading its result to the shared objects
// store when alice deletes grepd through a second admin; bob registers
// grepd there and builds it (his build 1, also shared); then alice's
// upload completes. What bob's deployment fetches from any admin that
// does not hold the build itself is bob's result, and once alice's build
// has ended no shared copy of hers is left.
func TestArtifactOfADeletedUfopLeavesTheNextOwnersAlone(t *testing.T) {
	held := newHeldUploads()
	held.armed = true
	e := newEnv(t, func(c *Config) {
		c.ShareBuilds = true
		held.ObjectStore = c.Objects
		c.Objects = held
	})
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	var alices dora.Build
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "ubuntu", "echo alice > who"))}, &alices)
	select {
	case <-held.entered:
	case <-time.After(3 * time.Minute):
		t.Fatal("alice's build never uploaded its result")
	}

	// A second admin on the same store and objects, its own build
	// directory (another host).
	other := func() *env {
		bld, err := build.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		o := &env{t: t, dir: e.dir, st: e.st, rt: newFakeRuntime(), objs: e.objs, bld: bld, root: e.root, imgs: map[string][]Image{}}
		o.start(func(c *Config) { c.ShareBuilds = true })
		return o
	}
	e2 := other()
	e2.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/grepd", nil, nil)
	e2.ufop(bob, "grepd", dora.ModePrivate)
	var bobs dora.Build
	e2.must(http.StatusAccepted, bob, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "ubuntu", "echo bob > who"))}, &bobs)
	if bobs.Number != alices.Number {
		t.Fatalf("bob's first build is number %d, alice's was %d", bobs.Number, alices.Number)
	}
	if b := e2.waitBuild(bob, "grepd", bobs.Number); b.Status != dora.BuildSuccess {
		t.Fatalf("bob's build = %+v", b)
	}

	// Alice's upload completes; her build ends.
	close(held.release)
	if err := <-held.finished; err != nil {
		t.Fatalf("alice's held upload: %v", err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		e.srv.runningMu.Lock()
		n := len(e.srv.running)
		e.srv.runningMu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("alice's build still runs a minute after its upload completed")
		}
	}

	// Bob's deployment fetches the artifact URL from an admin that holds
	// no build of its own: the one reading the shared copy.
	e3 := other()
	status, body := e3.grepdArtifact(bobs.Number)
	if status != http.StatusOK {
		t.Fatalf("bob's artifact: %d %s", status, body)
	}
	if got := filesOf(t, body)["who"]; got != "bob\n" {
		t.Fatalf("bob's deployment would fetch a build whose who is %q, not bob's", got)
	}

	// Nothing of alice's is left in the shared store: only bob's build.
	ctx := context.Background()
	objs, err := e.objs.List(ctx, dora.SystemBucket, "artifacts/grepd/", 0)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := store.Get[dora.Build](ctx, e.st, store.BuildKey("grepd", bobs.Number))
	if err != nil {
		t.Fatal(err)
	}
	want := artifactKey(b)
	if len(objs) != 1 || objs[0].Key != want {
		var keys []string
		for _, o := range objs {
			keys = append(keys, o.Key)
		}
		t.Fatalf("shared copies of grepd: %q, want only bob's %s", keys, want)
	}
}

// heldList is an ObjectStore whose first listing of the shared copies,
// once armed, waits to be released before it lists.
type heldList struct {
	ObjectStore
	mu      sync.Mutex
	armed   bool
	entered chan struct{}
	release chan struct{}
}

func (h *heldList) List(ctx context.Context, bucket, prefix string, limit int) ([]origin.Object, error) {
	h.mu.Lock()
	hold := h.armed && bucket == dora.SystemBucket && strings.HasPrefix(prefix, "artifacts/")
	if hold {
		h.armed = false
	}
	h.mu.Unlock()
	if hold {
		close(h.entered)
		<-h.release
	}
	return h.ObjectStore.List(ctx, bucket, prefix, limit)
}

// TestUfopDeletionLeavesTheNextOwnersArtifacts: alice's DELETE of grepd
// has deleted its records and is about to remove its builds' shared
// copies when bob registers grepd and builds it; the deletion then
// removes alice's copy and leaves bob's, which every admin still serves.
func TestUfopDeletionLeavesTheNextOwnersArtifacts(t *testing.T) {
	held := &heldList{entered: make(chan struct{}), release: make(chan struct{})}
	e := newEnv(t, func(c *Config) {
		c.ShareBuilds = true
		held.ObjectStore = c.Objects
		c.Objects = held
	})
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	var alices dora.Build
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "ubuntu", "echo alice > who"))}, &alices)
	if alices = e.waitBuild(alice, "grepd", alices.Number); alices.Status != dora.BuildSuccess {
		t.Fatalf("alice's build = %+v", alices)
	}
	ctx := context.Background()
	if _, err := e.objs.Stat(ctx, dora.SystemBucket, artifactKey(alices)); err != nil {
		t.Fatalf("alice's shared copy: %v", err)
	}

	held.mu.Lock()
	held.armed = true
	held.mu.Unlock()
	deleted := make(chan resp, 1)
	go func() { deleted <- e.req(alice, "DELETE", "/v1/ufops/grepd", nil) }()
	select {
	case <-held.entered:
	case r := <-deleted:
		t.Fatalf("DELETE ended (%d %s) without removing the shared copies", r.Status, r.Body)
	}
	e.ufop(bob, "grepd", dora.ModePrivate)
	var bobs dora.Build
	e.must(http.StatusAccepted, bob, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "ubuntu", "echo bob > who"))}, &bobs)
	if bobs = e.waitBuild(bob, "grepd", bobs.Number); bobs.Status != dora.BuildSuccess || bobs.Number != alices.Number {
		t.Fatalf("bob's build = %+v, alice's was number %d", bobs, alices.Number)
	}
	close(held.release)
	if r := <-deleted; r.Status != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", r.Status, r.Body)
	}

	if _, err := e.objs.Stat(ctx, dora.SystemBucket, artifactKey(alices)); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("alice's shared copy after her ufop's deletion: %v", err)
	}
	if _, err := e.objs.Stat(ctx, dora.SystemBucket, artifactKey(bobs)); err != nil {
		t.Fatalf("bob's shared copy after the deletion of alice's ufop of the same name: %v", err)
	}
}

// TestArtifactRecordedBeforeArtifactIDs: a build recorded before builds
// had an ArtifactID (its record names none) keeps its shared copy at the
// key of that time, artifacts/<ufop>/<n>.tar.gz, from which an admin that
// does not hold the build serves it; the ufop's deletion removes it.
func TestArtifactRecordedBeforeArtifactIDs(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ShareBuilds = true })
	alice := e.user("alice", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	ctx := context.Background()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	old := `{"ufop":"grepd","number":1,"status":"SUCCESS","image":"grepd.v1","base":"ubuntu","run":"./run.sh","created":"` + now + `","finished":"` + now + `"}`
	if _, err := e.st.Put(ctx, store.BuildKey("grepd", 1), []byte(old)); err != nil {
		t.Fatal(err)
	}
	const key = "artifacts/grepd/1.tar.gz"
	if _, err := e.objs.Put(ctx, dora.SystemBucket, key, bytes.NewReader(tarGz(t, map[string]string{"who": "alice\n"})), origin.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, _, err := store.Get[dora.Build](ctx, e.st, store.BuildKey("grepd", 1)); err != nil || artifactKey(b) != key {
		t.Fatalf("the record written before ArtifactIDs names %q (%v), want %s", artifactKey(b), err, key)
	}
	signed, err := url.Parse(auth.DownloadURL("http://admin.test:8090/v1/artifacts/grepd/1.tar.gz", testRootAK, testRootSK, time.Now().Add(time.Hour).Unix()))
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.Get(e.ts.URL + signed.RequestURI())
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("artifact of a build recorded before ArtifactIDs: %d %s %v", res.StatusCode, body, err)
	}
	if got := filesOf(t, body)["who"]; got != "alice\n" {
		t.Fatalf("artifact of a build recorded before ArtifactIDs: who is %q", got)
	}
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/grepd", nil, nil)
	if _, err := e.objs.Stat(ctx, dora.SystemBucket, key); !errors.Is(err, origin.ErrNotFound) {
		t.Fatalf("shared copy after the ufop's deletion: %v", err)
	}
}

// leftBehind: alice's build 1 of grepd succeeded on a first admin (e),
// which keeps its files; alice deleted grepd through a second admin
// (which removes only its own files), and bob registered grepd and built
// it there: his build 1 (bobs), whose shared copy every admin can serve.
func leftBehind(t *testing.T) (e *env, bob dora.Account, bobs dora.Build) {
	t.Helper()
	e = newEnv(t, func(c *Config) { c.ShareBuilds = true })
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	var alices dora.Build
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "ubuntu", "echo alice > who"))}, &alices)
	if alices = e.waitBuild(alice, "grepd", alices.Number); alices.Status != dora.BuildSuccess {
		t.Fatalf("alice's build = %+v", alices)
	}
	bld2, err := build.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e2 := &env{t: t, dir: e.dir, st: e.st, rt: newFakeRuntime(), objs: e.objs, bld: bld2, root: e.root, imgs: map[string][]Image{}}
	e2.start(func(c *Config) { c.ShareBuilds = true })
	e2.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/grepd", nil, nil)
	e2.ufop(bob, "grepd", dora.ModePrivate)
	e2.must(http.StatusAccepted, bob, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "ubuntu", "echo bob > who"))}, &bobs)
	if bobs = e2.waitBuild(bob, "grepd", bobs.Number); bobs.Status != dora.BuildSuccess || bobs.Number != alices.Number {
		t.Fatalf("bob's build = %+v, alice's was number %d", bobs, alices.Number)
	}
	return e, bob, bobs
}

// TestLocalBuildOfADeletedUfopIsNotTheNextOwners: an admin that keeps
// the files of alice's build 1 of grepd, deleted through another admin,
// takes none of them for bob's build 1 of the grepd he registered since:
// it serves bob's artifact (from the shared copy), gives its runtime no
// directory holding alice's result for bob's deployment, shows no line of
// alice's log as bob's, and builds nothing of bob's on top of alice's
// result.
func TestLocalBuildOfADeletedUfopIsNotTheNextOwners(t *testing.T) {
	t.Run("artifact", func(t *testing.T) {
		e, _, bobs := leftBehind(t)
		status, body := e.grepdArtifact(bobs.Number)
		if status != http.StatusOK {
			t.Fatalf("bob's artifact from the first admin: %d %s", status, body)
		}
		if got := filesOf(t, body)["who"]; got != "bob\n" {
			t.Fatalf("the first admin serves for bob's build a result whose who is %q", got)
		}
	})
	t.Run("deployment", func(t *testing.T) {
		e, bob, bobs := leftBehind(t)
		e.must(http.StatusOK, bob, "POST", "/v1/ufops/grepd/version", map[string]any{"build": bobs.Number}, nil)
		var d dora.Deployment
		e.must(http.StatusOK, bob, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 1}, &d)
		spec, ok := e.rt.lastSpec(d.ID)
		if !ok || spec.Package == nil {
			t.Fatalf("spec = %+v", spec)
		}
		if who, err := os.ReadFile(filepath.Join(spec.Package.Dir, "who")); err == nil && string(who) != "bob\n" {
			t.Fatalf("bob's deployment through the first admin runs %s, whose who is %q", spec.Package.Dir, who)
		}
	})
	t.Run("log", func(t *testing.T) {
		e, bob, bobs := leftBehind(t)
		if r := e.req(bob, "GET", fmt.Sprintf("/v1/ufops/grepd/builds/%d/log", bobs.Number), nil); r.Status != http.StatusOK || strings.Contains(string(r.Body), "alice") {
			t.Fatalf("bob's build log from the first admin: %d %q", r.Status, r.Body)
		}
	})
	t.Run("base", func(t *testing.T) {
		e, bob, bobs := leftBehind(t)
		r := e.req(bob, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, fmt.Sprintf("grepd.v%d", bobs.Number), "cat who > was"))})
		if r.Status != http.StatusAccepted {
			if r.Status != http.StatusConflict {
				t.Fatalf("bob's build on top of his build %d through the first admin: %d %s", bobs.Number, r.Status, r.Body)
			}
			return
		}
		var b dora.Build
		if err := json.Unmarshal(r.Body, &b); err != nil {
			t.Fatal(err)
		}
		if b = e.waitBuild(bob, "grepd", b.Number); b.Status == dora.BuildSuccess {
			if was, err := os.ReadFile(filepath.Join(e.bld.Dir("grepd", b.Number), "was")); err == nil && string(was) != "bob\n" {
				t.Fatalf("bob's build on top of his build %d ran on a base whose who is %q", bobs.Number, was)
			}
		}
	})
}
