package local

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/agenttest"
)

// podmanRuntime is a Runtime with podman; a missing podman fails the test
// (scripts/install-deps.sh installs it).
func podmanRuntime(t *testing.T, pub Publisher, packages bool) *Runtime {
	t.Helper()
	pod, err := DetectPodman(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return newRuntimeWith(t, Config{Dir: t.TempDir(), Publisher: pub, Podman: pod, PackagesInContainers: packages})
}

// pushGrepdImage packs the grepd example (built by TestMain, reading
// $PORT) as an image with entrypoint /app into a registry on loopback and
// returns its reference.
func pushGrepdImage(t *testing.T) string {
	t.Helper()
	return pushGrepdImageWith(t, agenttest.ImageOptions{})
}

// pushGrepdImageWith is pushGrepdImage with the image shaped by o (more
// entries in its layer, a working directory).
func pushGrepdImageWith(t *testing.T, o agenttest.ImageOptions) string {
	t.Helper()
	srv := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	img := agenttest.Image(t, filepath.Join(grepdDir, "grepd"), o)
	ref := strings.TrimPrefix(srv.URL, "http://") + "/test/grepd:v1"
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		t.Fatal(err)
	}
	return ref
}

// labelled lists r's containers of deployment, in any state (those of
// another runtime on the host, such as a second run of these tests, with
// the same deployment id are not r's).
func labelled(t *testing.T, r *Runtime, deployment string) []string {
	t.Helper()
	return containersLabelled(t, "dora.deployment="+deployment, ownerLabel+"="+ownerValue(r.cfg.Dir))
}

// TestContainerImage: an OCI image is pulled and runs as containers, each
// listening on 9100 in its own network namespace behind its own loopback
// port, healthy, published with the router's host as containers see it;
// a killed container is restarted; Remove leaves no container.
func TestContainerImage(t *testing.T) {
	rec := &recorder{}
	r := podmanRuntime(t, rec, false)
	if err := r.CanRunImages(); err != nil {
		t.Fatal(err)
	}
	spec := grepdSpec("deploy-img", 2)
	spec.Package = nil
	spec.OCIImage = pushGrepdImage(t)
	spec.Flavor = dora.Flavor{Name: "C1M1", CPU: 1000, MemoryMB: 256}
	if err := r.Apply(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "two healthy containers", func() bool { return status(t, r, "deploy-img").Healthy == 2 })
	insts := r.Instances()
	if len(insts) != 2 || insts[0].RouterHost != HostLoopback || insts[0].Addr == insts[1].Addr {
		t.Fatalf("published: %+v", insts)
	}
	for _, in := range insts {
		resp, err := http.Post("http://"+in.Addr+"/handler?cmd=grepd/dora", "text/plain", strings.NewReader("hello dora\nno\n"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "hello dora\n" {
			t.Fatalf("%s answered %q", in.Addr, b)
		}
	}
	// The container's stderr reaches the runtime through podman's attach
	// stream, which may lag behind the health check under load: wait for
	// the line rather than expect it at once.
	eventually(t, "grepd listening on 9100 (PORT) in its log", func() bool {
		rc, err := r.Logs(context.Background(), "deploy-img", runtime.LogQuery{Index: 1, Stream: "stderr"})
		if err != nil {
			t.Fatal(err)
		}
		logs, _ := io.ReadAll(rc)
		return strings.Contains(string(logs), ":9100")
	})
	if err := exec.Command("podman", "kill", r.containerName("deploy-img-1")).Run(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "instance 1 restarted", func() bool {
		st := status(t, r, "deploy-img")
		return st.Healthy == 2 && st.Instances[0].Restarts > 0
	})
	if err := r.Remove(context.Background(), "deploy-img"); err != nil {
		t.Fatal(err)
	}
	if left := labelled(t, r, "deploy-img"); len(left) != 0 {
		t.Fatalf("containers left after Remove: %v", left)
	}
}

// TestContainerCollectedLogs: an image instance's log_file_paths are read
// from the container's own filesystem: absolute paths as the container
// sees them, relative ones from its working directory; a symlink out of
// the container's root is not followed.
func TestContainerCollectedLogs(t *testing.T) {
	r := podmanRuntime(t, nil, false)
	file := func(tw *tar.Writer, name, text string) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(text)), Typeflag: tar.TypeReg})
		tw.Write([]byte(text))
	}
	ref := pushGrepdImageWith(t, agenttest.ImageOptions{WorkingDir: "/work", Layer: func(tw *tar.Writer) {
		tw.WriteHeader(&tar.Header{Name: "var/log/", Mode: 0o755, Typeflag: tar.TypeDir})
		file(tw, "var/log/app.log", "in the image\n")
		tw.WriteHeader(&tar.Header{Name: "var/log/escape.log", Typeflag: tar.TypeSymlink, Linkname: "/etc/hostname"})
		tw.WriteHeader(&tar.Header{Name: "work/", Mode: 0o755, Typeflag: tar.TypeDir})
		tw.WriteHeader(&tar.Header{Name: "work/logs/", Mode: 0o755, Typeflag: tar.TypeDir})
		file(tw, "work/logs/b.log", "relative one\nrelative two\n")
	}})
	spec := grepdSpec("deploy-clogs", 1)
	spec.Package = nil
	spec.OCIImage = ref
	spec.Flavor = dora.Flavor{Name: "C1M1", CPU: 1000, MemoryMB: 256}
	spec.Release.LogFilePaths = []string{"/var/log", "logs/*.log"}
	if err := r.Apply(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a healthy container", func() bool { return status(t, r, "deploy-clogs").Healthy == 1 })
	lines, err := r.CollectedLogs("deploy-clogs", 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(lines, ","); got != "in the image,relative one,relative two" {
		t.Fatalf("collected %q", lines)
	}
	spec.Release.LogFilePaths = []string{"../../etc/hostname"}
	if err := r.Apply(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	if lines, err := r.CollectedLogs("deploy-clogs", 1); err == nil {
		t.Fatalf("a relative path leaving the working dir was accepted: %q", lines)
	}
	if err := r.Remove(context.Background(), "deploy-clogs"); err != nil {
		t.Fatal(err)
	}
}

// TestContainerImageRefused: an image that is missing fails Apply with
// the reason, and the deployment is FAILED with it in status and stderr.
func TestContainerImageRefused(t *testing.T) {
	r := podmanRuntime(t, nil, false)
	ref := pushGrepdImage(t)
	spec := grepdSpec("deploy-missing", 1)
	spec.Package = nil
	spec.OCIImage = strings.Replace(ref, "grepd:v1", "nothere:v1", 1)
	if err := r.Apply(context.Background(), spec); err == nil || !strings.Contains(err.Error(), "nothere") {
		t.Fatalf("Apply of a missing image: %v", err)
	}
	st := status(t, r, "deploy-missing")
	if st.Status != dora.DeployFailed || len(st.Instances) != 1 || st.Instances[0].State != runtime.StateFailed {
		t.Fatalf("status: %+v", st)
	}
	rc, err := r.Logs(context.Background(), "deploy-missing", runtime.LogQuery{Index: 1, Stream: "stderr"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	if !strings.Contains(string(b), "nothere") {
		t.Fatalf("stderr lacks the reason: %s", b)
	}
}

// TestPackageInContainer: with PackagesInContainers a program package runs
// in the minimal root filesystem, sees PORT=9100 and its working dir, and
// two instances coexist on the same port in their own namespaces.
func TestPackageInContainer(t *testing.T) {
	r := podmanRuntime(t, nil, true)
	spec := grepdSpec("deploy-pkg", 2)
	if err := r.Apply(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "two healthy package containers", func() bool { return status(t, r, "deploy-pkg").Healthy == 2 })
	for i := 1; i <= 2; i++ {
		eventually(t, "instance listening on 9100 in its log", func() bool {
			rc, err := r.Logs(context.Background(), "deploy-pkg", runtime.LogQuery{Index: i, Stream: "stderr"})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(rc)
			return strings.Contains(string(b), ":9100")
		})
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if left := labelled(t, r, "deploy-pkg"); len(left) != 0 {
		t.Fatalf("containers left after Close: %v", left)
	}
}

func TestContainerEnv(t *testing.T) {
	got, pass := containerEnv([]dora.EnvVar{{Key: "A", Value: "1"}, {Key: "DORA_X", Value: "no"}, {Key: "PORT", Value: "1"}, {Key: "B", Value: "x\ny"}})
	if got != "A=1\nPORT=9100\nPORT_HTTP=9100\n" || len(pass) != 1 || pass[0] != "B=x\ny" {
		t.Fatalf("containerEnv = %q, %q", got, pass)
	}
	pe, pass := packageEnv([]string{"PATH=/bin", "SECRET=x"}, []dora.EnvVar{{Key: "CERT", Value: "a\r\nb"}}, "/w", nil)
	if len(pass) != 1 || pass[0] != "CERT=a\r\nb" || strings.Contains(pe, "CERT") {
		t.Errorf("packageEnv's variables on several lines: %q (file %q)", pass, pe)
	}
	for _, want := range []string{"HOST=0.0.0.0\n", "PORT=9100\n", "HOME=/w\n"} {
		if !strings.Contains(pe, want) {
			t.Errorf("packageEnv lacks %q: %q", want, pe)
		}
	}
	if strings.Contains(pe, "SECRET") {
		t.Errorf("packageEnv leaks the platform's environment: %q", pe)
	}
}

func TestInsecureHostAndOOMKills(t *testing.T) {
	for ref, want := range map[string]bool{
		"127.0.0.1:8090/1/a:v1": true, "localhost:5000/a": true, "[::1]:80/a": true,
		"registry.example.com/a": false, "10.0.0.1:5000/a": false,
	} {
		if insecureHost(ref) != want {
			t.Errorf("insecureHost(%s) = %v", ref, !want)
		}
	}
	if n := oomKills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"); n != 3 {
		t.Errorf("oomKills = %d", n)
	}
}

// TestContainerHealthIsTheContainers: the loopback port an image instance
// is published on is picked free, then bound by podman (rootlessport) a
// moment later, while the container starts. If another listener takes it
// in between, podman run fails ("address already in use") and the
// instance is restarted on a new port; the health check must not count an
// answer from that other listener meanwhile (the instance would be
// reported healthy and published at an address where something else
// answers, then refuses once that goes). Here the test itself is the
// other listener: it takes the port as soon as the runtime reports it and
// answers 200 to everything.
func TestContainerHealthIsTheContainers(t *testing.T) {
	r := podmanRuntime(t, nil, false)
	spec := grepdSpec("deploy-thief", 1)
	spec.Package = nil
	spec.OCIImage = pushGrepdImage(t)
	spec.Flavor = dora.Flavor{Name: "C1M1", CPU: 1000, MemoryMB: 256}
	var asked atomic.Int64
	thief := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		asked.Add(1)
		io.WriteString(w, "not the container\n")
	})}
	t.Cleanup(func() { thief.Close() })
	applied := make(chan error, 1)
	go func() { applied <- r.Apply(context.Background(), spec) }()
	// Take the port the runtime picked before podman binds it (podman
	// needs a good fraction of a second to create the container first).
	var stolen string
	for deadline := time.Now().Add(30 * time.Second); stolen == ""; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the runtime never reported the instance's address")
		}
		st, err := r.Status(context.Background(), "deploy-thief")
		if err != nil || len(st.Instances) != 1 || st.Instances[0].Addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", st.Instances[0].Addr)
		if err != nil {
			t.Fatalf("podman bound %s before the test could take it (%v): nothing to check", st.Instances[0].Addr, err)
		}
		stolen = st.Instances[0].Addr
		go thief.Serve(ln)
	}
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	// Until the instance is healthy on a port of its own, it must never be
	// healthy at the stolen address.
	var addr string
	eventually(t, "a healthy instance", func() bool {
		st := status(t, r, "deploy-thief")
		in := st.Instances[0]
		if in.Healthy && in.Addr == stolen {
			t.Fatalf("reported healthy at %s, where the test's listener answers, not the container (restarts %d)", stolen, in.Restarts)
		}
		addr = in.Addr
		return in.Healthy
	})
	if n := asked.Load(); n != 0 {
		t.Errorf("the health check asked the listener that took the port %d times", n)
	}
	st := status(t, r, "deploy-thief")
	if st.Instances[0].Restarts == 0 {
		t.Errorf("instance healthy without a restart after its port was taken: %+v", st.Instances[0])
	}
	resp, err := http.Post("http://"+addr+"/handler?cmd=grepd/dora", "text/plain", strings.NewReader("hello dora\nno\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hello dora\n" {
		t.Fatalf("%s answered %q", addr, b)
	}
}

// TestTwoRuntimesOneDeploymentID: two runtimes on one host (two dorad
// dev, or two runs of these tests) may run the same deployment id; their
// containers are not one another's: neither replaces (`podman run
// --replace`) nor sees the other's, and removing one leaves the other
// serving.
func TestTwoRuntimesOneDeploymentID(t *testing.T) {
	ref := pushGrepdImage(t)
	var rs [2]*Runtime
	for i := range rs {
		rs[i] = podmanRuntime(t, nil, false)
		spec := grepdSpec("deploy-twin", 1)
		spec.Package = nil
		spec.OCIImage = ref
		spec.Flavor = dora.Flavor{Name: "C1M1", CPU: 1000, MemoryMB: 256}
		if err := rs[i].Apply(context.Background(), spec); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range rs {
		eventually(t, fmt.Sprintf("runtime %d's instance healthy", i), func() bool { return status(t, r, "deploy-twin").Healthy == 1 })
	}
	serves := func(r *Runtime) error {
		in := status(t, r, "deploy-twin").Instances[0]
		resp, err := http.Post("http://"+in.Addr+"/handler?cmd=grepd/dora", "text/plain", strings.NewReader("hello dora\nno\n"))
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "hello dora\n" {
			return fmt.Errorf("%s answered %q", in.Addr, b)
		}
		return nil
	}
	for i, r := range rs {
		if err := serves(r); err != nil {
			t.Fatalf("runtime %d: %v", i, err)
		}
		if n := len(labelled(t, r, "deploy-twin")); n != 1 {
			t.Fatalf("runtime %d has %d containers of deploy-twin, want 1", i, n)
		}
	}
	restarts := status(t, rs[1], "deploy-twin").Instances[0].Restarts
	if err := rs[0].Remove(context.Background(), "deploy-twin"); err != nil {
		t.Fatal(err)
	}
	st := status(t, rs[1], "deploy-twin")
	if st.Healthy != 1 || st.Instances[0].Restarts != restarts {
		t.Fatalf("the other runtime's instance after Remove: %+v", st.Instances[0])
	}
	if err := serves(rs[1]); err != nil {
		t.Fatalf("the other runtime after Remove: %v", err)
	}
}

// TestContainerMultiLineEnv: a release variable whose value spans lines (a
// PEM certificate) reaches the container whole; podman's env file cannot
// carry it, and it was left out without a word. One named as a variable
// podman reads itself is refused at Apply with the reason.
func TestContainerMultiLineEnv(t *testing.T) {
	r := podmanRuntime(t, nil, true)
	spec := grepdSpec("deploy-pem", 1)
	spec.Package.Run = `printf 'cert<%s>\n' "$CERT" >&2; exec ./grepd`
	spec.Release.Env = []dora.EnvVar{{Key: "CERT", Value: "-----BEGIN-----\nAAAA\n-----END-----"}}
	if err := r.Apply(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the certificate's lines in the instance's log", func() bool {
		rc, err := r.Logs(context.Background(), "deploy-pem", runtime.LogQuery{Index: 1, Stream: "stderr"})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		return strings.Contains(string(b), " cert<-----BEGIN-----\n") && strings.Contains(string(b), " AAAA\n") &&
			strings.Contains(string(b), " -----END----->\n")
	})

	bad := grepdSpec("deploy-badenv", 1)
	bad.Release.Env = []dora.EnvVar{{Key: "HTTPS_PROXY", Value: "a\nb"}}
	if err := r.Apply(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "HTTPS_PROXY") {
		t.Fatalf("Apply with a multi-line HTTPS_PROXY: %v", err)
	}
	if st := status(t, r, "deploy-badenv"); st.Status != dora.DeployFailed || !strings.Contains(st.Message, "HTTPS_PROXY") {
		t.Fatalf("status %+v", st)
	}
}

// TestPackageInContainerSeesNoHostSecrets: a program package in a
// container, with no run-as user configured, ran as root with the host's
// /etc mounted read-only and read /etc/shadow. It runs as an unprivileged
// user, its working dir its own, and sees only the parts of /etc programs
// need (libraries' cache, certificates, alternatives): no shadow, no
// gshadow, no ssh keys. (The tests run as root, as CI does: rootful
// podman, whose containers' root is the host's.)
func TestPackageInContainerSeesNoHostSecrets(t *testing.T) {
	r := podmanRuntime(t, nil, true)
	if r.cfg.RunAs != nil {
		t.Fatalf("the test needs a runtime without a run-as user, got %v", r.cfg.RunAs)
	}
	spec := grepdSpec("deploy-secrets", 1)
	spec.Package.Run = `printf 'uid<%s>\n' "$(id -u)" >&2
for f in /etc/shadow /etc/gshadow /etc/ssh; do
  if [ -e "$f" ]; then echo "present<$f>" >&2; fi
  if cat "$f" >/dev/null 2>&1; then echo "read<$f>" >&2; fi
done
echo written >"$HOME/w" && echo 'wrote<home>' >&2
if [ -d /etc/ssl/certs ]; then echo 'certs<yes>' >&2; fi
echo 'done<>' >&2
exec ./grepd`
	if err := r.Apply(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a healthy package container", func() bool { return status(t, r, "deploy-secrets").Healthy == 1 })
	var logs string
	eventually(t, "the checks' lines in the instance's log", func() bool {
		rc, err := r.Logs(context.Background(), "deploy-secrets", runtime.LogQuery{Index: 1, Stream: "stderr"})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		logs = string(b)
		return strings.Contains(logs, " done<>")
	})
	if !strings.Contains(logs, " uid<") || strings.Contains(logs, " uid<0>") {
		t.Errorf("the package ran as root in its container:\n%s", logs)
	}
	if strings.Contains(logs, " read<") || strings.Contains(logs, " present<") {
		t.Errorf("the package saw the host's secrets:\n%s", logs)
	}
	if !strings.Contains(logs, " wrote<home>") {
		t.Errorf("the package could not write its working dir:\n%s", logs)
	}
	if _, err := os.Stat("/etc/ssl/certs"); err == nil && !strings.Contains(logs, " certs<yes>") {
		t.Errorf("the host's /etc/ssl/certs is missing in the container:\n%s", logs)
	}
	if err := r.Remove(context.Background(), "deploy-secrets"); err != nil {
		t.Fatal(err)
	}
}

func TestPackageUser(t *testing.T) {
	pod := &Podman{}
	if u := packageUser(Config{Podman: pod, PackagesInContainers: true}, 0); u == nil || u.Uid == 0 || u.Gid == 0 {
		t.Errorf("root without a run-as user runs package containers as %v", u)
	}
	given := &build.User{Name: "x", Uid: 1234, Gid: 1234}
	if u := packageUser(Config{Podman: pod, PackagesInContainers: true, RunAs: given}, 0); u != given {
		t.Errorf("the configured run-as user was replaced by %v", u)
	}
	for _, c := range []struct {
		cfg  Config
		euid int
	}{
		{Config{Podman: pod}, 0},                                // packages are processes: "self" is the platform's user
		{Config{PackagesInContainers: true}, 0},                 // no podman
		{Config{Podman: pod, PackagesInContainers: true}, 1000}, // rootless: the container's root is the platform's user
	} {
		if u := packageUser(c.cfg, c.euid); u != nil {
			t.Errorf("packageUser(%+v, %d) = %v, want the platform's own user", c.cfg, c.euid, u)
		}
	}
}

func TestEtcMounts(t *testing.T) {
	etc := t.TempDir()
	for _, f := range []string{"passwd", "shadow", "gshadow", "python3.11", "ssl/certs", "ssl/private"} {
		if err := os.MkdirAll(filepath.Join(etc, f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("nowhere", filepath.Join(etc, "localtime")); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(etcMounts(etc), " ")
	want := etc + "/passwd:/etc/passwd:ro " + etc + "/ssl/certs:/etc/ssl/certs:ro " + etc + "/python3.11:/etc/python3.11:ro"
	if got != want {
		t.Errorf("etcMounts = %s\nwant %s", got, want)
	}
}
