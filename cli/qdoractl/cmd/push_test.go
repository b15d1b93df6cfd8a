package cmd

import (
	"io"
	"log"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/doraproject/dora"
)

func TestParseImageName(t *testing.T) {
	tests := []struct {
		in, repo, tag string
		bad           bool
	}{
		{"ufopdemo:v1", "ufopdemo", "v1", false},
		{"ufopdemo", "ufopdemo", "latest", false},
		{"team/demo:1.0", "team/demo", "1.0", false},
		{"UPPER:v1", "", "", true},
		{"registry.example.com/demo:v1", "", "", true},
		{"localhost:5000/demo", "", "", true},
		{"demo:", "", "", true},
		{"demo@sha256:abc", "", "", true},
	}
	for _, tt := range tests {
		repo, tag, err := parseImageName(tt.in)
		if (err != nil) != tt.bad || repo != tt.repo || tag != tt.tag {
			t.Errorf("parseImageName(%q) = %q, %q, %v", tt.in, repo, tag, err)
		}
	}
}

// registryWithBasicAuth is pkg/registry behind the AK/SK basic auth the
// platform's registry asks for.
func registryWithBasicAuth() http.Handler {
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != testAK || p != testSK {
			w.Header().Set("WWW-Authenticate", `Basic realm="dora"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	})
}

func TestPushFromTarballAndLayout(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"GET /v1/whoami": reply(200, dora.Account{ID: "1366779853", AccessKey: testAK}),
	})
	f.extra = registryWithBasicAuth()
	host := strings.TrimPrefix(f.srv.URL, "http://")
	dir := t.TempDir()

	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag("ufopdemo:v1")
	tarPath := filepath.Join(dir, "ufopdemo.tar")
	if err := tarball.WriteToFile(tarPath, tag, img); err != nil {
		t.Fatal(err)
	}
	img2, _ := random.Image(1024, 1)
	lp, err := layout.Write(filepath.Join(dir, "oci"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img2, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v2"})); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		image, from string
		want        v1.Image
	}{
		{"ufopdemo:v1", tarPath, img},
		{"ufopdemo:v2", filepath.Join(dir, "oci"), img2},
	}
	for _, tt := range tests {
		t.Run(tt.image, func(t *testing.T) {
			r := mustOK(t, runCLI(t, f, "", "push", tt.image, "--from", tt.from))
			wantDigest, _ := tt.want.Digest()
			if !strings.Contains(r.stdout, "Push success") || !strings.Contains(r.stdout, wantDigest.String()) {
				t.Fatalf("stdout %q", r.stdout)
			}
			ref, _ := name.NewTag(host + "/1366779853/" + tt.image)
			got, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: testAK, Password: testSK}))
			if err != nil {
				t.Fatal(err)
			}
			gd, _ := got.Digest()
			if gd != wantDigest {
				t.Fatalf("pulled %s, pushed %s", gd, wantDigest)
			}
		})
	}
}

func TestPushWithoutSource(t *testing.T) {
	f := newFakeAPI(t, map[string]route{"GET /v1/whoami": reply(200, dora.Account{ID: "1"})})
	sock := "unix://" + filepath.Join(t.TempDir(), "no-docker.sock")
	r := runCLI(t, f, "", "push", "ufopdemo:v1", "--docker-host", sock)
	if r.code != ExitError || !strings.Contains(r.stderr, "no Docker daemon answers") || !strings.Contains(r.stderr, "--from") {
		t.Fatalf("got %v", r)
	}
	r = runCLI(t, f, "", "push", "ufopdemo:v1", "--from", filepath.Join(t.TempDir(), "missing.tar"))
	if r.code != ExitError {
		t.Fatalf("missing --from: %v", r)
	}
}
