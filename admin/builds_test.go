package admin

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/store"
)

// tarGz packs files (name → content) as a gzip-compressed tar.
func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range files {
		mode := int64(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func pkg(t *testing.T, image string, script ...string) []byte {
	t.Helper()
	y := "image: " + image + "\nbuild_script:\n"
	for _, s := range script {
		y += "  - " + s + "\n"
	}
	y += "run: ./run.sh\n"
	return tarGz(t, map[string]string{"ufop.yaml": y, "run.sh": "#!/bin/sh\necho hi\n"})
}

// waitBuild polls a build until it leaves RUNNING.
func (e *env) waitBuild(acct dora.Account, ufop string, n int) dora.Build {
	e.t.Helper()
	deadline := time.Now().Add(3 * time.Minute) // a hang only: a Go build under -race on a loaded machine is slow
	for {
		var b dora.Build
		e.must(http.StatusOK, acct, "GET", "/v1/ufops/"+ufop+"/builds/"+strconv.Itoa(n), nil, &b)
		if b.Status != dora.BuildRunning {
			return b
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("build %s #%d still RUNNING", ufop, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestBuildsAndVersionSwitch(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	e.ufop(bob, "bobufop", dora.ModePrivate)
	ctx := context.Background()
	noBuilds := func() {
		t.Helper()
		kvs, err := e.st.List(ctx, store.BuildsOf("grepd"))
		if err != nil || len(kvs) != 0 {
			t.Fatalf("builds recorded: %v %v", kvs, err)
		}
	}

	for _, bad := range []struct {
		name string
		body []byte
	}{
		{"not gzip", []byte("plain text")},
		{"no ufop.yaml", tarGz(t, map[string]string{"run.sh": "x"})},
		{"escaping path", tarGz(t, map[string]string{"../evil": "x", "ufop.yaml": "image: ubuntu\nrun: ./x\n"})},
		{"bad yaml", tarGz(t, map[string]string{"ufop.yaml": "image: [\n"})},
	} {
		t.Run(bad.name, func(t *testing.T) {
			r := e.req(alice, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(bad.body)})
			if r.Status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", r.Status, r.Body)
			}
			noBuilds()
		})
	}
	e.must(http.StatusForbidden, bob, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "ubuntu", "true"))}, nil)
	// A base image that is not a successful build of the caller: 422, nothing recorded.
	e.must(http.StatusUnprocessableEntity, alice, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "bobufop.v1", "true"))}, nil)
	e.must(http.StatusUnprocessableEntity, alice, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "grepd.v1", "true"))}, nil)
	noBuilds()

	var b dora.Build
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/builds",
		typed{"application/gzip", string(pkg(t, "ubuntu", "cp -r $RESOURCE/. .", "echo building-now"))}, &b)
	if b.Number != 1 || b.Status != dora.BuildRunning || b.Image != "grepd.v1" || b.Run != "./run.sh" || b.Base != "ubuntu" {
		t.Fatalf("build = %+v", b)
	}
	if b = e.waitBuild(alice, "grepd", 1); b.Status != dora.BuildSuccess || b.Finished.IsZero() {
		t.Fatalf("build 1 = %+v", b)
	}
	r := e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/builds/1/log", nil, nil)
	if !strings.Contains(string(r.Body), "building-now") {
		t.Errorf("log = %q", r.Body)
	}
	e.must(http.StatusForbidden, bob, "GET", "/v1/ufops/grepd/builds/1/log", nil, nil)
	e.must(http.StatusNotFound, alice, "GET", "/v1/ufops/grepd/builds/9", nil, nil)
	e.must(http.StatusBadRequest, alice, "GET", "/v1/ufops/grepd/builds/x", nil, nil)

	// Build 2 fails; build 3 starts from build 1.
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "ubuntu", "echo first", "exit 3"))}, nil)
	if b = e.waitBuild(alice, "grepd", 2); b.Status != dora.BuildFailed || b.Error == "" {
		t.Fatalf("build 2 = %+v", b)
	}
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "grepd.v1", "test -x run.sh"))}, nil)
	if b = e.waitBuild(alice, "grepd", 3); b.Status != dora.BuildSuccess {
		t.Fatalf("build 3 (base grepd.v1) = %+v", b)
	}
	// Build durations by outcome: two successes, one failure.
	m := e.req(dora.Account{}, "GET", "/metrics", nil)
	for _, want := range []string{`dora_admin_build_duration_seconds_count{outcome="success"} 2`, `dora_admin_build_duration_seconds_count{outcome="failed"} 1`} {
		if !strings.Contains(string(m.Body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	var builds []dora.Build
	e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/builds", nil, &builds)
	if len(builds) != 3 || builds[0].Number != 1 || builds[2].Number != 3 {
		t.Fatalf("builds = %+v", builds)
	}
	var imgs []Image
	e.must(http.StatusOK, alice, "GET", "/v1/images", nil, &imgs)
	if len(imgs) != 2 || imgs[0].Name != "grepd.v1" || imgs[0].Kind != ImageKindPackage || imgs[1].Name != "grepd.v3" {
		t.Fatalf("images = %+v", imgs)
	}

	// ufopver: a failed build cannot be switched to; build 1 can.
	e.must(http.StatusConflict, alice, "POST", "/v1/ufops/grepd/version", map[string]any{"build": 2}, nil)
	e.must(http.StatusNotFound, alice, "POST", "/v1/ufops/grepd/version", map[string]any{"build": 7}, nil)
	e.must(http.StatusBadRequest, alice, "POST", "/v1/ufops/grepd/version", map[string]any{"build": 0}, nil)
	e.must(http.StatusForbidden, bob, "POST", "/v1/ufops/grepd/version", map[string]any{"build": 1}, nil)
	var info UfopInfo
	e.must(http.StatusOK, alice, "POST", "/v1/ufops/grepd/version", map[string]any{"build": 1}, &info)
	if info.ActiveVersion != "v1" || info.PreviousVersion != "" || info.Flavor != "default" {
		t.Fatalf("info = %+v", info)
	}
	rel, _, err := store.Get[dora.Release](ctx, e.st, store.ReleaseKey("grepd", "v1"))
	// A program package switched to with ufopver speaks /uop unless told
	// otherwise (seed 001's flow needs no flag).
	if err != nil || rel.Image != "grepd.v1" || rel.Protocol != dora.ProtocolUfop {
		t.Fatalf("release v1 = %+v, %v", rel, err)
	}

	// resize runs the package; the spec points at the build and a signed artifact URL.
	var d dora.Deployment
	e.must(http.StatusOK, alice, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 1}, &d)
	spec, ok := e.rt.lastSpec(d.ID)
	if !ok || spec.Package == nil || spec.Package.Dir != e.bld.Dir("grepd", 1) || spec.Package.Run != "./run.sh" || spec.OCIImage != "" {
		t.Fatalf("spec = %+v", spec)
	}
	art := spec.Package.ArtifactURL
	if !strings.HasPrefix(art, "http://admin.test:8090/v1/artifacts/grepd/1.tar.gz?e=") {
		t.Fatalf("artifact url %q", art)
	}
	u, err := url.Parse(art)
	if err != nil {
		t.Fatal(err)
	}
	get := func(pathQuery string) (int, []byte) {
		res, err := http.Get(e.ts.URL + pathQuery)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, body
	}
	status, body := get(u.RequestURI())
	if status != http.StatusOK {
		t.Fatalf("artifact: %d %s", status, body)
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if strings.TrimPrefix(h.Name, "./") == "run.sh" {
			found = true
		}
	}
	if !found {
		t.Error("artifact lacks run.sh")
	}
	deadline := time.Now().Add(time.Hour).Unix()
	for name, pq := range map[string]string{
		"no token":      "/v1/artifacts/grepd/1.tar.gz",
		"tampered":      strings.Replace(u.RequestURI(), "/1.tar.gz", "/3.tar.gz", 1),
		"user's token":  mustURI(t, auth.DownloadURL("http://admin.test:8090/v1/artifacts/grepd/1.tar.gz", alice.AccessKey, alice.SecretKey, deadline)),
		"expired token": mustURI(t, auth.DownloadURL("http://admin.test:8090/v1/artifacts/grepd/1.tar.gz", testRootAK, testRootSK, time.Now().Add(-time.Minute).Unix())),
	} {
		if status, body := get(pq); status != http.StatusUnauthorized {
			t.Errorf("%s: %d %s", name, status, body)
		}
	}
	if status, _ := get(mustURI(t, auth.DownloadURL("http://admin.test:8090/v1/artifacts/grepd/2.tar.gz", testRootAK, testRootSK, deadline))); status != http.StatusNotFound {
		t.Errorf("failed build's artifact: %d", status)
	}

	// Switching to build 3 is blue/green.
	e.rt.setRunning(d.ID, 1)
	if err := e.srv.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	e.must(http.StatusOK, alice, "POST", "/v1/ufops/grepd/version", map[string]any{"build": 3}, &info)
	if info.ActiveVersion != "v3" || info.PreviousVersion != "v1" {
		t.Fatalf("switch to v3: %+v", info)
	}

	// ufop.yaml's protocol is the default of the release ufopver makes;
	// the caller's --protocol wins over it.
	y := "image: ubuntu\nbuild_script:\n  - cp -r $RESOURCE/. .\nrun: ./run.sh\nprotocol: dora\n"
	for n, c := range []struct {
		body map[string]any
		want dora.Protocol
	}{{map[string]any{"build": 4}, dora.ProtocolDora}, {map[string]any{"build": 5, "protocol": "ufop"}, dora.ProtocolUfop}} {
		e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/builds",
			typed{"application/gzip", string(tarGz(t, map[string]string{"ufop.yaml": y, "run.sh": "#!/bin/sh\n"}))}, nil)
		if b := e.waitBuild(alice, "grepd", 4+n); b.Status != dora.BuildSuccess || b.Protocol != dora.ProtocolDora {
			t.Fatalf("build %d = %+v", 4+n, b)
		}
		e.must(http.StatusOK, alice, "POST", "/v1/ufops/grepd/version", c.body, nil)
		ver := fmt.Sprintf("v%d", 4+n)
		if rel, _, err := store.Get[dora.Release](ctx, e.st, store.ReleaseKey("grepd", ver)); err != nil || rel.Protocol != c.want {
			t.Fatalf("release %s = %+v, %v; want protocol %s", ver, rel, err, c.want)
		}
	}
}

func mustURI(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.RequestURI()
}
