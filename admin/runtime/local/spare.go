package local

import (
	"errors"
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

// spareCopies bounds the spare copies made at once, runtime-wide: a restart
// of the platform re-applies every deployment, and those at zero would all
// copy their packages at the same moment otherwise (a burst of disk and
// CPU for work that is only ahead of need). The others wait their turn; a
// start that finds no copy ready copies then, as it always did.
const spareCopies = 1

// spareCopy is a deployment's copy made ahead. Guarded by Runtime.mu.
type spareCopy struct {
	dir string // a ready copy of src; "" when none
	src string
	// srcInfo is src as it was when the copy began: a start takes the
	// copy only if src is still that directory, unchanged (a package
	// removed and built again at the same path is another program).
	srcInfo os.FileInfo
	// filling is closed when the copy being made ends (kept or removed);
	// nil when none is being made.
	filling chan struct{}
	// cancel, closed by dropSpareLocked, tells a copy still waiting for
	// its turn not to begin.
	cancel chan struct{}
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
	done, cancel := make(chan struct{}), make(chan struct{})
	d.spare.filling, d.spare.cancel = done, cancel
	r.fills.Add(1)
	go func() {
		defer r.fills.Done()
		defer close(done)
		wanted := func() bool {
			return !r.closed && r.deps[d.id] == d && d.spec.Package != nil && d.spec.Package.Dir == src && d.spare.dir == ""
		}
		select {
		case r.spareSlots <- struct{}{}:
		case <-cancel:
			r.mu.Lock()
			d.spare.filling, d.spare.cancel = nil, nil
			r.mu.Unlock()
			return
		}
		r.mu.Lock()
		begin := wanted()
		r.mu.Unlock()
		var info os.FileInfo
		err := errSpareUnwanted
		if begin {
			info, err = r.copySpare(dir, src)
		}
		<-r.spareSlots
		r.mu.Lock()
		d.spare.filling, d.spare.cancel = nil, nil
		keep := err == nil && wanted()
		if keep {
			d.spare.dir, d.spare.src, d.spare.srcInfo = dir, src, info
		} else if err == nil || err == errSpareUnwanted {
			// Applied with another package meanwhile: a copy of that one.
			r.fillSpareLocked(d)
		}
		r.mu.Unlock()
		if err != nil && err != errSpareUnwanted {
			r.log.Warn("copying the package ahead of a start", "deployment", d.id, "err", err)
		}
		if !keep && begin {
			os.RemoveAll(dir)
		}
	}()
}

// errSpareUnwanted: the copy was no longer wanted when its turn came.
var errSpareUnwanted = errors.New("spare copy no longer wanted")

// copySpare copies the package src into the new directory dir, closed to
// everyone but the platform, and returns src as it was before the copy.
// The deployment's directory must exist: a removed deployment's is not
// made again.
func copySpare(dir, src string) (os.FileInfo, error) {
	info, err := os.Stat(src)
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	if err := build.CopyDir(dir, src); err != nil {
		return nil, err
	}
	return info, os.Chmod(dir, 0o700)
}

// sameSource reports whether src is still the directory a copy was made
// from (info): the same file, not modified since. Build results are not
// changed once built; a ufop deleted and built again gets a new
// directory at the same path.
func sameSource(src string, info os.FileInfo) bool {
	now, err := os.Stat(src)
	return err == nil && info != nil && os.SameFile(info, now) && now.ModTime().Equal(info.ModTime())
}

// takeSpare returns d's spare copy of the package src ("" when none is
// ready, or src changed since it was made: that copy is removed); the
// next one is made when d is back at zero.
func (r *Runtime) takeSpare(d *deployment, src string) string {
	r.mu.Lock()
	dir, info := "", os.FileInfo(nil)
	if d.spare.dir != "" && d.spare.src == src {
		dir, info = d.spare.dir, d.spare.srcInfo
		d.spare.dir, d.spare.src, d.spare.srcInfo = "", "", nil
	}
	r.mu.Unlock()
	if dir != "" && !sameSource(src, info) {
		r.log.Warn("the package changed since it was copied ahead; copying it again", "deployment", d.id, "package", src)
		os.RemoveAll(dir)
		return ""
	}
	return dir
}

// dropSpareLocked forgets d's spare copy and returns its directory for
// the caller to remove ("" when none), and the channel closed when a copy
// being made ends (nil when none); a copy still waiting for its turn will
// not begin. Callers hold r.mu.
func dropSpareLocked(d *deployment) (string, <-chan struct{}) {
	dir := d.spare.dir
	d.spare.dir, d.spare.src, d.spare.srcInfo = "", "", nil
	if d.spare.cancel != nil {
		close(d.spare.cancel)
		d.spare.cancel = nil
	}
	return dir, d.spare.filling
}

// isSpareDir reports whether name, an entry of a deployment's directory,
// is a spare copy.
func isSpareDir(name string) bool { return strings.HasPrefix(name, sparePrefix) }
