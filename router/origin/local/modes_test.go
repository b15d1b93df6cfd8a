package local

import (
	"context"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/doraproject/dora/router/origin"
)

// TestModes: every directory and file of the object store is the
// platform's alone (0700/0600), so user code running as another user
// cannot read any account's objects.
func TestModes(t *testing.T) {
	root := filepath.Join(t.TempDir(), "objects")
	d, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Put(context.Background(), "bkt", "a/b/c.txt", strings.NewReader("hello"), origin.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	n := 0
	err = filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(fileMode)
		if fi.IsDir() {
			want = dirMode
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %04o, want %04o", p, fi.Mode().Perm(), want)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 4 {
		t.Fatalf("walked only %d entries", n)
	}
}
