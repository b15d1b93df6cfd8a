package build

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/doraproject/dora/internal/procsweep/proctest"
)

// secretEnv are variables of the platform's environment no user code may
// see, whatever their name suggests.
var secretEnv = map[string]string{
	"CONSUL_HTTP_TOKEN":     "consul-token-s3cret",
	"NOMAD_TOKEN":           "nomad-token-s3cret",
	"AWS_SECRET_ACCESS_KEY": "aws-s3cret",
	"REDIS_PASSWORD":        "redis-s3cret",
	"DORA_ROOT_SK":          "dora-root-s3cret",
}

// nobody is the run-as user of these tests; they need root to switch to it.
func nobody(t *testing.T) *User {
	t.Helper()
	if os.Geteuid() != 0 || runtime.GOOS != "linux" {
		t.Skip("running as another user needs root on Linux")
	}
	u, err := LookupUser("65534")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestLookupUser(t *testing.T) {
	tests := []struct {
		spec     string
		uid, gid uint32
		wantErr  bool
	}{
		{spec: "root", uid: 0, gid: 0},
		{spec: "0", uid: 0, gid: 0},
		{spec: "0:5", uid: 0, gid: 5},
		{spec: "root:0", uid: 0, gid: 0},
		{spec: "4242", uid: 4242, gid: 4242}, // no passwd entry: gid = uid
		{spec: "4242:7", uid: 4242, gid: 7},
		{spec: "", wantErr: true},
		{spec: ":5", wantErr: true},
		{spec: "root:", wantErr: true},
		{spec: "no-such-user-here", wantErr: true},
		{spec: "root:no-such-group-here", wantErr: true},
		{spec: "99999999999", wantErr: true},
	}
	for _, tt := range tests {
		u, err := LookupUser(tt.spec)
		if tt.wantErr {
			if err == nil || !errors.Is(err, ErrBadUser) {
				t.Errorf("LookupUser(%q) = %v, %v; want an ErrBadUser", tt.spec, u, err)
			}
			continue
		}
		if err != nil || u.Uid != tt.uid || u.Gid != tt.gid {
			t.Errorf("LookupUser(%q) = %v, %v; want %d:%d", tt.spec, u, err, tt.uid, tt.gid)
		}
	}
}

func TestCheckReachable(t *testing.T) {
	dir := proctest.ReachableDir(t)
	closed := filepath.Join(dir, "closed")
	open := filepath.Join(dir, "open")
	for d, mode := range map[string]os.FileMode{closed: 0o700, open: 0o711} {
		if err := os.Mkdir(d, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, mode)
	}
	other := &User{Name: "other", Uid: uint32(os.Getuid()) + 4242, Gid: uint32(os.Getgid()) + 4242}
	owner := &User{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	tests := []struct {
		dir     string
		u       *User
		wantErr bool
	}{
		{filepath.Join(open, "x", "y"), other, true}, // missing below
		{open, other, false},
		{closed, other, true},
		{filepath.Join(closed, "below"), other, true},
		{closed, owner, false},
		{closed, nil, false},
	}
	os.MkdirAll(filepath.Join(closed, "below"), 0o755)
	for _, tt := range tests {
		err := CheckReachable(tt.dir, tt.u)
		if (err != nil) != tt.wantErr {
			t.Errorf("CheckReachable(%s, %v) = %v, want error %v", tt.dir, tt.u, err, tt.wantErr)
		}
	}
	if err := CheckReachable(closed, other); err == nil || !strings.Contains(err.Error(), closed+" is 0700") {
		t.Errorf("error does not name the closed directory: %v", err)
	}
}

// TestBuildEnvAllowlist: the platform's secrets in its environment never
// reach a build line, with or without RunAs; HOME and TMPDIR are private
// and outside the result.
func TestBuildEnvAllowlist(t *testing.T) {
	for k, v := range secretEnv {
		t.Setenv(k, v)
	}
	t.Setenv("LANG", "C.UTF-8")
	t.Setenv("GOFLAGS", "-count=1")
	type mode struct {
		name  string
		runAs func(t *testing.T) *User
	}
	for _, m := range []mode{{"self", func(*testing.T) *User { return nil }}, {"nobody", nobody}} {
		t.Run(m.name, func(t *testing.T) {
			u := m.runAs(t)
			b, err := NewWithConfig(Config{Root: proctest.ReachableDir(t), RunAs: u})
			if err != nil {
				t.Fatal(err)
			}
			unpackScript(t, b, 1,
				"env",
				`test "$HOME" != "$PWD" && test -d "$HOME" && test -w "$HOME"`,
				`test -d "$TMPDIR" && test -w "$TMPDIR" && touch "$TMPDIR/x" && mktemp`,
				`test "$LANG" = C.UTF-8 && test "$GOFLAGS" = "-count=1 -buildvcs=false" && test -n "$PATH" && test -n "$GOCACHE"`,
				`case "$TMPDIR" in "$PWD"*) exit 1;; esac`,
			)
			var log bytes.Buffer
			if err := b.Build(context.Background(), "testufop", 1, "", &log); err != nil {
				t.Fatalf("%v\n%s", err, log.String())
			}
			for k, v := range secretEnv {
				if strings.Contains(log.String(), v) || strings.Contains(log.String(), k+"=") {
					t.Errorf("%s reached the build line:\n%s", k, log.String())
				}
			}
			// The private home is gone, and the result holds no cache.
			entries, _ := os.ReadDir(filepath.Dir(b.Dir("testufop", 1)))
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), "home") {
					t.Errorf("left %s behind", e.Name())
				}
			}
		})
	}
}

// TestBuildRunAs: a build line running as nobody cannot read the
// platform's 0600 files next to the builds (root.credentials), nor other
// builds' logs and results, but can use its own upload (even a 0600 file
// in it) and working dir. The finished result is sealed: owned by the
// platform, writable by nobody else.
func TestBuildRunAs(t *testing.T) {
	u := nobody(t)
	data := proctest.ReachableDir(t)
	const secret = "root-secret-key-0123456789"
	creds := filepath.Join(data, "root.credentials")
	if err := os.WriteFile(creds, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := NewWithConfig(Config{Root: filepath.Join(data, "builds"), RunAs: u})
	if err != nil {
		t.Fatal(err)
	}
	// Build 1: another account's program, with its log.
	unpackScript(t, b, 1, "echo other-account-log", "echo private > prog.txt")
	if err := b.Build(context.Background(), "testufop", 1, "", nil); err != nil {
		t.Fatal(err)
	}

	y := "image: ubuntu\nrun: ./run.sh\nbuild_script:\n" +
		"  - test \"$(id -u):$(id -g)\" = 65534:65534\n" +
		"  - test \"$(id -G)\" = 65534\n" +
		"  - cp $RESOURCE/private.txt . && cat private.txt\n" +
		"  - mkdir -p open/sub && chmod 0777 open && echo x > open/f && chmod 4777 open/f\n"
	if _, err := b.Unpack(context.Background(), "testufop", 2, tarGz(t,
		entry{name: "ufop.yaml", body: y},
		entry{name: "private.txt", body: "mine", mode: 0o600}), 0); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	if err := b.Build(context.Background(), "testufop", 2, "", &log); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	dir := b.Dir("testufop", 2)
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != os.Getuid() || fi.Mode()&0o022 != 0 || fi.Mode()&os.ModeSetuid != 0 {
			t.Errorf("%s: owner %d mode %v after the build; want the platform's, no group/other write, no setuid", p, st.Uid, fi.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Reading the platform's files fails, and the secret stays out of the log.
	attacks := []string{
		"cat $RESOURCE/../../../../root.credentials",
		"cat " + creds,
		"cat $RESOURCE/../../1/build.log",
		"ls $RESOURCE/../../1/result",
		"cat $RESOURCE/../../1/result/prog.txt",
		"ls $RESOURCE/../..",
		"touch $RESOURCE/../build.log.new",
		"echo x > " + filepath.Join(b.Dir("testufop", 2), "prog.txt"),
	}
	for i, line := range attacks {
		unpackScript(t, b, 10+i, line)
		var log bytes.Buffer
		err := b.Build(context.Background(), "testufop", 10+i, "", &log)
		if err == nil {
			t.Errorf("%q succeeded as nobody:\n%s", line, log.String())
		}
		for _, s := range []string{secret, "other-account-log", "private\n"} {
			if strings.Contains(log.String(), s) {
				t.Errorf("%q leaked %q into the log:\n%s", line, s, log.String())
			}
		}
	}
}

// TestChownTreeNoFollow: a symbolic link in the tree (user code may plant
// one) is changed itself, never its target outside the tree.
func TestChownTreeNoFollow(t *testing.T) {
	u := nobody(t)
	dir := t.TempDir()
	outside := filepath.Join(dir, "outside")
	tree := filepath.Join(dir, "tree")
	os.WriteFile(outside, []byte("x"), 0o600)
	os.MkdirAll(filepath.Join(tree, "d"), 0o755)
	os.Symlink(outside, filepath.Join(tree, "file-link"))
	os.Symlink(dir, filepath.Join(tree, "d", "dir-link"))
	if err := ChownTree(tree, u); err != nil {
		t.Fatal(err)
	}
	for p, wantUid := range map[string]uint32{outside: uint32(os.Getuid()), dir: uint32(os.Getuid()),
		tree: u.Uid, filepath.Join(tree, "d"): u.Uid, filepath.Join(tree, "file-link"): u.Uid} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Sys().(*syscall.Stat_t).Uid; got != wantUid {
			t.Errorf("%s owned by %d, want %d", p, got, wantUid)
		}
	}
	// The tree's root itself must not be a link.
	if err := ChownTree(filepath.Join(tree, "d", "dir-link"), u); err == nil {
		t.Error("ChownTree followed a link at its root")
	}
}

// TestSealTreeForeignFile: a finished build holding a file the run-as user
// does not own (a hard link to a platform file, where hard links are not
// restricted) is refused rather than published.
func TestSealTreeForeignFile(t *testing.T) {
	u := nobody(t)
	tree := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(tree, "d"), 0o755)
	os.WriteFile(filepath.Join(tree, "d", "mine"), []byte("x"), 0o644)
	if err := ChownTree(tree, u); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "d", "linked-secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SealTree(tree, u); !errors.Is(err, ErrForeignFile) {
		t.Fatalf("SealTree = %v, want ErrForeignFile", err)
	}
	os.Remove(filepath.Join(tree, "d", "linked-secret"))
	if err := ChownTree(tree, u); err != nil { // the failed seal took some back
		t.Fatal(err)
	}
	if err := SealTree(tree, u); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(tree, "d", "mine"))
	if fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Getuid()) {
		t.Fatal("sealed file still belongs to the run-as user")
	}
}

// TestBuildInsideACheckout: the data directory inside a git checkout owned
// by the platform's user (make run from a clone, as root) is no repository
// to a build running as nobody: git there refused it as "dubious
// ownership", and every go build failed obtaining its VCS status.
func TestBuildInsideACheckout(t *testing.T) {
	for _, tool := range []string{"git", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatal(tool, "is needed (make test installs it):", err)
		}
	}
	u := nobody(t)
	repo := proctest.ReachableDir(t)
	if out, err := exec.Command("git", "init", "-q", repo).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v\n%s", err, out)
	}
	// A Go build cache kept across runs (content-addressed): a fresh one
	// compiles the standard library as nobody every time.
	cacheRoot := filepath.Join(os.TempDir(), "dora-test-build-gocache")
	if err := os.MkdirAll(cacheRoot, 0o711); err != nil {
		t.Fatal(err)
	}
	os.Chmod(cacheRoot, 0o711)
	b, err := NewWithConfig(Config{Root: filepath.Join(repo, ".dora", "builds"), RunAs: u,
		GoCache: filepath.Join(cacheRoot, "go-build")})
	if err != nil {
		t.Fatal(err)
	}
	y := "image: ubuntu\nrun: ./prog\nbuild_script:\n" +
		"  - git rev-parse --show-toplevel 2>&1 | grep -q 'not a git repository'\n" +
		"  - cp -r $RESOURCE/. .\n" +
		"  - go build -o prog .\n"
	if _, err := b.Unpack(context.Background(), "testufop", 1, tarGz(t,
		entry{name: "ufop.yaml", body: y},
		entry{name: "go.mod", body: "module prog\n\ngo 1.21\n"},
		entry{name: "main.go", body: "package main\n\nfunc main() {}\n"}), 0); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	if err := b.Build(context.Background(), "testufop", 1, "", &log); err != nil {
		t.Fatalf("a build inside a checkout failed: %v\n%s", err, log.String())
	}
	if _, err := os.Stat(filepath.Join(b.Dir("testufop", 1), "prog")); err != nil {
		t.Fatal(err)
	}
}
