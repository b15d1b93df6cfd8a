package cmd

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
)

// buildAPI fakes the build endpoints: the upload is build 3, which reports
// RUNNING for the first polls and then final.
func buildAPI(t *testing.T, final dora.Build) *fakeAPI {
	var mu sync.Mutex
	polls := 0
	return newFakeAPI(t, map[string]route{
		"POST /v1/ufops/grepd/builds": func(c call) (int, any) {
			gz, err := gzip.NewReader(bytes.NewReader(c.Body))
			if err != nil {
				return 400, map[string]string{"error": "not gzip"}
			}
			tr := tar.NewReader(gz)
			found := false
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					return 400, map[string]string{"error": err.Error()}
				}
				found = found || h.Name == "ufop.yaml"
			}
			if !found {
				return 400, map[string]string{"error": "no ufop.yaml"}
			}
			return 202, dora.Build{Ufop: "grepd", Number: 3, Status: dora.BuildRunning, Image: "grepd.v3"}
		},
		"GET /v1/ufops/grepd/builds/3": func(call) (int, any) {
			mu.Lock()
			defer mu.Unlock()
			polls++
			if polls < 3 {
				return 200, dora.Build{Ufop: "grepd", Number: 3, Status: dora.BuildRunning, Image: "grepd.v3"}
			}
			return 200, final
		},
		"GET /v1/ufops/grepd/builds":       reply(200, []dora.Build{{Number: 1, Image: "grepd.v1", Status: "FAILED", Error: "line 2"}, {Number: 3, Image: "grepd.v3", Status: "SUCCESS"}}),
		"GET /v1/ufops/grepd/builds/3/log": reply(200, "$ go build\nok\n"),
		"GET /v1/ufops/grepd/builds/1/log": reply(200, "$ false\nexit 1\n"),
		"POST /v1/ufops/grepd/version":     reply(200, client.UfopInfo{Ufop: dora.Ufop{Name: "grepd", ActiveVersion: "v3", PreviousVersion: "v1"}}),
	})
}

func pkgDir(t *testing.T) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ufop.yaml"), []byte("image: ubuntu\nrun: ./grepd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBuildWaits(t *testing.T) {
	f := buildAPI(t, dora.Build{Ufop: "grepd", Number: 3, Status: dora.BuildSuccess, Image: "grepd.v3"})
	dir := pkgDir(t)
	r := mustOK(t, runCLI(t, f, "", "build", "grepd", "-dir", dir, "--poll-interval", "1ms"))
	for _, w := range []string{"Build grepd #3 started (image grepd.v3)", "Status: SUCCESS", "Build success\nUfop: grepd\nVersion: 3\nImage: grepd.v3",
		"qdoractl ufopver grepd -c 3"} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("stdout lacks %q:\n%s", w, r.stdout)
		}
	}
	if f.last(t, "POST /v1/ufops/grepd/builds").Header.Get("Content-Type") != "application/gzip" {
		t.Fatal("build upload is not application/gzip")
	}
}

func TestBuildFailureExitCode(t *testing.T) {
	f := buildAPI(t, dora.Build{Ufop: "grepd", Number: 3, Status: dora.BuildFailed, Error: "build_script line 2 failed"})
	r := runCLI(t, f, "", "build", "grepd", "--dir", pkgDir(t), "--poll-interval", "1ms")
	if r.code != ExitError || !strings.Contains(r.stderr, "build_script line 2 failed") || !strings.Contains(r.stderr, "qdoractl buildlog grepd -v 3") {
		t.Fatalf("got %v", r)
	}
}

func TestBuildNoWaitAndMissingYAML(t *testing.T) {
	f := buildAPI(t, dora.Build{})
	r := mustOK(t, runCLI(t, f, "", "build", "grepd", "-dir", pkgDir(t), "--no-wait"))
	if !strings.Contains(r.stdout, "qdoractl imageinfo grepd") {
		t.Fatalf("stdout %q", r.stdout)
	}
	if r := runCLI(t, f, "", "build", "grepd", "-dir", t.TempDir()); r.code != ExitError || !strings.Contains(r.stderr, "no ufop.yaml") {
		t.Fatalf("build without ufop.yaml: %v", r)
	}
	missing := filepath.Join(t.TempDir(), "no", "such", "dir")
	if r := runCLI(t, f, "", "build", "grepd", "-dir", missing); r.code != ExitError || r.stderr != "qdoractl: build grepd: directory "+missing+" does not exist\n" {
		t.Fatalf("build -dir of a missing directory: %v", r)
	}
	file := filepath.Join(pkgDir(t), "ufop.yaml")
	if r := runCLI(t, f, "", "build", "grepd", "-dir", file); r.code != ExitError || !strings.Contains(r.stderr, file+" is not a directory") {
		t.Fatalf("build -dir of a file: %v", r)
	}
}

func TestImageinfoBuildlogUfopver(t *testing.T) {
	f := buildAPI(t, dora.Build{})
	r := mustOK(t, runCLI(t, f, "", "imageinfo", "grepd"))
	if !strings.Contains(r.stdout, "Version  Image     Status") || !strings.Contains(r.stdout, "line 2") {
		t.Fatalf("imageinfo:\n%s", r.stdout)
	}
	if r := mustOK(t, runCLI(t, f, "", "buildlog", "grepd", "-v", "1")); r.stdout != "$ false\nexit 1\n" {
		t.Fatalf("buildlog -v 1: %q", r.stdout)
	}
	if r := mustOK(t, runCLI(t, f, "", "buildlog", "grepd")); r.stdout != "$ go build\nok\n" {
		t.Fatalf("buildlog (latest): %q", r.stdout)
	}
	r = mustOK(t, runCLI(t, f, "", "ufopver", "grepd", "-c", "3"))
	jsonEq(t, f.last(t, "POST /v1/ufops/grepd/version").Body, `{"build":3}`)
	if !strings.Contains(r.stdout, "Ufop grepd version switched to v3") {
		t.Fatalf("ufopver: %q", r.stdout)
	}
	mustOK(t, runCLI(t, f, "", "ufopver", "grepd", "-c", "3", "--protocol", "ufop"))
	jsonEq(t, f.last(t, "POST /v1/ufops/grepd/version").Body, `{"build":3,"protocol":"ufop"}`)
	if r := runCLI(t, f, "", "ufopver", "grepd"); r.code != ExitUsage {
		t.Fatalf("ufopver without -c: %v", r)
	}
}

// TestUfopverProtocolOfExistingRelease: --protocol shapes only the release
// a switch creates; when release v<n> exists with another protocol the
// switch says on stderr that the flag was not applied and how to get it.
func TestUfopverProtocolOfExistingRelease(t *testing.T) {
	f := buildAPI(t, dora.Build{})
	f.routes["GET /v1/ufops/grepd/releases"] = reply(200, client.Releases{Mode: "private", Releases: []dora.Release{
		{Ufop: "grepd", Version: "v1", Image: "grepd.v1"}, // no protocol: dora
		{Ufop: "grepd", Version: "v3", Image: "grepd.v3", Protocol: dora.ProtocolUfop},
	}})
	r := mustOK(t, runCLI(t, f, "", "ufopver", "grepd", "-c", "1", "--protocol", "ufop"))
	jsonEq(t, f.last(t, "POST /v1/ufops/grepd/version").Body, `{"build":1,"protocol":"ufop"}`)
	for _, w := range []string{"warning: --protocol ufop was not applied: release v1 of grepd already exists and keeps its protocol, dora",
		"qdoractl ufopver grepd -c <new build> --protocol ufop", "qdoractl release --config"} {
		if !strings.Contains(r.stderr, w) {
			t.Fatalf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
	if strings.Contains(r.stdout, "warning") || !strings.Contains(r.stdout, "version switched to") {
		t.Fatalf("stdout %q", r.stdout)
	}
	// The same protocol, or a release the switch creates: nothing to say.
	for _, args := range [][]string{{"-c", "3", "--protocol", "ufop"}, {"-c", "4", "--protocol", "dora"}, {"-c", "1"}} {
		if r := mustOK(t, runCLI(t, f, "", append([]string{"ufopver", "grepd"}, args...)...)); r.stderr != "" {
			t.Fatalf("ufopver %v: stderr %q", args, r.stderr)
		}
	}
}
