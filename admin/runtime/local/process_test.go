package local

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/admin/runtime"
)

// helperEnv makes the test binary act as a stand-in dorad (see
// TestInstancesDieWithParent).
const helperEnv = "LOCAL_RUNTIME_HELPER_DIR"

// runHelper is the stand-in dorad: it never returns.
func runHelper(dir string) {
	// Stand-in dorad: run one grepd instance, print its pid, wait to die.
	r, err := New(Config{Dir: dir, Logger: slog.New(slog.DiscardHandler), HealthInterval: 100 * time.Millisecond})
	if err != nil {
		os.Exit(2)
	}
	spec := grepdSpec("deploy-orphan", 1)
	spec.Package.Dir = os.Getenv(helperEnv + "_PKG")
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

// TestInstancesDieWithParent kills -9 a process running the runtime and
// checks its instance does not outlive it (Pdeathsig).
func TestInstancesDieWithParent(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+t.TempDir(), helperEnv+"_PKG="+grepdDir)
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
	if err != nil || !alive(pid) {
		t.Fatalf("helper printed %q", line)
	}
	cmd.Process.Kill()
	cmd.Wait()
	eventually(t, "the orphaned instance to die", func() bool {
		if !alive(pid) {
			return true
		}
		return false
	})
}

// TestBuiltPackageRuns builds examples/passthru with admin/build from its
// own ufop.yaml and runs the result directory as instances do.
func TestBuiltPackageRuns(t *testing.T) {
	_, file, _, _ := goruntime.Caller(0)
	src := filepath.Join(filepath.Dir(file), "..", "..", "..", "examples", "passthru")
	b, err := build.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	u, err := b.Unpack(ctx, "passthru", 1, packDir(t, src), 0)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	if err := b.Build(ctx, "passthru", 1, "", &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	pub := &recorder{}
	r := newRuntime(t, pub)
	spec := grepdSpec("deploy-built", 1)
	spec.Deployment.Ufop, spec.Release.Ufop = "passthru", "passthru"
	spec.Package = &runtime.Package{Dir: b.Dir("passthru", 1), Run: u.Run}
	if err := r.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "published", func() bool { return len(pub.ids()) == 1 })
	i, _ := pub.get("deploy-built-1")
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
}

// packDir packs a directory as qdoractl build does.
func packDir(t *testing.T, dir string) io.Reader {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			tw.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tw.Close()
	zw.Close()
	return &buf
}
