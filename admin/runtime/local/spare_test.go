package local

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
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
	// ready is the deployment's copy made ahead once it is complete.
	ready := func(id string) string {
		r.mu.Lock()
		defer r.mu.Unlock()
		if d := r.deps[id]; d != nil {
			return d.spare.dir
		}
		return ""
	}
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
