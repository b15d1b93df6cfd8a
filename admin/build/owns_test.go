package build

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// unpackAs unpacks a package whose build writes who into the result, as
// the build named id.
func unpackAs(t *testing.T, b *Builder, n int, id, who string) {
	t.Helper()
	y := "image: ubuntu\nrun: ./run.sh\nbuild_script:\n  - echo " + who + " > who\n"
	if _, err := b.UnpackAs(context.Background(), "testufop", n, id, tarGz(t, entry{name: "ufop.yaml", body: y}), 0); err != nil {
		t.Fatal(err)
	}
}

// TestOwns: the files of build n of a ufop on this host are those of the
// build whose id UnpackAs was given; Owns of another id (a later ufop of
// the same name, whose builds are numbered from 1 again, built on another
// host) reports false and removes them, unless that build is busy; and
// UnpackAs of another id removes the earlier build's result and log
// before it unpacks, so a failing build leaves none of them to take for
// its own.
func TestOwns(t *testing.T) {
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	unpackAs(t, b, 1, "alice-1", "alice")
	if err := b.Build(ctx, "testufop", 1, "", nil); err != nil {
		t.Fatal(err)
	}
	if !b.Owns("testufop", 1, "alice-1") || !b.Has("testufop", 1) {
		t.Fatal("alice's build is not alice's")
	}
	if got, err := os.ReadFile(filepath.Join(b.Dir("testufop", 1), "who")); err != nil || string(got) != "alice\n" {
		t.Fatalf("alice's result: %q %v", got, err)
	}
	// A build unpacked by Unpack has no id: it is not alice's.
	if b.Owns("testufop", 2, "alice-1") {
		t.Fatal("build 2, never unpacked, is alice-1's")
	}
	if !b.Owns("testufop", 2, "") {
		t.Fatal("build 2, never unpacked, is not the id-less build's")
	}

	// A record without an id (written before builds had ids, or rewritten
	// by an admin of that version): alice's files are not its, but nothing
	// proves them another's: they stay.
	if b.Owns("testufop", 1, "") {
		t.Fatal("alice's build is the id-less build's")
	}
	if !b.Has("testufop", 1) {
		t.Fatal("Owns of an id-less record removed alice's build")
	}

	// Bob's build 1 of the same name, built on another host: alice's files
	// here are not his, and go.
	if b.Owns("testufop", 1, "bob-1") {
		t.Fatal("alice's build is bob's")
	}
	if b.Has("testufop", 1) {
		t.Fatal("alice's result is still here once Owns found it another build's")
	}
	if _, err := os.Stat(b.LogPath("testufop", 1)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("alice's log is still here once Owns found it another build's: %v", err)
	}
	checkNoTrash(t, b.root)

	// A busy build is left alone.
	unpackAs(t, b, 1, "alice-1", "alice")
	if err := b.Build(ctx, "testufop", 1, "", nil); err != nil {
		t.Fatal(err)
	}
	release, err := b.claim("testufop", 1)
	if err != nil {
		t.Fatal(err)
	}
	if b.Owns("testufop", 1, "bob-1") {
		t.Fatal("alice's busy build is bob's")
	}
	if !b.Has("testufop", 1) {
		t.Fatal("Owns removed a busy build")
	}
	release()

	// Bob's build 1 unpacked here, whose build fails: nothing of alice's
	// is left under his id.
	y := "image: ubuntu\nrun: ./run.sh\nbuild_script:\n  - exit 1\n"
	if _, err := b.UnpackAs(ctx, "testufop", 1, "bob-1", tarGz(t, entry{name: "ufop.yaml", body: y}), 0); err != nil {
		t.Fatal(err)
	}
	if !b.Owns("testufop", 1, "bob-1") {
		t.Fatal("bob's unpacked build is not bob's")
	}
	if b.Has("testufop", 1) {
		t.Fatal("alice's result is left under bob's id")
	}
	if log, err := os.ReadFile(b.LogPath("testufop", 1)); err == nil && strings.Contains(string(log), "alice") {
		t.Fatalf("alice's log is left under bob's id: %q", log)
	}
	if b.Owns("testufop", 1, "alice-1") {
		t.Fatal("bob's unpacked build is alice's")
	}
	if _, err := b.UnpackAs(ctx, "testufop", 1, "bob-1", tarGz(t, entry{name: "ufop.yaml", body: y}), 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Build(ctx, "testufop", 1, "", nil); err == nil {
		t.Fatal("bob's failing build succeeded")
	}
	if b.Has("testufop", 1) {
		t.Fatal("a result is left after bob's failing build")
	}
	if _, err := b.UnpackAs(ctx, "testufop", 1, "../x", tarGz(t, entry{name: "ufop.yaml", body: y}), 0); err == nil {
		t.Fatal("UnpackAs took an id that is not URL-safe")
	}
}
