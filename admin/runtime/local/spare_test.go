package local

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/build"
)

// TestSpareCopy: a package deployment applied at zero instances gets a
// copy of its package made ahead, closed to everyone but the platform; its
// first start takes that copy (renamed into the instance's place), and the
// next one is made once it is scaled back to zero. The working directory
// is still fresh at every start: a file an instance's run left is gone at
// the next. Remove leaves nothing of the deployment; Close removes the
// copy of another.
func TestSpareCopy(t *testing.T) {
	ctx := context.Background()
	pub := &recorder{}
	dir := t.TempDir()
	r := newRuntimeWith(t, Config{Dir: dir, Publisher: pub})
	spares := func(id string) []string {
		m, err := filepath.Glob(filepath.Join(dir, id, sparePrefix+"*"))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	ready := func(id string) string { return spareDir(r, id) }
	const id = "deploy-spare"
	if err := r.Apply(ctx, grepdSpec(id, 0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a copy made ahead", func() bool { return ready(id) != "" })
	first := ready(id)
	if s := spares(id); len(s) != 1 || s[0] != first {
		t.Fatalf("copies %v, want only %s", s, first)
	}
	fi, err := os.Stat(first)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("copy made ahead has mode %v, want 0700", fi.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(first, "grepd")); err != nil {
		t.Fatalf("copy made ahead lacks the package: %v", err)
	}

	start := func(what string) {
		t.Helper()
		if err := r.Scale(ctx, id, 1, "test"); err != nil {
			t.Fatal(err)
		}
		eventually(t, what, func() bool { return len(pub.ids()) == 1 && status(t, r, id).Healthy == 1 })
	}
	start("first start healthy")
	if _, err := os.Stat(first); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the copy made ahead is still there after a start: %v", err)
	}
	if s := spares(id); len(s) != 0 {
		t.Fatalf("copies %v while an instance runs, want none", s)
	}
	wd := filepath.Join(dir, id, "1")
	for _, f := range []string{"grepd", tmpDirName} {
		if _, err := os.Stat(filepath.Join(wd, f)); err != nil {
			t.Fatalf("working dir lacks %s: %v", f, err)
		}
	}
	if fi, err := os.Stat(wd); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("working dir: %v %v", fi, err)
	}
	if err := os.WriteFile(filepath.Join(wd, "left-by-run-1"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Scale(ctx, id, 0, "test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "nothing published at zero", func() bool { return len(pub.ids()) == 0 })
	eventually(t, "the next copy, at zero", func() bool { return ready(id) != "" && ready(id) != first })
	second := ready(id)
	if s := spares(id); len(s) != 1 {
		t.Fatalf("copies %v, want one", s)
	}
	start("second start healthy")
	if _, err := os.Stat(second); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the second copy made ahead is still there after a start: %v", err)
	}
	if _, err := os.Stat(filepath.Join(wd, "left-by-run-1")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a file of the previous run is in the new working dir: %v", err)
	}

	if err := r.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, id)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("removed deployment's dir still there: %v", err)
	}

	// Removed while its copy is being made: nothing is left either.
	for range 5 {
		if err := r.Apply(ctx, grepdSpec(id, 0)); err != nil {
			t.Fatal(err)
		}
		if err := r.Remove(ctx, id); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, id)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("deployment removed while its copy was made: dir still there: %v", err)
		}
	}

	const other = "deploy-spare-2"
	if err := r.Apply(ctx, grepdSpec(other, 0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a copy made ahead for the other deployment", func() bool { return ready(other) != "" })
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if s := spares(other); len(s) != 0 {
		t.Fatalf("copies left after Close: %v", s)
	}
}

// TestSpareCopyStalePackage: a start never runs a copy made ahead of a
// package that changed since: the package directory removed and made
// again at the same path (a ufop deleted and built again gets the same
// build number, hence the same directory) holds another program, and the
// instance gets a fresh copy of that one.
func TestSpareCopyStalePackage(t *testing.T) {
	ctx := context.Background()
	pub := &recorder{}
	dir := t.TempDir()
	r := newRuntimeWith(t, Config{Dir: dir, Publisher: pub})
	pkg := filepath.Join(t.TempDir(), "result")
	makePkg := func(version string) {
		t.Helper()
		if err := os.RemoveAll(pkg); err != nil {
			t.Fatal(err)
		}
		if err := build.CopyDir(pkg, grepdDir); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pkg, "version"), []byte(version), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	makePkg("v1")
	const id = "deploy-stale"
	spec := grepdSpec(id, 0)
	spec.Package.Dir = pkg
	if err := r.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a copy made ahead", func() bool { return spareDir(r, id) != "" })
	makePkg("v2")
	if err := r.Scale(ctx, id, 1, "test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "healthy", func() bool { return len(pub.ids()) == 1 && status(t, r, id).Healthy == 1 })
	b, err := os.ReadFile(filepath.Join(dir, id, "1", "version"))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "v2" {
		t.Fatalf("the instance runs package %q, want the current v2", b)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, id, sparePrefix+"*")); len(m) != 0 {
		t.Fatalf("the stale copy is left: %v", m)
	}
}

// TestSpareCopiesBounded: deployments applied at zero all at once (a
// restart of the platform re-applies every one) get their copies made
// one at a time, not all at once; and a deployment removed while its copy
// waits for its turn is removed at once, without waiting for the others'.
func TestSpareCopiesBounded(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r := newRuntimeWith(t, Config{Dir: dir, Publisher: &recorder{}})
	var (
		mu             sync.Mutex
		inflight, most int
	)
	entered := make(chan string, 16)
	release := make(chan struct{})
	releaseAll := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseAll) // before Close, which waits for the copies
	real := r.copySpare
	r.mu.Lock()
	r.copySpare = func(d, src string) (os.FileInfo, error) {
		mu.Lock()
		inflight++
		most = max(most, inflight)
		mu.Unlock()
		entered <- d
		<-release
		defer func() {
			mu.Lock()
			inflight--
			mu.Unlock()
		}()
		return real(d, src)
	}
	r.mu.Unlock()
	ids := []string{"deploy-b0", "deploy-b1", "deploy-b2", "deploy-b3"}
	for _, id := range ids {
		if err := r.Apply(ctx, grepdSpec(id, 0)); err != nil {
			t.Fatal(err)
		}
	}
	first := <-entered
	// Whatever the scheduling, no other copy may begin while this one
	// runs; give them the chance to (this wait decides nothing by itself).
	time.Sleep(200 * time.Millisecond)
	// One waiting for its turn is removed without waiting for the copy
	// in progress (which is not released until after).
	var queued string
	for _, id := range ids {
		if filepath.Join(dir, id) != filepath.Dir(first) {
			queued = id
			break
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second) // a hang bound
	defer cancel()
	if err := r.Remove(rctx, queued); err != nil {
		t.Fatalf("removing a deployment whose copy waits its turn: %v", err)
	}
	releaseAll()
	for _, id := range ids {
		if id == queued {
			continue
		}
		eventually(t, "copy of "+id, func() bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.deps[id].spare.dir != ""
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if most != spareCopies {
		t.Fatalf("%d copies made at once, want at most %d", most, spareCopies)
	}
	if _, err := os.Stat(filepath.Join(dir, queued)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("removed deployment's dir: %v", err)
	}
}

// TestSpareCopyFailures: a copy made ahead that failed (disk full) or
// that went missing before the start (removed behind the runtime's back)
// never fails a start: the instance gets a copy made then.
func TestSpareCopyFailures(t *testing.T) {
	ctx := context.Background()
	pub := &recorder{}
	dir := t.TempDir()
	r := newRuntimeWith(t, Config{Dir: dir, Publisher: pub})
	var failed atomic.Int64
	real := r.copySpare
	r.mu.Lock()
	r.copySpare = func(d, src string) (os.FileInfo, error) {
		if failed.Add(1) == 1 {
			os.Mkdir(d, 0o700)
			os.WriteFile(filepath.Join(d, "partial"), []byte("x"), 0o600)
			return nil, errors.New("no space left on device (test)")
		}
		return real(d, src)
	}
	r.mu.Unlock()
	const id = "deploy-spare-fail"
	if err := r.Apply(ctx, grepdSpec(id, 0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the failed copy removed", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		m, _ := filepath.Glob(filepath.Join(dir, id, sparePrefix+"*"))
		return failed.Load() == 1 && r.deps[id].spare.filling == nil && len(m) == 0
	})
	start := func(what string) {
		t.Helper()
		if err := r.Scale(ctx, id, 1, "test"); err != nil {
			t.Fatal(err)
		}
		eventually(t, what, func() bool { return len(pub.ids()) == 1 && status(t, r, id).Healthy == 1 })
		if _, err := os.Stat(filepath.Join(dir, id, "1", "grepd")); err != nil {
			t.Fatalf("%s: working dir lacks the package: %v", what, err)
		}
	}
	start("started after the copy ahead failed")
	if err := r.Scale(ctx, id, 0, "test"); err != nil {
		t.Fatal(err)
	}
	var spare string
	eventually(t, "a copy made ahead", func() bool {
		spare = spareDir(r, id)
		return spare != "" && len(pub.ids()) == 0
	})
	if err := os.RemoveAll(spare); err != nil {
		t.Fatal(err)
	}
	start("started after the copy ahead went missing")
}

// spareDir is deployment id's copy made ahead once it is complete ("" when
// there is none or no such deployment).
func spareDir(r *Runtime, id string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d := r.deps[id]; d != nil {
		return d.spare.dir
	}
	return ""
}
