package main

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/cli/platform/platformtest"
)

// TestDevImageGCDelayFlag: dorad dev had no way to set how long an image
// it pulled stays in podman's storage once unused (3 minutes, always);
// --image-gc-delay sets it: a name the runtime recorded in a previous run
// and no deployment uses is removed that long after the start. 0 is
// refused, naming the flag.
func TestDevImageGCDelayFlag(t *testing.T) {
	for _, b := range []string{"podman", "runc"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not installed (scripts/install-deps.sh installs it): %v", b, err)
		}
	}
	dir := platformtest.ReachableTempDir(t)
	args := []string{"dev", "--data-dir", dir, "--admin-addr", "127.0.0.1:0", "--router-addr", "127.0.0.1:0",
		"--run-as", "self", "--container-runtime", "podman", "--packages-as-processes"}
	if err := runDorad(t, append(args, "--image-gc-delay", "0")...); err == nil || !strings.Contains(err.Error(), "--image-gc-delay 0") || !strings.Contains(err.Error(), "keep every image") {
		t.Fatalf("dorad dev --image-gc-delay 0 = %v, want it refused saying what to give", err)
	}

	// An image a previous run pulled (as far as its record says): a tiny
	// one imported under a name of this test's own.
	salt := make([]byte, 6)
	rand.Read(salt)
	ref := "localhost/dora-test-gc-delay-" + hex.EncodeToString(salt) + ":v1"
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: "salt", Mode: 0o644, Size: int64(len(salt)), Typeflag: tar.TypeReg})
	tw.Write(salt)
	tw.Close()
	imp := exec.Command("podman", "--runtime", "runc", "import", "--quiet", "-", ref)
	imp.Stdin = &tb
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("podman import: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("podman", "rmi", "--ignore", ref).Run() })
	out, err := exec.Command("podman", "image", "inspect", "--format", "{{.Id}}", ref).Output()
	if err != nil {
		t.Fatalf("podman image inspect %s: %v", ref, err)
	}
	recs, _ := json.Marshal([]map[string]string{{"ref": ref, "id": strings.TrimSpace(string(out))}})
	if err := os.MkdirAll(filepath.Join(dir, "instances"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "instances", ".images.json"), recs, 0o600); err != nil {
		t.Fatal(err)
	}

	r := startDorad(t, append(args, "--image-gc-delay", "1s")...)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		err := exec.Command("podman", "image", "exists", ref).Run()
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 {
			break // removed
		}
		if time.Now().After(deadline) {
			t.Fatalf("image %s not removed 30s after dorad dev --image-gc-delay 1s started (podman image exists: %v); output:\n%s", ref, err, r.out)
		}
	}
}
