// Package e2e drives the embedded platform (`dorad dev`) end to end with
// qdoractl's own code, the way README's quick start does, and checks the bytes
// that come back through the router.
package e2e

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/cli/platform"
	"github.com/doraproject/dora/cli/platform/platformtest"
	"github.com/doraproject/dora/cli/qdoractl/cmd"
)

const (
	rootAK = "e2eRootAccessKey0000000001"
	rootSK = "e2eRootSecretKey00000000000000000000001"
)

// harness is one embedded platform plus a qdoractl home.
type harness struct {
	t       *testing.T
	dataDir string
	dev     *platform.Dev
	mods    []func(*platform.DevConfig) // applied at every start
}

func startDev(t *testing.T, dataDir string, mods ...func(*platform.DevConfig)) *platform.Dev {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("E2E_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	cfg := platform.DevConfig{
		DataDir:    dataDir,
		AdminAddr:  "127.0.0.1:0",
		RouterAddr: "127.0.0.1:0",
		RootAK:     rootAK,
		RootSK:     rootSK,
		Logger:     logger,
		GoCache:    goCache,
	}
	for _, m := range mods {
		m(&cfg)
	}
	dev, err := platform.StartDev(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start dorad dev: %v", err)
	}
	return dev
}

func newHarness(t *testing.T, mods ...func(*platform.DevConfig)) *harness {
	t.Helper()
	t.Setenv("HOME", t.TempDir())
	for _, k := range []string{"DORA_API", "DORA_AK", "DORA_SK", "QDORACTL_CONFIG"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	h := &harness{t: t, dataDir: reachableDataDir(t), mods: mods}
	h.dev = startDev(t, h.dataDir, mods...)
	t.Cleanup(func() {
		if h.dev != nil {
			h.dev.Close()
		}
	})
	h.q("login", "-u", rootAK, "-p", rootSK, "--api", h.dev.AdminURL)
	return h
}

// restart stops the platform and starts it again on the same data dir.
func (h *harness) restart() {
	h.t.Helper()
	if err := h.dev.Close(); err != nil {
		h.t.Fatalf("stop dorad dev: %v", err)
	}
	h.dev = startDev(h.t, h.dataDir, h.mods...)
	h.q("login", "-u", rootAK, "-p", rootSK, "--api", h.dev.AdminURL)
}

// q runs qdoractl and fails the test unless it exits 0.
func (h *harness) q(args ...string) string {
	h.t.Helper()
	out, errOut, code := h.qcode(args...)
	if code != 0 {
		h.t.Fatalf("qdoractl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// qfail runs qdoractl, expects a failure, and returns its stderr.
func (h *harness) qfail(args ...string) string {
	h.t.Helper()
	out, errOut, code := h.qcode(args...)
	if code == 0 {
		h.t.Fatalf("qdoractl %s succeeded, want a failure\nstdout: %s", strings.Join(args, " "), out)
	}
	return errOut
}

func (h *harness) qcode(args ...string) (string, string, int) {
	var stdout, stderr bytes.Buffer
	// A hang bound, not a timing assertion: the package's first build
	// compiles the standard library into a fresh cache as the run-as user,
	// which took over 3 minutes at load 20 (CI, TestAutoscaleToCeilingAndBack).
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	code := cmd.Run(ctx, args, strings.NewReader(""), &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

// get fetches a processing URL through the router with the bucket's Host.
func (h *harness) get(host, pathQuery string) (int, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.dev.RouterURL+pathQuery, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("GET %s%s: %v", host, pathQuery, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("read %s: %v", pathQuery, err)
	}
	return resp.StatusCode, body
}

// eventually polls cond until it holds or a minute passes.
func (h *harness) eventually(what string, cond func() (bool, string)) {
	h.t.Helper()
	deadline := time.Now().Add(time.Minute)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(200 * time.Millisecond)
	}
	h.t.Fatalf("timed out waiting for %s; last state:\n%s", what, last)
}

// putDemo creates bucket and uploads demoText into it as demo.txt with
// qdoractl, as a user would.
func (h *harness) putDemo(bucket string) {
	h.t.Helper()
	demo := filepath.Join(h.t.TempDir(), "demo.txt")
	writeFile(h.t, demo, demoText)
	h.q("bucket", "create", bucket)
	h.q("put", bucket, "demo.txt", demo)
}

const demoText = "hello dora\nnothing here\nhello again\n"

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

var healthyRow = regexp.MustCompile(`(?m)^\d+\s+\S+\s+RUNNING\s+true\b`)

// TestQuickStart follows README's quick start: login, bucket, put, register,
// build examples/grepd, ufopver, resize -num 2, then processing URLs; then the
// Dora flow (release --config naming grepd.v1, deploy --expect 2, deploy --id
// RUNNING); then a restart that must keep metadata, objects and instances.
func TestQuickStart(t *testing.T) {
	h := newHarness(t)
	h.putDemo("demo")
	if code, body := h.get("demo.localhost", "/demo.txt"); code != 200 || string(body) != demoText {
		t.Fatalf("plain GET: %d %q", code, body)
	}

	h.q("reg", "grepd", "-mode", "1", "-desc", "demo ufop")
	out := h.q("build", "grepd", "-dir", filepath.Join(platformtest.RepoRoot(t), "examples", "grepd"))
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("build output does not report success:\n%s", out)
	}
	if out := h.q("imageinfo", "grepd"); !strings.Contains(out, "grepd.v1") {
		t.Fatalf("imageinfo lacks grepd.v1:\n%s", out)
	}
	if out := h.q("buildlog", "grepd", "-v", "1"); !strings.Contains(out, "go build") {
		t.Fatalf("build log lacks the build script:\n%s", out)
	}
	h.q("ufopver", "grepd", "-c", "1")
	h.q("resize", "grepd", "-num", "2")
	h.eventually("two healthy grepd instances", func() (bool, string) {
		out, _, _ := h.qcode("state", "grepd")
		return len(healthyRow.FindAllString(out, -1)) == 2, out
	})

	h.eventually("grepd answering through the router", func() (bool, string) {
		code, body := h.get("demo.localhost", "/demo.txt?grepd/hello")
		return code == 200 && string(body) == "hello dora\nhello again\n", fmt.Sprintf("%d %q", code, body)
	})
	code, body := h.get("demo.localhost", "/demo.txt?grepd/hello|qhash/md5")
	var hash struct {
		Hash  string `json:"hash"`
		Fsize int64  `json:"fsize"`
	}
	if code != 200 || json.Unmarshal(body, &hash) != nil {
		t.Fatalf("pipeline with a built-in: %d %q", code, body)
	}
	if want := md5hex("hello dora\nhello again\n"); hash.Hash != want || hash.Fsize != 23 {
		t.Fatalf("qhash of grepd output = %+v, want hash %s fsize 23", hash, want)
	}

	// The Dora flow: a release naming the built package, deployed with --expect.
	relDir := filepath.Join(t.TempDir(), "release")
	if err := os.MkdirAll(relDir, 0o755); err != nil {
		t.Fatal(err)
	}
	doraYAML := "ufopname: grepd\nverstr: v2\nimage: grepd.v1\ndesc: e2e\nflavor: C1M1\nhealth_check:\n  path: /health\n  timeout: 1\nlog_file_paths: []\n"
	if err := os.WriteFile(filepath.Join(relDir, "dora.yaml"), []byte(doraYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := h.q("release", "--config", relDir); !strings.Contains(out, "Build success") {
		t.Fatalf("release --config:\n%s", out)
	}
	if out := h.q("release", "grepd", "-d"); !strings.Contains(out, "v2") || !strings.Contains(out, "C1M1") {
		t.Fatalf("release -d lacks v2:\n%s", out)
	}
	out = h.q("deploy", "grepd", "v2", "--region", "z0", "--expect", "2")
	id := regexp.MustCompile(`deploy-[0-9a-f-]{36}`).FindString(out)
	if id == "" {
		t.Fatalf("deploy printed no id:\n%s", out)
	}
	h.eventually("deployment "+id+" RUNNING", func() (bool, string) {
		out, _, _ := h.qcode("deploy", "grepd", "--id", id)
		return strings.Contains(out, "RUNNING"), out
	})

	// Persistent processing: pfop through qdoractl, the saved result read
	// back through the router with ?p/1/<fop>.
	if out := h.q("pfop", "demo", "demo.txt", "grepd/again|qhash/sha1", "--wait"); !strings.Contains(out, "code 0") {
		t.Fatalf("pfop --wait did not end with code 0:\n%s", out)
	}
	code, body = h.get("demo.localhost", "/demo.txt?p/1/grepd/again|qhash/sha1")
	if code != 200 || !strings.Contains(string(body), `"hash"`) {
		t.Fatalf("saved pfop result: %d %q", code, body)
	}
	if code, _ := h.get("demo.localhost", "/demo.txt?p/1/grepd/never|qhash/sha1"); code != 404 {
		t.Fatalf("absent saved result: status %d, want 404", code)
	}

	// Restart: metadata, objects and running instances come back.
	h.restart()
	if out := h.q("bucket", "list"); !strings.Contains(out, "demo") {
		t.Fatalf("bucket lost across restart:\n%s", out)
	}
	if out := h.q("info", "grepd"); !strings.Contains(out, "demo ufop") {
		t.Fatalf("ufop lost across restart:\n%s", out)
	}
	h.eventually("grepd answering after restart", func() (bool, string) {
		code, body := h.get("demo.localhost", "/demo.txt?grepd/again")
		return code == 200 && string(body) == "hello again\n", fmt.Sprintf("%d %q", code, body)
	})
	h.eventually("deployment "+id+" RUNNING after restart", func() (bool, string) {
		out, _, _ := h.qcode("deploy", "grepd", "--id", id)
		return strings.Contains(out, "RUNNING"), out
	})
}

// TestBadInputLeavesNothingHalfCreated checks that each mistake a user can
// make on the command line gets a clear error and creates nothing.
func TestBadInputLeavesNothingHalfCreated(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"short name", []string{"register", "abc"}, "5 to 20"},
		{"upper case", []string{"register", "GrepD1"}, "5 to 20"},
		{"reserved", []string{"register", "imageInfo"}, "reserved"},
		{"bad mode", []string{"register", "okname", "-m", "secret"}, "mode"},
		{"unknown ufop info", []string{"info", "nosuchufop"}, "not"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errOut := h.qfail(tc.args...)
			if !strings.Contains(strings.ToLower(errOut), strings.ToLower(tc.want)) {
				t.Fatalf("error %q does not mention %q", errOut, tc.want)
			}
		})
	}
	h.q("register", "goodname")
	if errOut := h.qfail("register", "goodname"); !strings.Contains(errOut, "409") && !strings.Contains(strings.ToLower(errOut), "exist") && !strings.Contains(strings.ToLower(errOut), "taken") {
		t.Fatalf("duplicate name error unclear: %q", errOut)
	}
	if out := h.q("list"); strings.Count(out, "goodname") != 1 || strings.Contains(out, "okname") {
		t.Fatalf("list after failures:\n%s", out)
	}

	// A build script that fails: recorded as FAILED, its log names the line.
	pkg := t.TempDir()
	if err := os.WriteFile(filepath.Join(pkg, "ufop.yaml"), []byte("image: ubuntu\nbuild_script:\n  - echo first\n  - exit 7\n  - echo never\nrun: ./nothing\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.qfail("build", "goodname", "-dir", pkg)
	if out := h.q("imageinfo", "goodname"); !strings.Contains(out, "FAILED") {
		t.Fatalf("failed build not recorded as FAILED:\n%s", out)
	}
	if log := h.q("buildlog", "goodname", "-v", "1"); !strings.Contains(log, "exit 7") || strings.Contains(log, "never\n") {
		t.Fatalf("build log does not stop at the failing line:\n%s", log)
	}

	// Bad yaml: nothing built.
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "ufop.yaml"), []byte("image: [unclosed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.qfail("build", "goodname", "-dir", bad)
	if out := h.q("imageinfo", "goodname"); strings.Contains(out, "\n2 ") {
		t.Fatalf("a bad package created build 2:\n%s", out)
	}

	// Unknown flavor and region, deploy over the limit.
	relDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(relDir, "dora.yaml"), []byte("ufopname: goodname\nverstr: v1\nimage: goodname.v1\nflavor: C99M99\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if errOut := h.qfail("release", "--config", relDir); !strings.Contains(strings.ToLower(errOut), "flavor") && !strings.Contains(strings.ToLower(errOut), "image") {
		t.Fatalf("unknown flavor/image error unclear: %q", errOut)
	}
	if errOut := h.qfail("deploy", "goodname", "v1", "--region", "nowhere", "--expect", "1"); !strings.Contains(strings.ToLower(errOut), "region") && !strings.Contains(strings.ToLower(errOut), "release") {
		t.Fatalf("unknown region error unclear: %q", errOut)
	}
	if out := h.q("deploy", "goodname", "--all"); strings.Contains(out, "deploy-") {
		t.Fatalf("a failed deploy left a deployment:\n%s", out)
	}
}

// goCache is a Go build cache shared by every embedded platform of this
// package, so only the first build compiles the standard library as the
// platform's run-as user.
var goCache string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dora-e2e-gocache-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o711)
	goCache = filepath.Join(dir, "go-build")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// reachableDataDir is a data directory the platform's run-as user (nobody,
// when the tests run as root) can traverse to: t.TempDir's parent is 0700.
func reachableDataDir(t *testing.T) string {
	t.Helper()
	return filepath.Join(platformtest.ReachableTempDir(t), "data")
}
