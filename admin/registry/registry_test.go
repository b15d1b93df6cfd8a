package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/bolt/bolttest"
)

// accounts: AK → (SK, id)
var accounts = map[string][2]string{
	"AKalice": {"SKalice", "1001"},
	"AKbob":   {"SKbob", "2002"},
}

func authenticate(_ context.Context, user, pass string) (string, error) {
	a, ok := accounts[user]
	if !ok || a[0] != pass {
		return "", errors.New("bad credentials")
	}
	return a[1], nil
}

type env struct {
	dir   string
	st    store.Store
	srv   *httptest.Server
	host  string
	swap  func(h http.Handler)
	cfg   Config
	start func(t *testing.T)
	reg   *Registry // the running registry
}

// newEnv starts the registry over a temp dir and a bolt store; start()
// makes a fresh registry over the same dir and store (a restart).
func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	dir := t.TempDir()
	st := bolttest.Open(t, dir)
	e := &env{dir: dir, st: st}
	var current http.Handler
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { current.ServeHTTP(w, r) }))
	t.Cleanup(e.srv.Close)
	e.host = strings.TrimPrefix(e.srv.URL, "http://")
	e.cfg = Config{Dir: filepath.Join(dir, "registry"), Store: st, Authenticate: authenticate,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Context: t.Context()}
	if mod != nil {
		mod(&e.cfg)
	}
	e.start = func(t *testing.T) {
		h, err := New(e.cfg)
		if err != nil {
			t.Fatal(err)
		}
		current = h
		e.reg = h.(*Registry)
	}
	e.start(t)
	return e
}

func (e *env) ref(t *testing.T, s string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(e.host + "/" + s)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

func basic(ak string) remote.Option {
	return remote.WithAuth(&authn.Basic{Username: ak, Password: accounts[ak][0]})
}

func TestPushPullRestart(t *testing.T) {
	e := newEnv(t, nil)
	img, err := random.Image(4096, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref := e.ref(t, "1001/ufopdemo:v1")
	if err := remote.Write(ref, img, basic("AKalice")); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T) {
		t.Helper()
		got, err := remote.Image(ref, basic("AKalice"))
		if err != nil {
			t.Fatal(err)
		}
		checkLayers(t, got)
		gd, _ := got.Digest()
		wd, _ := img.Digest()
		if gd != wd {
			t.Fatalf("pulled %s, pushed %s", gd, wd)
		}
	}
	check(t)
	imgs, err := ListImages(context.Background(), e.st, "1001")
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := img.Digest()
	if len(imgs) != 1 || imgs[0].Name != "ufopdemo:v1" || imgs[0].Digest != wd.String() || imgs[0].Kind != "oci" || imgs[0].Created.IsZero() {
		t.Fatalf("ListImages = %+v", imgs)
	}
	if other, _ := ListImages(context.Background(), e.st, "2002"); len(other) != 0 {
		t.Fatalf("bob sees %+v", other)
	}

	// A restart keeps manifests and blobs.
	e.start(t)
	check(t)
	tags, err := remote.List(ref.Context(), basic("AKalice"))
	if err != nil || len(tags) != 1 || tags[0] != "v1" {
		t.Fatalf("tags after restart %v, %v", tags, err)
	}
}

func TestIndexSurvivesRestart(t *testing.T) {
	e := newEnv(t, nil)
	idx, err := random.Index(1024, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref := e.ref(t, "1001/multi:v1")
	if err := remote.WriteIndex(ref, idx, basic("AKalice")); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	got, err := remote.Index(ref, basic("AKalice"))
	if err != nil {
		t.Fatal(err)
	}
	im, err := got.IndexManifest()
	if err != nil || len(im.Manifests) != 2 {
		t.Fatalf("index after restart: %v, %v", im, err)
	}
	for _, d := range im.Manifests {
		child, err := got.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkLayers(t, child)
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name, user, pass string
		status           int
	}{
		{"none", "", "", 401},
		{"wrong password", "AKalice", "nope", 401},
		{"unknown user", "AKeve", "x", 401},
		{"ok", "AKalice", "SKalice", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.srv.URL+"/v2/", nil)
			if tt.user != "" {
				req.SetBasicAuth(tt.user, tt.pass)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
				t.Fatalf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	// anonymous pull of a repository is refused too
	resp, err := http.Get(e.srv.URL + "/v2/1001/ufopdemo/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("anonymous manifest GET: %d", resp.StatusCode)
	}
}

func TestOtherAccountsRepositories(t *testing.T) {
	e := newEnv(t, nil)
	img, _ := random.Image(1024, 1)
	alice := e.ref(t, "1001/private:v1")
	if err := remote.Write(alice, img, basic("AKalice")); err != nil {
		t.Fatal(err)
	}
	// bob may neither pull alice's image nor push into her namespace
	if _, err := remote.Image(alice, basic("AKbob")); err == nil || !strings.Contains(err.Error(), "403") && !strings.Contains(err.Error(), "DENIED") {
		t.Fatalf("bob pulling alice's image: %v", err)
	}
	if err := remote.Write(e.ref(t, "1001/evil:v1"), img, basic("AKbob")); err == nil {
		t.Fatal("bob pushed into alice's namespace")
	}
	// knowing a layer's digest does not let bob read it through his own repository
	layers, _ := img.Layers()
	d, _ := layers[0].Digest()
	req, _ := http.NewRequest("GET", e.srv.URL+"/v2/2002/steal/blobs/"+d.String(), nil)
	req.SetBasicAuth("AKbob", "SKbob")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("bob reading alice's blob by digest: %d", resp.StatusCode)
	}
	// bob can push the same image under his own account (the blob is shared on disk)
	if err := remote.Write(e.ref(t, "2002/copy:v1"), img, basic("AKbob")); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Image(e.ref(t, "2002/copy:v1"), basic("AKbob")); err != nil {
		t.Fatal(err)
	}
}

func do(t *testing.T, method, url string, body []byte, hdr map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.SetBasicAuth("AKalice", "SKalice")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestChunkedUploadAndErrors(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBlobBytes = 64; c.MaxManifestBytes = 128 })
	base := e.srv.URL + "/v2/1001/chunks/blobs/uploads/"
	part1, part2 := []byte("hello, "), []byte("registry")
	all := append(append([]byte{}, part1...), part2...)

	resp := do(t, "POST", base, nil, nil)
	if resp.StatusCode != 202 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	loc := e.srv.URL + resp.Header.Get("Location")
	resp = do(t, "PATCH", loc, part1, map[string]string{"Content-Range": "0-6"})
	if resp.StatusCode != 202 || resp.Header.Get("Range") != "0-6" {
		t.Fatalf("PATCH 1: %d %q", resp.StatusCode, resp.Header.Get("Range"))
	}
	// a chunk that does not continue the upload
	if resp = do(t, "PATCH", loc, part2, map[string]string{"Content-Range": "3-10"}); resp.StatusCode != 416 {
		t.Fatalf("PATCH out of order: %d", resp.StatusCode)
	}
	resp = do(t, "PATCH", loc, part2, map[string]string{"Content-Range": fmt.Sprintf("7-%d", len(all)-1)})
	if resp.StatusCode != 202 {
		t.Fatalf("PATCH 2: %d", resp.StatusCode)
	}
	resp = do(t, "PUT", loc+"?digest="+digestOf(all), nil, nil)
	if resp.StatusCode != 201 || resp.Header.Get("Docker-Content-Digest") != digestOf(all) {
		t.Fatalf("PUT: %d", resp.StatusCode)
	}
	resp = do(t, "GET", e.srv.URL+"/v2/1001/chunks/blobs/"+digestOf(all), nil, nil)
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Equal(got, all) {
		t.Fatalf("GET blob: %d %q", resp.StatusCode, got)
	}

	tests := []struct {
		name   string
		method string
		url    string
		body   []byte
		hdr    map[string]string
		status int
	}{
		{"digest mismatch", "POST", base + "?digest=" + digestOf([]byte("other")), []byte("content"), nil, 400},
		{"bad digest", "POST", base + "?digest=md5:abc", []byte("x"), nil, 400},
		{"too large", "POST", base + "?digest=" + digestOf(make([]byte, 65)), make([]byte, 65), nil, 413},
		{"unknown upload", "PATCH", base + "deadbeef", []byte("x"), nil, 404},
		{"manifest too large", "PUT", e.srv.URL + "/v2/1001/chunks/manifests/v1", make([]byte, 129),
			map[string]string{"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, 413},
		{"bad repository", "GET", e.srv.URL + "/v2/1001/UPPER/tags/list", nil, nil, 400},
		{"no owner", "GET", e.srv.URL + "/v2/chunks/tags/list", nil, nil, 400},
		{"other account", "POST", e.srv.URL + "/v2/2002/x/blobs/uploads/", nil, nil, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if resp := do(t, tt.method, tt.url, tt.body, tt.hdr); resp.StatusCode != tt.status {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
		})
	}
	// the monolithic upload works when the digest matches
	if resp := do(t, "POST", base+"?digest="+digestOf([]byte("mono")), []byte("mono"), nil); resp.StatusCode != 201 {
		t.Fatalf("monolithic: %d", resp.StatusCode)
	}
}

func TestCatalogAndDelete(t *testing.T) {
	e := newEnv(t, nil)
	img, _ := random.Image(512, 1)
	for _, r := range []string{"1001/a:v1", "1001/a:v2", "1001/b:v1"} {
		if err := remote.Write(e.ref(t, r), img, basic("AKalice")); err != nil {
			t.Fatal(err)
		}
	}
	resp := do(t, "GET", e.srv.URL+"/v2/_catalog", nil, nil)
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), `"repositories":["1001/a","1001/b"]`) {
		t.Fatalf("catalog %s", b)
	}
	if err := remote.Delete(e.ref(t, "1001/a:v2"), basic("AKalice")); err != nil {
		t.Fatal(err)
	}
	imgs, _ := ListImages(context.Background(), e.st, "1001")
	var names []string
	for _, i := range imgs {
		names = append(names, i.Name)
	}
	if strings.Join(names, ",") != "a:v1,b:v1" {
		t.Fatalf("after delete: %v", names)
	}
	e.start(t)
	if _, err := remote.Image(e.ref(t, "1001/a:v2"), basic("AKalice")); err == nil {
		t.Fatal("a deleted tag came back after a restart")
	}
	if _, err := remote.Image(e.ref(t, "1001/a:v1"), basic("AKalice")); err != nil {
		t.Fatal(err)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New with an empty config succeeded")
	}
}

func TestParseRoute(t *testing.T) {
	tests := []struct {
		path string
		want route
	}{
		{"/v2/", route{kind: "base"}},
		{"/v2/_catalog", route{kind: "catalog"}},
		{"/v2/1/a/blobs/uploads/", route{kind: "upload", repo: "1/a"}},
		{"/v2/1/a/b/blobs/uploads/xyz", route{kind: "upload", repo: "1/a/b", target: "xyz"}},
		{"/v2/1/blobs/blobs/sha256:ab", route{kind: "blob", repo: "1/blobs", target: "sha256:ab"}},
		{"/v2/1/a/manifests/v1", route{kind: "manifest", repo: "1/a", target: "v1"}},
		{"/v2/1/a/tags/list", route{kind: "tags", repo: "1/a"}},
		{"/v2/1/a/other", route{kind: "other"}},
	}
	for _, tt := range tests {
		got, ok := parseRoute(tt.path)
		if !ok || got != tt.want {
			t.Errorf("parseRoute(%q) = %+v, %v; want %+v", tt.path, got, ok, tt.want)
		}
	}
	if _, ok := parseRoute("/v1/x"); ok {
		t.Error("parseRoute accepted /v1/x")
	}
}

// checkLayers downloads every layer and checks its content against its digest.
func checkLayers(t *testing.T, img v1.Image) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		want, _ := l.Digest()
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if digestOf(b) != want.String() {
			t.Fatalf("layer %s has content %s", want, digestOf(b))
		}
	}
}

func TestByAccount(t *testing.T) {
	f := ByAccount(func(_ context.Context, user, pass string) (dora.Account, error) {
		if user == "AK" && pass == "SK" {
			return dora.Account{ID: "42"}, nil
		}
		return dora.Account{}, errors.New("bad")
	})
	if id, err := f(context.Background(), "AK", "SK"); err != nil || id != "42" {
		t.Fatalf("good: %q %v", id, err)
	}
	if id, err := f(context.Background(), "AK", "x"); err == nil || id != "" {
		t.Fatalf("bad: %q %v", id, err)
	}
}

// TestPullCredentials: the platform's pull credentials read any account's
// image, and do nothing else (no push, no catalog); wrong ones get 401.
func TestPullCredentials(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PullUser, c.PullPassword = "dora-runtime", "pullsecret" })
	img, _ := random.Image(1024, 2)
	alice := e.ref(t, "1001/app:v1")
	if err := remote.Write(alice, img, basic("AKalice")); err != nil {
		t.Fatal(err)
	}
	puller := remote.WithAuth(&authn.Basic{Username: "dora-runtime", Password: "pullsecret"})
	got, err := remote.Image(alice, puller)
	if err != nil {
		t.Fatal(err)
	}
	checkLayers(t, got)
	if err := remote.Write(e.ref(t, "1001/evil:v1"), img, puller); err == nil {
		t.Fatal("the pull credentials pushed")
	}
	req, _ := http.NewRequest("GET", e.srv.URL+"/v2/_catalog", nil)
	req.SetBasicAuth("dora-runtime", "pullsecret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("catalog with the pull credentials: %d", resp.StatusCode)
	}
	_, err = remote.Image(alice, remote.WithAuth(&authn.Basic{Username: "dora-runtime", Password: "wrong"}))
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong pull password: %v, want a 401", err)
	}
}

// TestDerivedPullCredentials: PullCredentials derives them from the root secret key, the same for the
// same key (every admin of a platform agrees), different for another key,
// and not the key itself.
func TestDerivedPullCredentials(t *testing.T) {
	u1, p1 := PullCredentials("rootSecret1")
	u2, p2 := PullCredentials("rootSecret1")
	_, p3 := PullCredentials("rootSecret2")
	if u1 != PullUserName || u1 != u2 || p1 != p2 {
		t.Fatalf("not deterministic: %s/%s vs %s/%s", u1, p1, u2, p2)
	}
	if p1 == p3 || len(p1) != 64 || strings.Contains(p1, "rootSecret1") {
		t.Fatalf("passwords %q %q", p1, p3)
	}
}

// TestTmpTagSurvivesRestart pushes tags whose names end in ".tmp" (valid
// tags): they are kept across a restart like any other, and writing tag
// "v1" does not disturb tag "v1.tmp".
func TestTmpTagSurvivesRestart(t *testing.T) {
	e := newEnv(t, nil)
	img1, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	img2, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	tmpRef, plainRef := e.ref(t, "1001/demo:v1.tmp"), e.ref(t, "1001/demo:v1")
	if err := remote.Write(tmpRef, img1, basic("AKalice")); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(plainRef, img2, basic("AKalice")); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	for ref, img := range map[name.Tag]v1.Image{tmpRef: img1, plainRef: img2} {
		got, err := remote.Image(ref, basic("AKalice"))
		if err != nil {
			t.Errorf("%s after restart: %v", ref, err)
			continue
		}
		gd, _ := got.Digest()
		wd, _ := img.Digest()
		if gd != wd {
			t.Errorf("%s after restart is %s, pushed %s", ref, gd, wd)
		}
	}
}

// TestTagsListPagination checks tags/list's n and last parameters: a
// negative or malformed n is a 400 (it used to panic in pkg/registry), and
// last past every tag gives an empty page (not the first page again, on
// which a paginating client would loop).
func TestTagsListPagination(t *testing.T) {
	e := newEnv(t, nil)
	img, _ := random.Image(512, 1)
	for _, r := range []string{"1001/a:v1", "1001/a:v2", "1001/a:v3"} {
		if err := remote.Write(e.ref(t, r), img, basic("AKalice")); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		query  string
		status int
		tags   string
	}{
		{"", 200, `["v1","v2","v3"]`},
		{"?n=2", 200, `["v1","v2"]`},
		{"?n=0", 200, `[]`},
		{"?last=v1", 200, `["v2","v3"]`},
		{"?last=v1&n=1", 200, `["v2"]`},
		{"?last=v3", 200, `[]`},
		{"?last=zzz", 200, `[]`},
		{"?n=-1", 400, ""},
		{"?n=x", 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.srv.URL+"/v2/1001/a/tags/list"+tt.query, nil)
			req.SetBasicAuth("AKalice", "SKalice")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if tt.status == 200 && !strings.Contains(string(b), `"tags":`+tt.tags) {
				t.Fatalf("body %s, want tags %s", b, tt.tags)
			}
		})
	}
}

// TestBlobRanges reads a blob by byte ranges, as a client resuming a pull
// does ("bytes=<offset>-"): a valid range gets exactly its bytes, a range
// that cannot be satisfied a 416, never other bytes or a cut body.
func TestBlobRanges(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PullUser, c.PullPassword = "puller", "pull-secret" })
	data := []byte("0123456789")
	if resp := do(t, "POST", e.srv.URL+"/v2/1001/r/blobs/uploads/?digest="+digestOf(data), data, nil); resp.StatusCode != 201 {
		t.Fatalf("upload: %d", resp.StatusCode)
	}
	tests := []struct {
		rng    string
		status int
		body   string
		cr     string
	}{
		{"", 200, "0123456789", ""},
		{"bytes=2-4", 206, "234", "bytes 2-4/10"},
		{"bytes=3-", 206, "3456789", "bytes 3-9/10"},
		{"bytes=-3", 206, "789", "bytes 7-9/10"},
		{"bytes=8-20", 206, "89", "bytes 8-9/10"},
		{"bytes=5-2", 416, "", ""},
		{"bytes=-3-4", 416, "", ""},
		{"bytes=20-30", 416, "", ""},
	}
	for _, user := range [][2]string{{"AKalice", "SKalice"}, {"puller", "pull-secret"}} {
		for _, tt := range tests {
			t.Run(user[0]+" "+tt.rng, func(t *testing.T) {
				req, _ := http.NewRequest("GET", e.srv.URL+"/v2/1001/r/blobs/"+digestOf(data), nil)
				req.SetBasicAuth(user[0], user[1])
				if tt.rng != "" {
					req.Header.Set("Range", tt.rng)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatalf("status %d, body cut: %v", resp.StatusCode, err)
				}
				if resp.StatusCode != tt.status {
					t.Fatalf("status %d, want %d (Content-Range %q, body %q)", resp.StatusCode, tt.status, resp.Header.Get("Content-Range"), b)
				}
				if tt.status >= 400 {
					return
				}
				if string(b) != tt.body || resp.Header.Get("Content-Range") != tt.cr || resp.Header.Get("Docker-Content-Digest") != digestOf(data) {
					t.Fatalf("body %q Content-Range %q digest %q; want %q %q", b, resp.Header.Get("Content-Range"), resp.Header.Get("Docker-Content-Digest"), tt.body, tt.cr)
				}
			})
		}
	}
}

// TestBlobSyncedBeforeRename: an uploaded blob's content is synced to disk
// before it is renamed to its content address, and the directory after,
// so that a power loss cannot leave an empty or cut blob that HEAD reports
// present (both the monolithic and the chunked upload).
func TestBlobSyncedBeforeRename(t *testing.T) {
	e := newEnv(t, nil)
	var events []string
	e.reg.blobs.syncFile = func(f *os.File) error {
		st, err := f.Stat()
		if err != nil {
			t.Errorf("stat %s: %v", f.Name(), err)
			return err
		}
		events = append(events, fmt.Sprintf("file %d bytes", st.Size()))
		return f.Sync()
	}
	e.reg.blobs.syncDir = func(dir string) error {
		if dir == filepath.Join(e.cfg.Dir, "blobs", "sha256") {
			events = append(events, "blob dir")
		}
		return syncDir(dir)
	}
	for _, data := range [][]byte{[]byte("monolithic"), []byte("chunked upload")} {
		events = nil
		d := digestOf(data)
		dst := filepath.Join(e.cfg.Dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:"))
		inner := e.reg.blobs.syncFile
		e.reg.blobs.syncFile = func(f *os.File) error {
			if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: blob already at its address when its content is synced (%v)", data, err)
			}
			return inner(f)
		}
		base := e.srv.URL + "/v2/1001/sync/blobs/uploads/"
		if string(data) == "monolithic" {
			if resp := do(t, "POST", base+"?digest="+d, data, nil); resp.StatusCode != 201 {
				t.Fatalf("monolithic: %d", resp.StatusCode)
			}
		} else {
			resp := do(t, "POST", base, nil, nil)
			loc := e.srv.URL + resp.Header.Get("Location")
			if resp := do(t, "PATCH", loc, data, nil); resp.StatusCode != 202 {
				t.Fatalf("PATCH: %d", resp.StatusCode)
			}
			if resp := do(t, "PUT", loc+"?digest="+d, nil, nil); resp.StatusCode != 201 {
				t.Fatalf("PUT: %d", resp.StatusCode)
			}
		}
		want := fmt.Sprintf("file %d bytes,blob dir", len(data))
		if got := strings.Join(events, ","); got != want {
			t.Errorf("%s: syncs %q, want %q", data, got, want)
		}
		e.reg.blobs.syncFile = inner
	}
}

// clock is a settable Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func doAs(t *testing.T, ak, method, url string, body []byte) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.SetBasicAuth(ak, accounts[ak][0])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func uploadFiles(t *testing.T, e *env) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(e.cfg.Dir, "uploads", "*"))
	if err != nil {
		t.Fatal(err)
	}
	return len(files)
}

// TestUploadSessionsBounded: an account may hold maxUploadsPerAccount
// upload sessions (each an open file and a temporary file); one more is
// 429 TOOMANYREQUESTS, other accounts are not affected, and once sessions
// have been idle longer than uploadTTL they are dropped to make room.
func TestUploadSessionsBounded(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	e := newEnv(t, func(c *Config) { c.Now = clk.Now })
	base := e.srv.URL + "/v2/1001/many/blobs/uploads/"
	var locs []string
	for i := 0; i < maxUploadsPerAccount; i++ {
		resp := doAs(t, "AKalice", "POST", base, nil)
		if resp.StatusCode != 202 {
			t.Fatalf("upload %d: %d", i, resp.StatusCode)
		}
		locs = append(locs, e.srv.URL+resp.Header.Get("Location"))
		clk.add(time.Minute)
	}
	resp := doAs(t, "AKalice", "POST", base, nil)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(b), `"TOOMANYREQUESTS"`) {
		t.Fatalf("upload over the bound: %d %s", resp.StatusCode, b)
	}
	if resp := doAs(t, "AKalice", "POST", base+"?digest="+digestOf([]byte("x")), []byte("x")); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("monolithic upload over the bound: %d", resp.StatusCode)
	}
	if n := uploadFiles(t, e); n != maxUploadsPerAccount {
		t.Fatalf("%d upload files, want %d", n, maxUploadsPerAccount)
	}
	// bob has his own bound
	if resp := doAs(t, "AKbob", "POST", e.srv.URL+"/v2/2002/x/blobs/uploads/", nil); resp.StatusCode != 202 {
		t.Fatalf("bob: %d", resp.StatusCode)
	}
	// a cancelled upload frees its place
	if resp := doAs(t, "AKalice", "DELETE", locs[0], nil); resp.StatusCode != 204 {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	if resp := doAs(t, "AKalice", "POST", base, nil); resp.StatusCode != 202 {
		t.Fatalf("after a DELETE: %d", resp.StatusCode)
	}
	// the oldest session gets a chunk now; after an hour the others have
	// expired and are dropped to make room, it has not
	clk.add(uploadTTL - 2*time.Minute)
	if resp := doAs(t, "AKalice", "PATCH", locs[1], []byte("abc")); resp.StatusCode != 202 {
		t.Fatalf("PATCH: %d", resp.StatusCode)
	}
	clk.add(15 * time.Minute)
	if resp := doAs(t, "AKalice", "POST", base, nil); resp.StatusCode != 202 {
		t.Fatalf("after the others expired: %d", resp.StatusCode)
	}
	if resp := doAs(t, "AKalice", "PATCH", locs[2], []byte("abc")); resp.StatusCode != 404 {
		t.Fatalf("PATCH of an expired upload: %d", resp.StatusCode)
	}
	if resp := doAs(t, "AKalice", "GET", locs[1], nil); resp.StatusCode != 204 || resp.Header.Get("Range") != "0-2" {
		t.Fatalf("the recently used upload: %d %q", resp.StatusCode, resp.Header.Get("Range"))
	}
}

// TestIdleUploadsSwept: upload sessions idle longer than uploadTTL are
// dropped (their files removed) by the periodic sweep, with no other
// upload starting; the sweep stops with Config.Context.
func TestIdleUploadsSwept(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newEnv(t, func(c *Config) { c.Now = clk.Now; c.Context = ctx; c.sweepEvery = 5 * time.Millisecond })
	resp := doAs(t, "AKalice", "POST", e.srv.URL+"/v2/1001/idle/blobs/uploads/", nil)
	if resp.StatusCode != 202 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	loc := e.srv.URL + resp.Header.Get("Location")
	time.Sleep(50 * time.Millisecond)
	if n := uploadFiles(t, e); n != 1 {
		t.Fatalf("%d upload files before an hour passed, want 1", n)
	}
	clk.add(uploadTTL + time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for uploadFiles(t, e) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("an upload idle for over an hour was not swept")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if resp := doAs(t, "AKalice", "GET", loc, nil); resp.StatusCode != 404 {
		t.Fatalf("swept upload: %d", resp.StatusCode)
	}
	cancel()
	select {
	case <-e.reg.sweepDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the sweep did not stop with its context")
	}
}

// manifestStatus is the status of a GET of repo's manifest ref, as alice.
func manifestStatus(t *testing.T, e *env, repo, ref string) int {
	t.Helper()
	return doAs(t, "AKalice", "GET", e.srv.URL+"/v2/"+repo+"/manifests/"+ref, nil).StatusCode
}

// TestDeleteByDigestSurvivesRestart: deleting a manifest by digest
// removes it and every tag pointing to it (distribution spec), and a
// restart does not bring any of them back; another image's tag stays.
func TestDeleteByDigestSurvivesRestart(t *testing.T) {
	e := newEnv(t, nil)
	img, _ := random.Image(512, 1)
	other, _ := random.Image(512, 1)
	for _, r := range []string{"1001/a:v1", "1001/a:v2"} {
		if err := remote.Write(e.ref(t, r), img, basic("AKalice")); err != nil {
			t.Fatal(err)
		}
	}
	if err := remote.Write(e.ref(t, "1001/a:v3"), other, basic("AKalice")); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	if resp := doAs(t, "AKalice", "DELETE", e.srv.URL+"/v2/1001/a/manifests/"+d.String(), nil); resp.StatusCode != 202 {
		t.Fatalf("DELETE by digest: %d", resp.StatusCode)
	}
	check := func(when string) {
		t.Helper()
		for _, ref := range []string{d.String(), "v1", "v2"} {
			if s := manifestStatus(t, e, "1001/a", ref); s != 404 {
				t.Errorf("%s: %s is %d, want 404", when, ref, s)
			}
		}
		if s := manifestStatus(t, e, "1001/a", "v3"); s != 200 {
			t.Errorf("%s: v3 is %d", when, s)
		}
		tags, err := remote.List(e.ref(t, "1001/a:v3").Context(), basic("AKalice"))
		if err != nil || strings.Join(tags, ",") != "v3" {
			t.Errorf("%s: tags %v, %v", when, tags, err)
		}
		imgs, _ := ListImages(context.Background(), e.st, "1001")
		if len(imgs) != 1 || imgs[0].Name != "a:v3" {
			t.Errorf("%s: images %+v", when, imgs)
		}
	}
	check("before a restart")
	e.start(t)
	check("after a restart")
	if resp := doAs(t, "AKalice", "DELETE", e.srv.URL+"/v2/1001/a/manifests/"+d.String(), nil); resp.StatusCode != 404 {
		t.Fatalf("DELETE by digest again: %d", resp.StatusCode)
	}
}

// TestDeleteTagKeepsDigestAcrossRestart: deleting a tag removes the tag;
// the manifest stays pullable by digest, before and after a restart (it
// used to be there until a restart only), until it is deleted by digest.
func TestDeleteTagKeepsDigestAcrossRestart(t *testing.T) {
	e := newEnv(t, nil)
	img, _ := random.Image(512, 1)
	if err := remote.Write(e.ref(t, "1001/b:v1"), img, basic("AKalice")); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	if resp := doAs(t, "AKalice", "DELETE", e.srv.URL+"/v2/1001/b/manifests/v1", nil); resp.StatusCode != 202 {
		t.Fatalf("DELETE by tag: %d", resp.StatusCode)
	}
	for _, when := range []string{"before a restart", "after a restart"} {
		if s := manifestStatus(t, e, "1001/b", "v1"); s != 404 {
			t.Errorf("%s: deleted tag is %d", when, s)
		}
		if s := manifestStatus(t, e, "1001/b", d.String()); s != 200 {
			t.Errorf("%s: digest of the deleted tag is %d, want 200", when, s)
		}
		e.start(t)
	}
	if resp := doAs(t, "AKalice", "DELETE", e.srv.URL+"/v2/1001/b/manifests/"+d.String(), nil); resp.StatusCode != 202 {
		t.Fatalf("DELETE by digest: %d", resp.StatusCode)
	}
	e.start(t)
	if s := manifestStatus(t, e, "1001/b", d.String()); s != 404 {
		t.Errorf("deleted digest after a restart: %d", s)
	}
}

// TestNestedIndexSurvivesRestart: an index of indexes of indexes is kept
// across a restart whatever the order of their digests (replay used to
// put indexes back in the order of their names: a middle index named
// before its child was refused for the missing child, and lost, and the
// tagged top index with it).
func TestNestedIndexSurvivesRestart(t *testing.T) {
	e := newEnv(t, nil)
	// The top index is pushed by tag, the others by digest; the middle
	// one's digest sorts before its child's.
	var top, inner v1.ImageIndex
	for i := 0; i < 100 && top == nil; i++ {
		in, err := random.Index(256, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		mid := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: in})
		id, _ := in.Digest()
		md, err := mid.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if md.String() < id.String() {
			top, inner = mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: mid}), in
		}
	}
	if top == nil {
		t.Fatal("no middle index sorting before its child")
	}
	ref := e.ref(t, "1001/nested:v1")
	if err := remote.WriteIndex(ref, top, basic("AKalice")); err != nil {
		t.Fatal(err)
	}
	e.start(t)
	got, err := remote.Index(ref, basic("AKalice"))
	if err != nil {
		t.Fatalf("top index after a restart: %v", err)
	}
	tm, err := got.IndexManifest()
	if err != nil || len(tm.Manifests) != 1 {
		t.Fatalf("top index: %v, %v", tm, err)
	}
	mid, err := got.ImageIndex(tm.Manifests[0].Digest)
	if err != nil {
		t.Fatalf("middle index after a restart: %v", err)
	}
	id, _ := inner.Digest()
	child, err := mid.ImageIndex(id)
	if err != nil {
		t.Fatalf("inner index after a restart: %v", err)
	}
	im, err := child.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("inner index: %v, %v", im, err)
	}
	img, err := child.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	checkLayers(t, img)
}
