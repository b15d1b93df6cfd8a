package local

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/doraproject/dora/admin/build"
)

// Spare copies. Copying a program package into an instance's fresh working
// directory is most of what starting a host process costs (a 10 MB Go
// binary: about 6 ms on ext4), and a start from zero has a request waiting
// for it. So a package deployment at zero instances (applied so, or scaled
// to 0) has one copy of its package made ahead in the background,
// <Dir>/<deployment>/spare-<n>: owned by the platform and closed to
// everyone (0700) until a start renames it into the instance's place and
// gives it to the run-as user, as prepareDir does with a copy made then.
// Other starts (scale-ups, restarts) copy then, as before: a copy made
// during a start or while the first request is served competed with them
// for the disk and the CPU (measured: BenchmarkWakeFromZero). The working
// directory an instance gets is the same either way: a fresh copy of the
// package, nothing of an earlier run.

// sparePrefix begins the name of a spare copy's directory.
const sparePrefix = "spare-"

// spareCopy is a deployment's copy made ahead. Guarded by Runtime.mu.
type spareCopy struct {
	dir string // a ready copy of src; "" when none
	src string
	// filling is closed when the copy being made ends (kept or removed);
	// nil when none is being made.
	filling chan struct{}
}

// fillSpareLocked starts making d's spare copy when it has none and none
// is being made. Callers hold r.mu.
func (r *Runtime) fillSpareLocked(d *deployment) {
	if r.closed || r.deps[d.id] != d || d.spec.Package == nil || d.spare.dir != "" || d.spare.filling != nil {
		return
	}
	src := d.spec.Package.Dir
	r.spareSeq++
	dir := filepath.Join(d.dir, fmt.Sprintf("%s%d", sparePrefix, r.spareSeq))
	done := make(chan struct{})
	d.spare.filling = done
	r.fills.Add(1)
	go func() {
		defer r.fills.Done()
		defer close(done)
		err := copySpare(dir, src)
		r.mu.Lock()
		d.spare.filling = nil
		keep := err == nil && !r.closed && r.deps[d.id] == d && d.spec.Package != nil && d.spec.Package.Dir == src && d.spare.dir == ""
		if keep {
			d.spare.dir, d.spare.src = dir, src
		} else if err == nil {
			// Applied with another package meanwhile: a copy of that one.
			r.fillSpareLocked(d)
		}
		r.mu.Unlock()
		if err != nil {
			r.log.Warn("copying the package ahead of a start", "deployment", d.id, "err", err)
		}
		if !keep {
			os.RemoveAll(dir)
		}
	}()
}

// copySpare copies the package src into the new directory dir, closed to
// everyone but the platform. The deployment's directory must exist: a
// removed deployment's is not made again.
func copySpare(dir, src string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if err := build.CopyDir(dir, src); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

// takeSpare returns d's spare copy of the package src ("" when none is
// ready); the next one is made when d is back at zero.
func (r *Runtime) takeSpare(d *deployment, src string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	dir := ""
	if d.spare.dir != "" && d.spare.src == src {
		dir = d.spare.dir
		d.spare.dir = ""
	}
	return dir
}

// dropSpareLocked forgets d's spare copy and returns its directory for
// the caller to remove ("" when none), and the channel closed when a copy
// being made ends (nil when none). Callers hold r.mu.
func dropSpareLocked(d *deployment) (string, <-chan struct{}) {
	dir := d.spare.dir
	d.spare.dir, d.spare.src = "", ""
	return dir, d.spare.filling
}

// isSpareDir reports whether name, an entry of a deployment's directory,
// is a spare copy.
func isSpareDir(name string) bool { return strings.HasPrefix(name, sparePrefix) }
