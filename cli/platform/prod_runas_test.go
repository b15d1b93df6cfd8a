package platform

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/cli/platform/platformtest"
	"github.com/doraproject/dora/internal/agenttest"
)

// modeOwner is a data directory entry's expected mode and owner.
type modeOwner struct {
	mode os.FileMode
	uid  uint32
}

// dataDirModes is what an admin's data dir holds after it ran as root
// with the run-as user nobody (uid 65534), plus extra entries.
func dataDirModes(extra map[string]modeOwner) map[string]modeOwner {
	m := map[string]modeOwner{
		"":               {0o711, 0},
		CredentialsFile:  {0o600, 0},
		"meta.db":        {0o600, 0},
		"pfop.db":        {0o600, 0},
		"objects":        {0o700, 0},
		"registry":       {0o700, 0},
		"builds":         {0o711, 0},
		"instances":      {0o711, 0},
		"cache/go-build": {0o700, 65534},
	}
	maps.Copy(m, extra)
	return m
}

// checkModes compares the modes and owners of the entries below dir with
// want (docs/security.md's table).
func checkModes(t *testing.T, dir string, want map[string]modeOwner) {
	t.Helper()
	for name, w := range want {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		uid := fi.Sys().(*syscall.Stat_t).Uid
		if fi.Mode().Perm() != w.mode || uid != w.uid {
			t.Errorf("%s: mode %04o owner %d, want %04o owner %d", name, fi.Mode().Perm(), uid, w.mode, w.uid)
		}
	}
}

// procUID is the real uid of process pid.
func procUID(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			fields := strings.Fields(rest)
			if len(fields) == 0 {
				break
			}
			return strconv.Atoi(fields[0])
		}
	}
	return 0, fmt.Errorf("pid %d: no Uid line", pid)
}

// TestAdminRunsUserCodeAsNobody starts `dorad admin` as root on a bolt
// store and the local runtime: examples/grepd's build_script lines and its
// instance run as nobody, the data directory has the modes of
// docs/security.md, and a data directory nobody cannot reach is refused.
func TestAdminRunsUserCodeAsNobody(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the run-as user is the platform's own when not root")
	}
	if testing.Short() {
		t.Skip("builds grepd with a fresh Go build cache")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	data := filepath.Join(platformtest.ReachableTempDir(t), "data")
	cfg := AdminConfig{
		Listen:  "127.0.0.1:0",
		Store:   "bolt://" + filepath.Join(data, "meta.db"),
		Objects: "file://" + filepath.Join(data, "objects"),
		Runtime: "local://",
		DataDir: data,
		GoCache: filepath.Join(data, "cache", "go-build"),
		Logger:  platformtest.Logger(),
	}
	adm, err := StartAdmin(ctx, cfg)
	if err != nil {
		t.Fatalf("StartAdmin: %v", err)
	}
	t.Cleanup(func() { adm.Close() })

	// grepd's package with one more line that prints who runs it.
	pkg := t.TempDir()
	src := filepath.Join(platformtest.RepoRoot(t), "examples", "grepd")
	if err := build.CopyDir(pkg, src); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(src, "ufop.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	y, err := build.ParseUfopYAML(raw)
	if err != nil {
		t.Fatal(err)
	}
	yaml := "image: " + y.Image + "\nrun: " + y.Run + "\nbuild_script:\n  - echo \"build uid=$(id -u)\"\n"
	for _, l := range y.BuildScript {
		yaml += "  - " + strconv.Quote(l) + "\n"
	}
	if err := os.WriteFile(filepath.Join(pkg, "ufop.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}

	c := client.New(adm.URL, adm.RootAK, adm.RootSK)
	if _, err := c.RegisterUfop(ctx, "grepd", "run-as test", dora.ModePrivate); err != nil {
		t.Fatal(err)
	}
	b, err := c.Build(ctx, "grepd", pkg)
	if err != nil {
		t.Fatal(err)
	}
	b, err = c.WaitBuild(ctx, "grepd", b.Number, 200*time.Millisecond, nil)
	var blog []byte
	if rc, lerr := c.BuildLog(ctx, "grepd", b.Number); lerr == nil {
		blog, _ = io.ReadAll(rc)
		rc.Close()
	}
	if err != nil || b.Status != dora.BuildSuccess {
		t.Fatalf("build: %+v %v\n%s", b, err, blog)
	}
	if !strings.Contains(string(blog), "build uid=65534\n") {
		t.Fatalf("build_script did not run as nobody:\n%s", blog)
	}

	// The instance of the local runtime runs as nobody too.
	if _, err := c.SetVersion(ctx, "grepd", b.Number, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Resize(ctx, "grepd", 1, ""); err != nil {
		t.Fatal(err)
	}
	instances := filepath.Join(data, "instances")
	var pid int
	for deadline := time.Now().Add(time.Minute); ; {
		if pid, err = agenttest.PidBelow(instances); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if uid, err := procUID(pid); err != nil || uid != 65534 {
		t.Fatalf("instance pid %d runs as uid %d (%v), want 65534", pid, uid, err)
	}
	if err := adm.Close(); err != nil {
		t.Fatalf("admin close: %v", err)
	}

	checkModes(t, data, dataDirModes(map[string]modeOwner{
		"builds/grepd/1":        {0o711, 0},
		"builds/grepd/1/result": {0o700, 0},
	}))

	// A data dir below a 0700 directory: nobody could not reach its
	// builds, so the admin refuses to start; as "self" it starts.
	closed := filepath.Join(t.TempDir(), "closed")
	if err := os.Mkdir(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = filepath.Join(closed, "data")
	cfg.Store = "bolt://" + filepath.Join(cfg.DataDir, "meta.db")
	cfg.Objects = "file://" + filepath.Join(cfg.DataDir, "objects")
	cfg.GoCache = ""
	if a, err := StartAdmin(ctx, cfg); err == nil {
		a.Close()
		t.Fatal("started with a data dir the run-as user cannot reach")
	} else if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "nobody") || !strings.Contains(err.Error(), "run-as") {
		t.Fatalf("error does not explain itself: %v", err)
	}
	cfg.RunAs = RunAsSelf
	a, err := StartAdmin(ctx, cfg)
	if err != nil {
		t.Fatalf("run-as self: %v", err)
	}
	a.Close()
}

// TestAdminRunAsErrors: a bad run-as user is a configuration error.
func TestAdminRunAsErrors(t *testing.T) {
	dir := platformtest.ReachableTempDir(t)
	_, err := StartAdmin(context.Background(), AdminConfig{
		Listen:  "127.0.0.1:0",
		Store:   "bolt://" + filepath.Join(dir, "meta.db"),
		Objects: "file://" + filepath.Join(dir, "objects"),
		DataDir: dir,
		RunAs:   "no-such-user-here",
		Logger:  platformtest.Logger(),
	})
	if !errors.Is(err, ErrConfig) || !errors.Is(err, build.ErrBadUser) {
		t.Fatalf("StartAdmin with an unknown run-as user = %v, want ErrConfig and build.ErrBadUser", err)
	}
}

// TestAdminSharedStoreErrorHidesPassword: the error asking for the root
// keys of a consul:// store does not print a password given in its URL.
func TestAdminSharedStoreErrorHidesPassword(t *testing.T) {
	dir := platformtest.ReachableTempDir(t)
	_, err := StartAdmin(context.Background(), AdminConfig{
		Listen:  "127.0.0.1:0",
		Store:   "consul://ops:s3cret@127.0.0.1:8500/dora",
		Objects: "file://" + filepath.Join(dir, "objects"),
		DataDir: dir,
		Logger:  platformtest.Logger(),
	})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "root keys") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("StartAdmin on a consul:// store without root keys = %v, want ErrConfig asking for them, no password", err)
	}
}

// TestAdminCloseEndsRegistrySweep: Close ends the registry's sweep of idle
// upload sessions; it ran for the life of the process (a goroutine per
// admin ever started).
func TestAdminCloseEndsRegistrySweep(t *testing.T) {
	dir := platformtest.ReachableTempDir(t)
	a, err := StartAdmin(context.Background(), AdminConfig{
		Listen:  "127.0.0.1:0",
		Store:   "bolt://" + filepath.Join(dir, "meta.db"),
		Objects: "file://" + filepath.Join(dir, "objects"),
		DataDir: dir,
		RunAs:   RunAsSelf,
		Logger:  platformtest.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	sweeping := func() bool {
		buf := make([]byte, 1<<20)
		return strings.Contains(string(buf[:goruntime.Stack(buf, true)]), "registry.(*Registry).sweepUploads")
	}
	if !sweeping() {
		t.Fatal("no registry sweep while the admin runs: the test tells nothing")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for sweeping() {
		if time.Now().After(deadline) {
			t.Fatal("the registry's sweep still runs after Close")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
