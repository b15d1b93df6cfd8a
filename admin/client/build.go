package client

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/doraproject/dora"
)

// MaxPackageBytes is the largest uncompressed package Build sends (the
// server takes at most 1 GiB of tar.gz).
const MaxPackageBytes = 1 << 30

// ErrBadPackage is returned when the directory cannot be packed: no
// ufop.yaml, a symlink leaving the tree, a special file, too large.
var ErrBadPackage = errors.New("bad package directory")

// Build packs dir (which must hold ufop.yaml) as tar.gz, streams it as a new
// build of ufop and returns the build record (status RUNNING). The .git
// directory is skipped, file modes are kept, symlinks are sent as links and
// must stay inside dir.
func (c *Client) Build(ctx context.Context, ufop, dir string) (dora.Build, error) {
	if st, err := os.Stat(filepath.Join(dir, "ufop.yaml")); err != nil || !st.Mode().IsRegular() {
		return dora.Build{}, fmt.Errorf("build %s: %s has no ufop.yaml: %w", ufop, dir, ErrBadPackage)
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(WriteTarGz(ctx, pw, dir))
	}()
	b, err := c.UploadBuild(ctx, ufop, pr, -1)
	// Unblock the writer if the request ended before reading everything.
	pr.CloseWithError(errors.New("upload ended"))
	return b, err
}

// WriteTarGz writes dir as a gzip-compressed tar to w, with paths relative
// to dir, skipping .git. It refuses symlinks that point outside dir and
// anything but regular files, directories and symlinks.
func WriteTarGz(ctx context.Context, w io.Writer, dir string) error {
	root, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	// The directory itself may be reached through a symlink (-dir
	// ./current): walk what it points to, since WalkDir does not follow a
	// symlinked root and would pack nothing.
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	var total int64
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		name := filepath.ToSlash(rel)
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			link, err = os.Readlink(p)
			if err != nil {
				return err
			}
			if !linkInside(name, link) {
				return fmt.Errorf("symlink %s -> %s leaves the directory: %w", name, link, ErrBadPackage)
			}
		case info.Mode().IsRegular(), info.IsDir():
		default:
			return fmt.Errorf("%s is not a regular file, directory or symlink: %w", name, ErrBadPackage)
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = name
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname, hdr.Uid, hdr.Gid = "", "", 0, 0
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		total += info.Size()
		if total > MaxPackageBytes {
			return fmt.Errorf("more than %d bytes: %w", int64(MaxPackageBytes), ErrBadPackage)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.CopyN(tw, f, info.Size()); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	return nil
}

// linkInside reports whether a symlink at name (slash path relative to the
// root) pointing to target stays inside the root.
func linkInside(name, target string) bool {
	if target == "" || filepath.IsAbs(target) || strings.HasPrefix(target, "/") {
		return false
	}
	resolved := path.Join(path.Dir(name), filepath.ToSlash(target))
	return resolved != ".." && !strings.HasPrefix(resolved, "../")
}
