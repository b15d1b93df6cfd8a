package build

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/doraproject/dora"
)

// trashPrefix starts the names of the directories Remove empties; no ufop
// name starts with a dot, so they never clash with a ufop's directory.
const trashPrefix = ".removing-"

// Remove deletes every build of ufop: uploads, logs, results and the
// leftovers of interrupted builds, so that a deleted ufop leaves nothing on
// disk and a later ufop of the same name starts afresh. It is safe against
// what user code left behind: the directories may belong to the run-as
// user and hold symbolic links, which are removed, never followed. A build
// being unpacked or run meanwhile is removed when it ends. A ufop without
// builds is no error.
func (b *Builder) Remove(ufop string) error {
	if err := dora.ValidateUfopName(ufop); err != nil {
		return fmt.Errorf("build: remove: %w", err)
	}
	dir := filepath.Join(b.root, ufop)
	b.mu.Lock()
	for key := range b.busy {
		if strings.HasPrefix(key, ufop+"/") {
			b.doomed[key] = true
		}
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		b.mu.Unlock()
		return nil
	}
	if err != nil {
		b.mu.Unlock()
		return fmt.Errorf("build: remove %s: %w", ufop, err)
	}
	var idle []string
	for _, e := range ents {
		if !b.busy[ufop+"/"+e.Name()] {
			idle = append(idle, e.Name())
		}
	}
	trash, err := b.moveToTrash(dir, idle)
	if err == nil && len(idle) == len(ents) {
		err = os.Remove(dir)
	}
	b.mu.Unlock()
	if trash != "" {
		if rerr := removeTree(trash); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	if err != nil {
		return fmt.Errorf("build: remove %s: %w", ufop, err)
	}
	return nil
}

// moveToTrash renames the entries names of dir into a new trash directory
// under the root and returns it ("" when names is empty). Renaming is what
// makes Remove atomic for the builder (b.mu is held): a later Unpack of the
// same name starts in an empty directory.
func (b *Builder) moveToTrash(dir string, names []string) (string, error) {
	if len(names) == 0 {
		return "", nil
	}
	trash, err := os.MkdirTemp(b.root, trashPrefix)
	if err != nil {
		return "", err
	}
	for _, n := range names {
		if err := os.Rename(filepath.Join(dir, n), filepath.Join(trash, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return trash, err
		}
	}
	return trash, nil
}

// removeLeftovers deletes the trash an earlier process could not (it
// stopped, or a removal failed); best effort.
func (b *Builder) removeLeftovers() {
	ents, err := os.ReadDir(b.root)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), trashPrefix) {
			_ = removeTree(filepath.Join(b.root, e.Name()))
			continue
		}
		if e.IsDir() {
			b.removeHalfBuilds(filepath.Join(b.root, e.Name()))
		}
	}
}

// removeHalfBuilds deletes the working directories (result.tmp-*,
// home.tmp-*, resource.tmp-*) that builds of one ufop left when the
// process died mid-build: no build runs while a Builder starts.
func (b *Builder) removeHalfBuilds(ufopDir string) {
	builds, err := os.ReadDir(ufopDir)
	if err != nil {
		return
	}
	for _, n := range builds {
		if !n.IsDir() {
			continue
		}
		dir := filepath.Join(ufopDir, n.Name())
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if strings.Contains(e.Name(), ".tmp-") {
				_ = removeTree(filepath.Join(dir, e.Name()))
			}
		}
	}
}

// removeTree deletes dir and everything below it without following
// symbolic links (os.RemoveAll works relative to directory descriptors
// with O_NOFOLLOW). When that fails and the platform is not root, user code
// running as the platform's own user may have left directories without
// write permission: they are given it back and the removal is retried.
// (As root permissions do not stop the removal; and only a root platform
// runs user code as another user, so no other user's code can race the
// chmod walk below.)
func removeTree(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil || os.Geteuid() == 0 {
		return err
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			if fi, err := d.Info(); err == nil && fi.Mode().Perm()&0o700 != 0o700 {
				_ = os.Chmod(p, fi.Mode().Perm()|0o700)
			}
		}
		return nil
	})
	return os.RemoveAll(dir)
}
