package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/doraproject/dora/cli/platform"
	"github.com/doraproject/dora/internal/agenttest"
)

// demoOnce builds testdata/ufopdemo (Qiniu's demo shape: /handler,
// /health, port 9100 unless PORT_HTTP) once, static, for every image test.
var demoOnce struct {
	sync.Once
	bin string
	err error
}

func demoBinary(t *testing.T) string {
	t.Helper()
	demoOnce.Do(func() {
		// Beside the package's Go cache, in the directory TestMain
		// removes (a directory of its own was left in /tmp every run).
		demoOnce.bin = filepath.Join(filepath.Dir(goCache), "ufopdemo")
		cmd := exec.Command("go", "build", "-o", demoOnce.bin, "./testdata/ufopdemo/main.go")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			demoOnce.err = fmt.Errorf("build ufopdemo: %v\n%s", err, out)
		}
	})
	if demoOnce.err != nil {
		t.Fatal(demoOnce.err)
	}
	return demoOnce.bin
}

// podman runs the podman CLI the way the runtime does.
func podman(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("podman", append([]string{"--runtime", "runc"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// containersOf lists the containers (any state) of a deployment.
func containersOf(t *testing.T, deployment string) []string {
	t.Helper()
	return strings.Fields(podman(t, "ps", "--all", "--format", "{{.Names}}", "--filter", "label=dora.deployment="+deployment))
}

var deployIDRE = regexp.MustCompile(`deploy-[0-9a-f-]{36}`)

// releaseImage registers ufop, releases image as version v1 (C1M1, health
// at healthPath) and deploys it with --expect n; it returns the deployment id.
func (h *harness) releaseImage(ufop, image, healthPath string, n int) string {
	h.t.Helper()
	h.q("register", ufop, "-m", "private", "-d", "image test")
	relDir := h.t.TempDir()
	writeFile(h.t, filepath.Join(relDir, "dora.yaml"), fmt.Sprintf(
		"ufopname: %s\nverstr: v1\nimage: %s\ndesc: a demo\nflavor: C1M1\nhealth_check:\n  path: %s\n  timeout: 3\nlog_file_paths: []\n", ufop, image, healthPath))
	h.q("release", "--config", relDir)
	out := h.q("deploy", ufop, "v1", "--region", "z0", "--expect", fmt.Sprint(n))
	id := deployIDRE.FindString(out)
	if id == "" {
		h.t.Fatalf("deploy printed no id:\n%s", out)
	}
	return id
}

// removeImagesAtEnd makes h's test remove, once it ends, every image
// name podman has from h's registry: the admin's address, a loopback port
// of this platform's own, so the names the runtime pulled for the test's
// deployments and no one else's. A closed runtime keeps them for its next
// run (which a test never has): run after run they filled podman's
// storage. The platform is closed first, so that no container holds
// them; the test fails when a name is left.
func (h *harness) removeImagesAtEnd() {
	t := h.t
	t.Helper()
	prefix := strings.TrimPrefix(h.dev.AdminURL, "http://") + "/"
	t.Cleanup(func() {
		if h.dev != nil {
			if err := h.dev.Close(); err != nil {
				t.Errorf("stop dorad dev: %v", err)
			}
			h.dev = nil
		}
		if names := imagesFrom(t, prefix); len(names) > 0 {
			podman(t, append([]string{"rmi"}, names...)...)
		}
		if left := imagesFrom(t, prefix); len(left) > 0 {
			t.Errorf("image names left in podman's storage: %v", left)
		}
	})
}

// imagesFrom lists the image names podman has whose reference starts
// with prefix ("host:port/").
func imagesFrom(t *testing.T, prefix string) []string {
	t.Helper()
	var names []string
	for _, n := range strings.Fields(podman(t, "images", "--format", "{{.Repository}}:{{.Tag}}")) {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	return names
}

func requirePodman(t *testing.T) {
	t.Helper()
	for _, b := range []string{"podman", "runc"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not installed (scripts/install-deps.sh installs it): %v", b, err)
		}
	}
}

// TestImageQuickStart is seed 000 with a Docker image: a static Go program
// shaped like Qiniu's demo (fixed port 9100) packed as a docker-save
// tarball, push --from, release --config, deploy --expect 2, then
// processing URLs through the router; a killed container is restarted
// while requests keep succeeding; resize -num 3; the flavor's memory limit
// is enforced (OOM kill, restart, said in state and logtail); nothing is
// left running once the platform stops.
func TestImageQuickStart(t *testing.T) {
	requirePodman(t)
	h := newHarness(t)
	h.removeImagesAtEnd()
	work := t.TempDir()
	tarPath := filepath.Join(work, "ufopdemo.tar")
	agenttest.PackImage(t, demoBinary(t), tarPath, "ufopdemo:v1", agenttest.ImageOptions{})

	if out := h.q("push", "ufopdemo:v1", "--from", tarPath); !strings.Contains(out, "Push success") {
		t.Fatalf("push:\n%s", out)
	}
	h.putDemo("demo")

	t0 := time.Now()
	id := h.releaseImage("doraufoptest", "ufopdemo:v1", "/health", 2)
	var first time.Duration
	h.eventually("first 200 through the router", func() (bool, string) {
		code, body := h.get("demo.localhost", "/demo.txt?doraufoptest")
		if code == 200 {
			first = time.Since(t0)
		}
		return code == 200, fmt.Sprintf("%d %s", code, body)
	})
	t.Logf("deploy -> first 200: %v", first)

	want := strings.ToUpper(demoText)
	if code, body := h.get("demo.localhost", "/demo.txt?doraufoptest"); code != 200 || string(body) != want {
		t.Fatalf("?doraufoptest: %d %q, want %q", code, body, want)
	}
	if code, body := h.get("demo.localhost", "/demo.txt?doraufoptest|qhash/md5"); code != 200 || !strings.Contains(string(body), md5hex(want)) {
		t.Fatalf("?doraufoptest|qhash/md5: %d %s, want md5 %s", code, body, md5hex(want))
	}
	h.eventually("state shows 2 running", func() (bool, string) {
		out := h.q("state", "doraufoptest")
		return len(healthyRow.FindAllString(out, -1)) == 2, out
	})
	h.eventually("deploy --id RUNNING", func() (bool, string) {
		out := h.q("deploy", "doraufoptest", "--id", id)
		return strings.Contains(out, "RUNNING"), out
	})

	// Each instance is a container with the flavor's limits (C1M1: one
	// core, 1 GiB, no swap beyond it), port 9100 inside.
	names := containersOf(t, id)
	if len(names) != 2 {
		t.Fatalf("containers of %s: %v", id, names)
	}
	var hc []struct {
		HostConfig struct {
			Memory, MemorySwap, NanoCpus int64
		}
		NetworkSettings struct {
			Ports map[string]any
		}
	}
	if err := json.Unmarshal([]byte(podman(t, "container", "inspect", names[0])), &hc); err != nil || len(hc) != 1 {
		t.Fatalf("inspect %s: %v", names[0], err)
	}
	if c := hc[0].HostConfig; c.Memory != 1<<30 || c.MemorySwap != 1<<30 || c.NanoCpus != 1e9 {
		t.Errorf("limits of %s: %+v, want 1 GiB and 1 CPU", names[0], c)
	}
	if _, ok := hc[0].NetworkSettings.Ports["9100/tcp"]; !ok {
		t.Errorf("%s does not publish 9100/tcp: %v", names[0], hc[0].NetworkSettings.Ports)
	}

	// Kill one container: it is restarted, and requests keep succeeding
	// meanwhile (the router retries a refused connection on the other).
	one := strings.Fields(podman(t, "ps", "--format", "{{.Names}}", "--filter", "label=dora.deployment="+id, "--filter", "label=dora.instance=1"))
	if len(one) != 1 {
		t.Fatalf("containers of instance 1 of %s: %v", id, one)
	}
	podman(t, "kill", one[0])
	for i := 0; i < 20; i++ {
		if code, body := h.get("demo.localhost", "/demo.txt?doraufoptest"); code != 200 || string(body) != want {
			t.Fatalf("request %d after the kill: %d %s", i, code, body)
		}
	}
	h.eventually("instance 1 restarted and running", func() (bool, string) {
		out := h.q("state", "doraufoptest")
		return regexp.MustCompile(`(?m)^1\s+\S+\s+RUNNING\s+true\s+\d+\s+\S+\s+[1-9]`).MatchString(out), out
	})

	h.q("resize", "doraufoptest", "-num", "3")
	h.eventually("state shows 3 running", func() (bool, string) {
		out := h.q("state", "doraufoptest")
		return len(healthyRow.FindAllString(out, -1)) == 3, out
	})
	if n := len(containersOf(t, id)); n != 3 {
		t.Fatalf("%d containers after resize -num 3", n)
	}

	// Past its 1 GiB an instance is killed by the kernel and restarted;
	// logtail says it was out of memory.
	if code, _ := h.get("demo.localhost", "/demo.txt?doraufoptest/eat/1500"); code == 200 {
		t.Fatal("eating 1500 MiB under a 1 GiB limit succeeded")
	}
	h.eventually("an OOM kill in logtail", func() (bool, string) {
		var all string
		for i := 1; i <= 3; i++ {
			all += h.q("logtail", "doraufoptest", "-index", fmt.Sprint(i), "-type", "stderr")
		}
		return strings.Contains(all, "out of memory (OOM; limit 1024 MiB of flavor C1M1)"), all
	})
	h.eventually("state says OOM and shows 3 running again", func() (bool, string) {
		out := h.q("state", "doraufoptest")
		return strings.Contains(out, "out of memory") && len(healthyRow.FindAllString(out, -1)) == 3, out
	})
	if code, body := h.get("demo.localhost", "/demo.txt?doraufoptest"); code != 200 || string(body) != want {
		t.Fatalf("after the OOM: %d %s", code, body)
	}

	// Stopping the platform stops and removes every container.
	if err := h.dev.Close(); err != nil {
		t.Fatal(err)
	}
	h.dev = nil
	if left := containersOf(t, id); len(left) != 0 {
		t.Fatalf("containers left after dorad dev stopped: %v", left)
	}
}

// TestImageBadInputs: an image that cannot run makes its deployment FAILED
// with the reason in deploy --id, state and logtail, leaves no container
// running, and requests to it get a 503 at once (not a hold); a corrupt
// tarball is refused before anything is stored.
func TestImageBadInputs(t *testing.T) {
	requirePodman(t)
	h := newHarness(t, func(c *platform.DevConfig) {
		c.HealthyDeadline = 5 * time.Second
		c.HoldTimeout = 10 * time.Minute // a hold would outlast the test
	})
	h.removeImagesAtEnd()
	work := t.TempDir()
	bin := demoBinary(t)
	h.putDemo("demo")

	// A corrupt tarball: refused, nothing listed.
	good := filepath.Join(work, "good.tar")
	agenttest.PackImage(t, bin, good, "good:v1", agenttest.ImageOptions{Salt: true})
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	corrupt := filepath.Join(work, "corrupt.tar")
	if err := os.WriteFile(corrupt, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if msg := h.qfail("push", "corrupt:v1", "--from", corrupt); !strings.Contains(msg, "corrupt or incomplete") {
		t.Fatalf("push of a corrupt tarball: %s", msg)
	}
	if out := h.q("image"); strings.Contains(out, "corrupt") {
		t.Fatalf("a corrupt image was stored:\n%s", out)
	}

	missing := filepath.Join(work, "missing.tar")
	img := agenttest.PackImage(t, bin, missing, "missing:v1", agenttest.ImageOptions{Salt: true})
	h.q("push", "missing:v1", "--from", missing)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ld, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	// The registry lost the layer (a disk problem): the pull fails.
	if err := os.Remove(filepath.Join(h.dataDir, "registry", "blobs", "sha256", ld.Hex)); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		ufop, image, health, why string
		o                        agenttest.ImageOptions
	}{
		{"noentry", "noentry:v1", "/health", "no entrypoint", agenttest.ImageOptions{Entrypoint: []string{}}},
		{"otherarch", "otherarch:v1", "/health", "architecture " + otherArch(), agenttest.ImageOptions{Arch: otherArch()}},
		{"exits", "exits:v1", "/health", "crashed 5 times", agenttest.ImageOptions{Env: []string{"UFOPDEMO_EXIT=3"}}},
		{"unhealthy", "unhealthy:v1", "/nope", "health check never passed", agenttest.ImageOptions{}},
		{"missing", "missing:v1", "/health", "pull", agenttest.ImageOptions{}},
	}
	ids := map[string]string{}
	for _, c := range cases {
		if c.ufop != "missing" {
			p := filepath.Join(work, c.ufop+".tar")
			agenttest.PackImage(t, bin, p, c.image, c.o)
			h.q("push", c.image, "--from", p)
		}
		ids[c.ufop] = h.releaseImage(c.ufop, c.image, c.health, 2)
	}
	for _, c := range cases {
		id := ids[c.ufop]
		h.eventually(c.ufop+": FAILED with the reason in deploy --id", func() (bool, string) {
			out, _, _ := h.qcode("deploy", c.ufop, "--id", id)
			return strings.Contains(out, "FAILED") && strings.Contains(out, c.why), out
		})
		if out := h.q("state", c.ufop); !strings.Contains(out, "FAILED") || !strings.Contains(out, c.why) {
			t.Errorf("%s: state:\n%s", c.ufop, out)
		}
		if out := h.q("logtail", c.ufop, "-index", "1", "-type", "stderr"); !strings.Contains(out, c.why) && !strings.Contains(out, "dora: ") {
			t.Errorf("%s: logtail says nothing of the failure:\n%s", c.ufop, out)
		}
		// The deployment is FAILED once one instance is; the other may
		// still be between its last crashes, so its container is given
		// the time to exit (a crash loop that never ended would fail here).
		h.eventually(c.ufop+": no container of the deployment left running", func() (bool, string) {
			running := strings.Fields(podman(t, "ps", "--format", "{{.Names}}", "--filter", "label=dora.deployment="+id))
			return len(running) == 0, strings.Join(running, "\n")
		})
		code, body := h.get("demo.localhost", "/demo.txt?"+c.ufop)
		if code != 503 || !strings.Contains(string(body), "deployment FAILED") || !json.Valid(body) {
			t.Errorf("%s: request: %d %s, want a 503 JSON saying the deployment FAILED", c.ufop, code, body)
		}
	}
}

// TestImageRefusedWithoutContainerRuntime: with no container runtime the
// deploy of an image is refused at once, saying what to install, and no
// deployment is recorded.
func TestImageRefusedWithoutContainerRuntime(t *testing.T) {
	h := newHarness(t, func(c *platform.DevConfig) { c.ContainerRuntime = "none" })
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
	msg := h.qfail("deploy", "doraufoptest", "v1", "--region", "z0", "--expect", "2")
	if !strings.Contains(msg, "no container runtime") || !strings.Contains(msg, "apt-get install podman runc") {
		t.Fatalf("deploy without a container runtime: %s", msg)
	}
	if out := h.q("deploy", "doraufoptest", "--all"); deployIDRE.MatchString(out) {
		t.Fatalf("a refused deploy left a deployment:\n%s", out)
	}
}

// otherArch is an architecture this host does not run.
func otherArch() string {
	if goruntime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFixedPortPackage: a program package whose program listens on the
// fixed port 9100 and ignores $PORT (Qiniu's demo) runs two instances on
// one dorad dev, each a container in its own network namespace, both
// healthy and serving through the router.
func TestFixedPortPackage(t *testing.T) {
	requirePodman(t)
	h := newHarness(t)
	h.removeImagesAtEnd()
	// The package carries the program already built (a build compiling
	// it is what TestQuickStart covers), so the build only copies it.
	src := t.TempDir()
	bin, err := os.ReadFile(demoBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "ufopdemo"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	// The demo speaks POST /handler: a package switched to with ufopver
	// speaks /uop unless ufop.yaml says otherwise.
	writeFile(t, filepath.Join(src, "ufop.yaml"), "image: ubuntu\nbuild_script:\n  - cp -r $RESOURCE/. .\nrun: ./ufopdemo\nprotocol: dora\n")
	h.putDemo("demo")

	h.q("reg", "fixedport", "-mode", "1", "-desc", "listens on 9100")
	if out := h.q("build", "fixedport", "-dir", src); !strings.Contains(out, "SUCCESS") {
		t.Fatalf("build:\n%s", out)
	}
	h.q("ufopver", "fixedport", "-c", "1")
	h.q("resize", "fixedport", "-num", "2")
	h.eventually("two healthy instances of a fixed-port program", func() (bool, string) {
		out, _, _ := h.qcode("state", "fixedport")
		return len(healthyRow.FindAllString(out, -1)) == 2, out
	})
	want := strings.ToUpper(demoText)
	for i := 0; i < 10; i++ {
		if code, body := h.get("demo.localhost", "/demo.txt?fixedport"); code != 200 || string(body) != want {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
	}
	// A container's output is relayed (conmon, podman, a copier) apart
	// from its health check.
	for i := 1; i <= 2; i++ {
		h.eventually(fmt.Sprintf("logtail of instance %d shows :9100", i), func() (bool, string) {
			out := h.q("logtail", "fixedport", "-index", fmt.Sprint(i))
			return strings.Contains(out, "listening on :9100"), out
		})
	}
}

// TestImageTestsLeaveNoImages: a test that deploys an image removes, when
// it ends (removeImagesAtEnd), the names the platform pulled into
// podman's storage: the image tests left about 150 of them (ufopdemo,
// exits, otherarch, noentry, unhealthy...) run after run.
func TestImageTestsLeaveNoImages(t *testing.T) {
	requirePodman(t)
	var prefix string
	t.Run("deploy", func(t *testing.T) {
		h := newHarness(t)
		h.removeImagesAtEnd()
		prefix = strings.TrimPrefix(h.dev.AdminURL, "http://") + "/"
		tarPath := filepath.Join(t.TempDir(), "leaves.tar")
		agenttest.PackImage(t, demoBinary(t), tarPath, "leaves:v1", agenttest.ImageOptions{Salt: true})
		h.q("push", "leaves:v1", "--from", tarPath)
		h.releaseImage("leaves", "leaves:v1", "/health", 1)
		h.eventually("the image pulled", func() (bool, string) {
			names := imagesFrom(t, prefix)
			return len(names) == 1, strings.Join(names, "\n")
		})
	})
	if left := imagesFrom(t, prefix); prefix != "" && len(left) > 0 {
		podman(t, append([]string{"rmi"}, left...)...)
		t.Fatalf("the test left image names in podman's storage: %v", left)
	}
}
