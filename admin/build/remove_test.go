package build

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/procsweep/proctest"
)

// outsideTree is a directory outside the builder's root that planted links
// point at; checkOutside verifies it survived.
func outsideTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "precious"), []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func checkOutside(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "precious"))
	if err != nil || string(b) != "keep me" {
		t.Fatalf("a link was followed out of the build: %q %v", b, err)
	}
}

// checkNoTrash verifies Remove left no trash directory in the root.
func checkNoTrash(t *testing.T, root string) {
	t.Helper()
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), trashPrefix) {
			t.Errorf("trash left behind: %s", e.Name())
		}
	}
}

// TestRemove: Remove deletes every build of one ufop, results with planted
// links and read-only directories included, without following the links
// and without touching another ufop's builds.
func TestRemove(t *testing.T) {
	root := filepath.Join(t.TempDir(), "builds")
	b, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	out := outsideTree(t)
	plant := []string{
		"ln -s " + out + " dirlink",
		"ln -s " + out + "/precious filelink",
		"mkdir -p ro/sub && echo x > ro/sub/f && chmod 0500 ro/sub ro",
	}
	unpackScript(t, b, 1, plant...)
	if err := b.Build(context.Background(), "testufop", 1, "", nil); err != nil {
		t.Fatal(err)
	}
	unpackScript(t, b, 2, "false") // a failed build: its log and upload stay
	if err := b.Build(context.Background(), "testufop", 2, "", nil); err == nil {
		t.Fatal("build 2 succeeded")
	}
	unpackScript(t, b, 3) // unpacked, never built
	// A link where a build directory would be.
	if err := os.Symlink(out, filepath.Join(root, "testufop", "4")); err != nil {
		t.Fatal(err)
	}
	// Another ufop's build stays.
	if _, err := b.Unpack(context.Background(), "otherufop", 1, tarGz(t, entry{name: "ufop.yaml", body: "image: ubuntu\nrun: ./x\n"}), 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Build(context.Background(), "otherufop", 1, "", nil); err != nil {
		t.Fatal(err)
	}

	removeTestufop(t, b, root, out)
	if _, err := os.Stat(b.Dir("otherufop", 1)); err != nil {
		t.Fatalf("another ufop's build: %v", err)
	}

	// A ufop of the same name starts afresh; removing nothing is fine.
	unpackScript(t, b, 1, "test ! -e dirlink")
	if err := b.Build(context.Background(), "testufop", 1, "", nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove("testufop"); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove("testufop"); err != nil {
		t.Fatalf("Remove of a ufop without builds: %v", err)
	}
	for _, bad := range []string{"", "../builds", "a/b", ".removing-x", "qhash"} {
		if err := b.Remove(bad); err == nil {
			t.Errorf("Remove(%q) = nil, want an error", bad)
		}
	}
	if _, err := os.Stat(b.Dir("otherufop", 1)); err != nil {
		t.Fatalf("another ufop's build after bad names: %v", err)
	}
}

// TestRemoveRunAs: directories owned by the run-as user (an interrupted
// build's working directory and home) holding links to the platform's
// files are removed by the root platform without following the links.
func TestRemoveRunAs(t *testing.T) {
	u := nobody(t)
	data := proctest.ReachableDir(t)
	root := filepath.Join(data, "builds")
	b, err := NewWithConfig(Config{Root: root, RunAs: u})
	if err != nil {
		t.Fatal(err)
	}
	out := outsideTree(t)
	unpackScript(t, b, 1, "ln -s "+out+" dirlink", "mkdir -p d && ln -s "+out+"/precious d/filelink")
	if err := b.Build(context.Background(), "testufop", 1, "", nil); err != nil {
		t.Fatal(err)
	}
	// What a platform stopped mid-build leaves: nobody's working dir and
	// home with links out, and a read-only directory.
	base := filepath.Join(root, "testufop", "2")
	for _, d := range []string{"result.tmp-1/sub", "home.tmp-1/tmp", "resource"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{"result.tmp-1/sub/out", "home.tmp-1/out", "resource/out"} {
		if err := os.Symlink(out, filepath.Join(base, l)); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"result.tmp-1", "home.tmp-1", "resource"} {
		if err := ChownTree(filepath.Join(base, d), u); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(base, "result.tmp-1", "sub"), 0o500); err != nil {
		t.Fatal(err)
	}
	removeTestufop(t, b, root, out)
}

// TestRemoveWhileBuilding: a build running when its ufop is removed keeps
// its directory until it ends, then it goes too; the idle builds go at
// once.
func TestRemoveWhileBuilding(t *testing.T) {
	root := filepath.Join(t.TempDir(), "builds")
	b, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	unpackScript(t, b, 1, "true")
	if err := b.Build(context.Background(), "testufop", 1, "", nil); err != nil {
		t.Fatal(err)
	}
	sig := t.TempDir()
	started, proceed := filepath.Join(sig, "started"), filepath.Join(sig, "proceed")
	unpackScript(t, b, 2, "touch "+started, "while [ ! -e "+proceed+" ]; do sleep 0.02; done")
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() { done <- b.Build(ctx, "testufop", 2, "", nil) }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("build 2 did not start")
		}
	}

	if err := b.Remove("testufop"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "testufop", "1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("idle build 1 after Remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "testufop", "2")); err != nil {
		t.Fatalf("running build 2 lost its directory: %v", err)
	}
	if err := os.WriteFile(proceed, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("build 2: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "testufop")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("testufop's directory after the running build ended: %v", err)
	}
	checkNoTrash(t, root)
}

// TestNewRemovesLeftoverTrash: trash a stopped process left is removed by
// the next builder on the same root.
func TestNewRemovesLeftoverTrash(t *testing.T) {
	root := filepath.Join(t.TempDir(), "builds")
	left := filepath.Join(root, trashPrefix+"123", "testufop", "1", "result")
	if err := os.MkdirAll(left, 0o755); err != nil {
		t.Fatal(err)
	}
	out := outsideTree(t)
	if err := os.Symlink(out, filepath.Join(left, "out")); err != nil {
		t.Fatal(err)
	}
	if _, err := New(root); err != nil {
		t.Fatal(err)
	}
	checkNoTrash(t, root)
	checkOutside(t, out)
}

// removeTestufop removes testufop's builds from b (rooted at root) and
// checks that its directory is gone, the tree out (linked from the builds)
// is intact and no trash is left.
func removeTestufop(t *testing.T, b *Builder, root, out string) {
	t.Helper()
	if err := b.Remove("testufop"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "testufop")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("testufop's directory after Remove: %v", err)
	}
	checkOutside(t, out)
	checkNoTrash(t, root)
}
