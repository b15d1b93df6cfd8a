package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestPushedImageNeedsAContainerRuntime follows seed 000 with an OCI image:
// push it to the platform's registry, list it, release it, deploy it. The
// embedded runtime runs program packages only, so the deployment must fail
// with a message that says so, not hang in PENDING.
func TestPushedImageNeedsAContainerRuntime(t *testing.T) {
	h := newHarness(t)
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// Both shapes --from accepts: an OCI layout directory and a docker-save tarball.
	lp, err := layout.Write(filepath.Join(dir, "oci"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag("ufopdemo:v2")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(filepath.Join(dir, "image.tar"), tag, img); err != nil {
		t.Fatal(err)
	}

	h.q("push", "ufopdemo:v1", "--from", filepath.Join(dir, "oci"))
	h.q("push", "ufopdemo:v2", "--from", filepath.Join(dir, "image.tar"))
	out := h.q("image")
	for _, want := range []string{"ufopdemo:v1", "ufopdemo:v2"} {
		if !strings.Contains(out, want) {
			t.Fatalf("qdoractl image lacks %s:\n%s", want, out)
		}
	}

	h.q("register", "doraufoptest", "-m", "private", "-d", "it is a test!")
	relDir := t.TempDir()
	h.q("release", "--mkconfig", relDir)
	writeFile(t, filepath.Join(relDir, "dora.yaml"), "ufopname: doraufoptest\nverstr: v1\nimage: ufopdemo:v1\ndesc: a demo\nflavor: C1M1\nhealth_check:\n  path: /health\n  timeout: 3\nlog_file_paths: []\n")
	if out := h.q("release", "--config", relDir); !strings.Contains(out, "ufopdemo:v1") {
		t.Fatalf("release --config:\n%s", out)
	}
	out = h.q("deploy", "doraufoptest", "v1", "--region", "z0", "--expect", "2")
	id := regexp.MustCompile(`deploy-[0-9a-f-]{36}`).FindString(out)
	if id == "" {
		t.Fatalf("deploy printed no id:\n%s", out)
	}
	h.eventually("deployment "+id+" FAILED with a reason", func() (bool, string) {
		out, _, _ := h.qcode("deploy", "doraufoptest", "--id", id)
		return strings.Contains(out, "FAILED") && strings.Contains(out, "container runtime"), out
	})
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
