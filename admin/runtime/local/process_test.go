package local

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/procsweep"
	"github.com/doraproject/dora/internal/procsweep/proctest"
)

// helperEnv makes the test binary act as a stand-in dorad (see
// TestInstancesDieWithParent).
const helperEnv = "LOCAL_RUNTIME_HELPER_DIR"

// runHelper is the stand-in dorad: it never returns.
func runHelper(dir string) {
	// Stand-in dorad: run one grepd instance, print its pid, wait to die.
	var runAs *build.User
	if spec := os.Getenv(helperEnv + "_RUNAS"); spec != "" {
		u, err := build.LookupUser(spec)
		if err != nil {
			os.Exit(4)
		}
		runAs = u
	}
	cfg := Config{Dir: dir, Logger: slog.New(slog.DiscardHandler), HealthInterval: 100 * time.Millisecond, RunAs: runAs}
	if os.Getenv(helperEnv+"_PODMAN") != "" {
		pod, err := DetectPodman(context.Background())
		if err != nil {
			os.Exit(5)
		}
		cfg.Podman, cfg.PackagesInContainers = pod, true
	}
	r, err := New(cfg)
	if err != nil {
		os.Exit(2)
	}
	spec := grepdSpec("deploy-orphan", 1)
	spec.Package.Dir = os.Getenv(helperEnv + "_PKG")
	if run := os.Getenv(helperEnv + "_RUN"); run != "" {
		spec.Package.Run = run
	}
	if err := r.Apply(context.Background(), spec); err != nil {
		os.Exit(3)
	}
	for {
		st, _ := r.Status(context.Background(), "deploy-orphan")
		if st.Healthy == 1 {
			os.Stdout.WriteString(strconv.Itoa(st.Instances[0].PID) + "\n")
			select {}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestInstancesDieWithParent kills -9 a process running the runtime (this
// test binary re-executed) and checks that nothing of its instance outlives
// it: the instance (Pdeathsig), also when it runs as another user; the
// background and setsid children of a compound run command (the runtime's
// watchdog); an instance's container, which conmon keeps running after
// `podman run` died (the watchdog removes it). Nothing else runs after the
// kill: no New sweeps.
func TestInstancesDieWithParent(t *testing.T) {
	for _, c := range []struct {
		name, runAs string
		compound    bool
		podman      bool
	}{
		{name: "process"},
		{name: "runas", runAs: "65534"},
		{name: "compound", compound: true},
		{name: "container", podman: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if c.runAs != "" {
				nobodyUser(t)
				dir = proctest.ReachableDir(t)
			}
			pidFile := filepath.Join(t.TempDir(), "pids")
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), helperEnv+"="+dir, helperEnv+"_PKG="+grepdDir, helperEnv+"_RUNAS="+c.runAs)
			if c.compound {
				cmd.Env = append(cmd.Env, helperEnv+"_RUN=sleep 300 & echo $! >> "+pidFile+"; setsid sleep 301 & echo $! >> "+pidFile+"; exec ./grepd")
			}
			if c.podman {
				cmd.Env = append(cmd.Env, helperEnv+"_PODMAN=1")
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil {
				t.Fatalf("helper: %v", err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(line))
			if err != nil || !proctest.Alive(pid) {
				t.Fatalf("helper printed %q", line)
			}
			pids := []int{pid}
			if c.compound {
				pids = append(pids, proctest.ReadPids(t, pidFile, 2)...)
				if len(pids) != 3 {
					t.Fatalf("pids %v, want the instance and its 2 children", pids)
				}
				t.Cleanup(func() {
					for _, p := range pids {
						syscall.Kill(p, syscall.SIGKILL)
					}
				})
			}
			label := ownerLabel + "=" + ownerValue(dir)
			if c.podman {
				t.Cleanup(func() {
					exec.Command("podman", "rm", "--force", "--ignore", "-t", "0", "--filter", "label="+label).Run()
				})
				if n := len(containersLabelled(t, label)); n != 1 {
					t.Fatalf("%d containers of the runtime, want 1", n)
				}
			}
			if c.runAs != "" {
				if uid := procUid(t, pid); uid != c.runAs {
					t.Fatalf("instance runs as uid %s, want %s", uid, c.runAs)
				}
			}
			if !c.podman {
				// The instance carries its runtime's owner marker, which
				// every process it starts inherits: what the watchdog
				// and the next New sweep.
				env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
				if err != nil {
					t.Fatal(err)
				}
				if mark := procsweep.Env(procsweep.Owner("local", dir)); !bytes.Contains(append(append([]byte{0}, env...), 0), []byte("\x00"+mark+"\x00")) {
					t.Fatalf("the instance's environment lacks %s", mark)
				}
			}
			cmd.Process.Kill()
			cmd.Wait()
			proctest.WaitGone(t, "processes of the killed parent's instance", pids)
			if c.podman {
				eventually(t, "the orphaned instance's container to go", func() bool { return len(containersLabelled(t, label)) == 0 })
			}
			eventually(t, "the working directory to go", func() bool {
				_, err := os.Stat(filepath.Join(dir, "deploy-orphan", "1"))
				return os.IsNotExist(err)
			})
		})
	}
}

// containersLabelled lists the containers, running or not, labelled label.
func containersLabelled(t *testing.T, labels ...string) []string {
	t.Helper()
	args := []string{"ps", "--all", "--quiet"}
	for _, l := range labels {
		args = append(args, "--filter", "label="+l) // all must match
	}
	out, err := exec.Command("podman", args...).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))
}

// TestBuiltPackageRuns builds examples/passthru and examples/grepd with
// admin/build from their own ufop.yaml and runs the result directories as
// instances do; as root both the builds and the instances run as nobody
// (sharing a Go build cache owned by nobody).
func TestBuiltPackageRuns(t *testing.T) {
	var runAs *build.User
	data := t.TempDir()
	if os.Geteuid() == 0 {
		runAs = nobodyUser(t)
		data = proctest.ReachableDir(t)
	}
	_, file, _, _ := goruntime.Caller(0)
	examples := filepath.Join(filepath.Dir(file), "..", "..", "..", "examples")
	// A Go build cache kept across runs (content-addressed, shared safely):
	// with a fresh one every run compiled the standard library as nobody,
	// which under -race on a loaded machine overran the build deadline.
	cacheRoot := filepath.Join(os.TempDir(), "dora-test-local-gocache")
	if err := os.MkdirAll(cacheRoot, 0o711); err != nil {
		t.Fatal(err)
	}
	os.Chmod(cacheRoot, 0o711)
	b, err := build.NewWithConfig(build.Config{Root: filepath.Join(data, "builds"), RunAs: runAs,
		GoCache: filepath.Join(cacheRoot, "go-build")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	pub := &recorder{}
	r := newRuntimeWith(t, Config{Dir: filepath.Join(data, "instances"), Publisher: pub, RunAs: runAs})
	for _, name := range []string{"passthru", "grepd"} {
		u, err := b.Unpack(ctx, name, 1, packDir(t, filepath.Join(examples, name)), 0)
		if err != nil {
			t.Fatal(err)
		}
		var log bytes.Buffer
		if err := b.Build(ctx, name, 1, "", &log); err != nil {
			t.Fatalf("%v\n%s", err, log.String())
		}
		spec := grepdSpec("deploy-"+name, 1)
		spec.Deployment.Ufop, spec.Release.Ufop = name, name
		spec.Package = &runtime.Package{Dir: b.Dir(name, 1), Run: u.Run}
		if err := r.Apply(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "published", func() bool { return len(pub.ids()) == 2 })

	i, _ := pub.get("deploy-passthru-1")
	payload := strings.Repeat("0123456789", 100000)
	resp, err := http.Post("http://"+i.Addr+"/handler?cmd=passthru", "text/plain", strings.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != payload {
		t.Fatalf("passthru returned %d bytes, want %d", len(got), len(payload))
	}

	i, _ = pub.get("deploy-grepd-1")
	resp, err = http.Post("http://"+i.Addr+"/handler?cmd=grepd/yes", "text/plain", strings.NewReader("no\nyes 1\nnope\nyes 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "yes 1\nyes 2\n" {
		t.Fatalf("grepd answered %q", got)
	}
	if runAs != nil {
		// The shared Go build cache is nobody's and was used.
		cache := filepath.Join(cacheRoot, "go-build")
		fi, err := os.Stat(cache)
		if err != nil || fi.Sys().(*syscall.Stat_t).Uid != runAs.Uid {
			t.Fatalf("go cache: %v %v", fi, err)
		}
		if entries, _ := os.ReadDir(cache); len(entries) == 0 {
			t.Error("the shared go cache is empty after the builds")
		}
		st := status(t, r, "deploy-grepd")
		if uid := procUid(t, st.Instances[0].PID); uid != "65534" {
			t.Fatalf("grepd runs as uid %s, want 65534", uid)
		}
	}
}

// packDir packs a directory's contents as qdoractl build does (its own
// function).
func packDir(t *testing.T, dir string) io.Reader {
	t.Helper()
	var buf bytes.Buffer
	if err := client.WriteTarGz(context.Background(), &buf, dir); err != nil {
		t.Fatal(err)
	}
	return &buf
}
