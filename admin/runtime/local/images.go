package local

// Image garbage collection: the images this runtime pulls into podman's
// storage for OCI deployments are removed once no deployment of the
// runtime uses them, after Config.ImageGCDelay (Nomad's docker driver
// `gc { image = true, image_delay = "3m" }`): a deployment removed and
// deployed again, or a platform restart that applies its deployments
// again, finds its image still there.
//
// Only what the runtime brought in is removed: a name it pulled that
// podman did not have before (a name an operator had pulled or tagged
// himself is never claimed), recorded with the image id in
// <Dir>/.images.json, so that a later run of the runtime on the same
// directory (dorad dev restarted) knows them too; those nothing applies
// again within the delay after it starts are removed. Removing is
// untagging that name (`podman rmi <name>`): podman deletes the image
// only when no other name is left on it, and never while a container,
// Dora's or not, uses it (no --force). A removal that fails is logged and
// tried again later, with a growing wait.
//
// Instances start from the image id, never pulling (--pull never). One
// whose image is gone from podman's storage all the same (an operator's
// `podman rmi` or `podman image prune -a`, another runtime on the host
// removing a name both pulled) finds it out when `podman run` fails, and
// only then: the reference the deployment named is pulled again, with the
// same access as Apply's pull, claimed for the collector, and the start
// goes on, provided the reference still names the image the deployment
// was deployed with; otherwise the instance fails saying so
// (restoreImage).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// DefaultImageGCDelay is how long an image no deployment uses stays in
// podman's storage when Config.ImageGCDelay is zero.
const DefaultImageGCDelay = 3 * time.Minute

// maxImageRetry caps the wait between attempts to remove an image.
const maxImageRetry = time.Hour

// maxImageLook is the longest the collector goes without looking at the
// images it knows (instances still running an image the deployment no
// longer names end without telling it).
const maxImageLook = time.Minute

// imagesFile holds the runtime's image records, under Config.Dir; its
// leading dot keeps it apart from deployment directories (deployment ids
// start with a letter or digit).
const imagesFile = ".images.json"

// imageRecord is a name this runtime pulled into podman's storage, with
// the image it named then.
type imageRecord struct {
	Ref string `json:"ref"`
	ID  string `json:"id"`

	// unused is when the collector first saw no deployment use the
	// image; zero while one does (or before it has looked).
	unused time.Time
	// retry is when a failed removal may be tried again; failures
	// counts the consecutive ones.
	retry    time.Time
	failures int
}

// dueImages is the collector's decision at now: for each record whose
// image is in use (inUse) the unused clock is reset, for the others it
// starts now if it had not; a record unused for delay and not waiting to
// retry a failed removal is due. next is when the next record falls due
// (zero: none will by itself).
func dueImages(recs []*imageRecord, inUse map[string]bool, now time.Time, delay time.Duration) (due []*imageRecord, next time.Time) {
	for _, rec := range recs {
		if inUse[rec.ID] {
			rec.unused, rec.retry, rec.failures = time.Time{}, time.Time{}, 0
			continue
		}
		if rec.unused.IsZero() {
			rec.unused = now
		}
		at := rec.unused.Add(delay)
		if rec.retry.After(at) {
			at = rec.retry
		}
		if !now.Before(at) {
			due = append(due, rec)
			continue
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return due, next
}

// retryWait is how long to wait before trying again to remove an image
// after failures consecutive failures: delay, doubled per failure, at
// least a second and at most maxImageRetry.
func retryWait(delay time.Duration, failures int) time.Duration {
	w := max(delay, time.Second)
	for i := 1; i < failures && w < maxImageRetry; i++ {
		w *= 2
	}
	return min(w, maxImageRetry)
}

// loadImages reads the records a previous run left in dir; a missing
// file is no records, an unreadable one is logged and ignored (its images
// stay in podman's storage).
func (r *Runtime) loadImages() {
	path := filepath.Join(r.cfg.Dir, imagesFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var recs []*imageRecord
	if err == nil {
		err = json.Unmarshal(b, &recs)
	}
	if err != nil {
		r.log.Warn("image records unreadable; the images they named are left in podman's storage", "file", path, "err", err)
		return
	}
	for _, rec := range recs {
		if rec != nil && rec.Ref != "" && rec.ID != "" {
			r.images = append(r.images, rec)
		}
	}
}

// saveImagesLocked writes the records to <Dir>/.images.json (replacing
// it whole). Callers hold r.imgRecMu.
func (r *Runtime) saveImagesLocked() error {
	b, err := json.Marshal(r.images)
	if err != nil {
		return fmt.Errorf("image records: %w", err)
	}
	path := filepath.Join(r.cfg.Dir, imagesFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("image records: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("image records: %w", err)
	}
	return nil
}

// ownsRef reports whether ref is a name this runtime pulled.
func (r *Runtime) ownsRef(ref string) bool {
	r.imgRecMu.Lock()
	defer r.imgRecMu.Unlock()
	for _, rec := range r.images {
		if rec.Ref == ref {
			return true
		}
	}
	return false
}

// recordPull records that the runtime pulled ref as image id at now (its
// unused clock starts then: the deployment that asked for it takes it
// up at once). The record is written before the image is used.
func (r *Runtime) recordPull(ref, id string, now time.Time) {
	r.imgRecMu.Lock()
	defer r.imgRecMu.Unlock()
	for _, rec := range r.images {
		if rec.Ref == ref && rec.ID == id {
			if rec.unused.IsZero() {
				rec.unused = now
			}
			return
		}
	}
	r.images = append(r.images, &imageRecord{Ref: ref, ID: id, unused: now})
	if err := r.saveImagesLocked(); err != nil {
		r.log.Warn("record a pulled image", "ref", ref, "image", id, "err", err)
	}
}

// imagesInUse returns the ids of the images the runtime's deployments
// name and their running instances run.
func (r *Runtime) imagesInUse() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	used := map[string]bool{}
	for _, d := range r.deps {
		if d.image != "" {
			used[d.image] = true
		}
		for _, in := range d.insts {
			if in.run != nil && in.image != "" {
				used[in.image] = true
			}
		}
	}
	return used
}

// collectImages removes the images due at now and returns when to look
// again (zero: when kicked). When ctx ends it stops before the next
// removal; one under way is not interrupted (podman is not killed in
// the middle of changing its storage).
//
// A pull holds imgMu shared until its deployment names the image, so
// the collector takes it for each removal alone, and there looks again
// at the images in use: an image pulled but not yet named is not seen
// unused, nor is one removed while it is being pulled again. A pull
// waits for at most one removal; a record whose removal finds a pull
// under way is tried again a second later.
func (r *Runtime) collectImages(ctx context.Context, now time.Time) time.Time {
	inUse := r.imagesInUse()
	r.imgRecMu.Lock()
	due, next := dueImages(r.images, inUse, now, r.cfg.ImageGCDelay)
	r.imgRecMu.Unlock()
	later := func(at time.Time) {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	for _, rec := range due {
		if ctx.Err() != nil {
			break // closing
		}
		if !r.imgMu.TryLock() {
			later(now.Add(time.Second)) // a pull is under way
			continue
		}
		r.removeImage(rec, now, later)
		r.imgMu.Unlock()
	}
	r.imgRecMu.Lock()
	if len(r.images) > 0 {
		later(now.Add(min(max(r.cfg.ImageGCDelay, time.Second), maxImageLook)))
	}
	r.imgRecMu.Unlock()
	return next
}

// removeImage removes rec's name from podman's storage, unless a
// deployment uses its image now, and drops the record once it is gone;
// a failed removal is given its retry time at now, passed to later.
// Callers hold imgMu exclusively.
func (r *Runtime) removeImage(rec *imageRecord, now time.Time, later func(time.Time)) {
	if r.imagesInUse()[rec.ID] {
		r.imgRecMu.Lock()
		rec.unused, rec.retry, rec.failures = time.Time{}, time.Time{}, 0
		r.imgRecMu.Unlock()
		return
	}
	rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	err := r.cfg.Podman.RemoveImageName(rctx, rec.Ref, rec.ID)
	cancel()
	r.imgRecMu.Lock()
	defer r.imgRecMu.Unlock()
	if err != nil {
		rec.failures++
		rec.retry = now.Add(retryWait(r.cfg.ImageGCDelay, rec.failures))
		later(rec.retry)
		r.log.Warn("remove an unused image; trying again later", "ref", rec.Ref, "image", rec.ID, "failures", rec.failures, "retry", rec.retry.Sub(now), "err", err)
		return
	}
	r.log.Info("removed an unused image", "ref", rec.Ref, "image", rec.ID, "unused", now.Sub(rec.unused))
	// Dropped before imgMu is let go: a pull of the same name that
	// follows records it anew (recordPull).
	kept := r.images[:0]
	for _, o := range r.images {
		if o != rec {
			kept = append(kept, o)
		}
	}
	clear(r.images[len(kept):])
	r.images = kept
	if err := r.saveImagesLocked(); err != nil {
		r.log.Warn("record removed images", "err", err)
	}
}

// holdImages holds imgMu shared for a pull, waiting while the collector
// removes an image (one removal at most), and returns what lets it go;
// it gives up with ctx's error when ctx ends first.
func (r *Runtime) holdImages(ctx context.Context) (release func(), err error) {
	if r.imgMu.TryRLock() {
		return sync.OnceFunc(r.imgMu.RUnlock), nil
	}
	got := make(chan struct{})
	go func() {
		r.imgMu.RLock()
		close(got)
	}()
	select {
	case <-got:
		return sync.OnceFunc(r.imgMu.RUnlock), nil
	case <-ctx.Done():
		go func() {
			<-got
			r.imgMu.RUnlock()
		}()
		return nil, fmt.Errorf("waiting for the image collector: %w", ctx.Err())
	}
}

// kickImages asks the collector to look at the images now (a deployment
// was removed or changed its image).
func (r *Runtime) kickImages() {
	select {
	case r.imgKick <- struct{}{}:
	default:
	}
}

// imageLoop runs the collector until ctx ends: at start (records a
// previous run left start their unused clock), when kicked and when the
// next record falls due.
func (r *Runtime) imageLoop(ctx context.Context) {
	defer close(r.imgDone)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.imgKick:
		case <-timer.C:
		}
		next := r.collectImages(ctx, time.Now())
		timer.Stop()
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
	}
}

// imageRestore is one pull of a deployment's image that went missing
// from podman's storage (restoreImage); the instances that find it
// missing while it runs wait for it and share its outcome.
type imageRestore struct {
	done  chan struct{}
	fatal bool
	err   error
}

// imageMissing reports whether podman's storage lacks image id. An error
// asking podman is logged and taken as not missing (the start failed for
// another reason, as far as anyone can tell).
func (r *Runtime) imageMissing(ctx context.Context, id string) bool {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ok, err := r.cfg.Podman.ImageExists(ctx, id)
	if err != nil {
		r.log.Warn("cannot tell whether an instance's image is still there", "image", id, "err", err)
		return false
	}
	return !ok
}

// restoreImage brings back image id, which a deployment deployed from
// ref runs and which is no longer in podman's storage (an operator's
// `podman rmi` or `podman image prune -a`, or another runtime on the
// host removing a name they both pulled): it pulls ref again, as Apply
// did (same registry access and credentials), and claims the name for
// the collector when podman did not have it (or the runtime had pulled
// it before). When ref names another image now, it fails with fatal set:
// the deployment does not silently run code it was not deployed with;
// deploying it again runs the new image. Instances finding the same
// image missing at once share one pull.
func (r *Runtime) restoreImage(ctx context.Context, ref, id string) (fatal bool, err error) {
	r.mu.Lock()
	rs := r.restores[id]
	owner := rs == nil
	if owner {
		rs = &imageRestore{done: make(chan struct{})}
		r.restores[id] = rs
	}
	r.mu.Unlock()
	if !owner {
		select {
		case <-rs.done:
			return rs.fatal, rs.err
		case <-ctx.Done():
			return false, fmt.Errorf("image %s missing from podman's storage: waiting for its pull: %w", ref, ctx.Err())
		}
	}
	rs.fatal, rs.err = r.pullAgain(ctx, ref, id)
	r.mu.Lock()
	delete(r.restores, id)
	r.mu.Unlock()
	close(rs.done)
	return rs.fatal, rs.err
}

// pullAgain is restoreImage's pull.
func (r *Runtime) pullAgain(ctx context.Context, ref, id string) (fatal bool, err error) {
	// Held shared as by Apply's pull: the collector does not remove the
	// name while it is pulled and claimed again.
	release, err := r.holdImages(ctx)
	if err != nil {
		return false, fmt.Errorf("image %s missing from podman's storage: %w", ref, err)
	}
	defer release()
	t0 := time.Now()
	r.log.Warn("an instance's image is no longer in podman's storage; pulling it again", "ref", ref, "image", id)
	had, err := r.cfg.Podman.ImageExists(ctx, ref)
	if err != nil {
		had = true // not known: not claimed
		r.log.Warn("cannot tell whether podman has the image name already; it will be kept", "ref", ref, "err", err)
	}
	mine := !had || r.ownsRef(ref)
	got, err := r.cfg.Podman.Pull(ctx, ref)
	if err != nil {
		return false, fmt.Errorf("image %s (%s) is no longer in podman's storage and pulling it again failed: %w", ref, shortID(id), err)
	}
	if mine {
		// The collector removes it once nothing uses it, the image
		// the deployment runs or, when ref moved, the one it names now.
		r.recordPull(ref, got, time.Now())
	}
	if !sameImage(got, id) {
		return true, fmt.Errorf("image %s (%s) is no longer in podman's storage, and %s names another image now (%s): not run in its place; deploy again to run it", ref, shortID(id), ref, shortID(got))
	}
	r.log.Info("image pulled again", "ref", ref, "image", id, "took", time.Since(t0))
	return false, nil
}

// shortID is image id as podman shows it: its first 12 hex digits.
func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// ImageExists reports whether podman's storage has an image named ref
// (a name or an id).
func (p *Podman) ImageExists(ctx context.Context, ref string) (bool, error) {
	err := p.command(ctx, "image", "exists", ref).Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		return false, nil
	default:
		return false, fmt.Errorf("podman image exists %s: %w", ref, err)
	}
}

// RemoveImageName removes the name ref from image id: `podman rmi ref`,
// which deletes the image when no other name is left on it and refuses
// while a container uses it. When ref names another image now (pulled
// again after the tag moved), id is removed only if it has no name left
// at all; an image that is gone already is not an error.
func (p *Podman) RemoveImageName(ctx context.Context, ref, id string) error {
	cur, err := p.output(ctx, "image", "inspect", "--format", "{{.Id}}", ref)
	if err == nil && sameImage(strings.TrimSpace(string(cur)), id) {
		if _, err := p.output(ctx, "rmi", ref); err != nil {
			return fmt.Errorf("remove image %s (%s): %w", ref, id, err)
		}
		return nil
	}
	exists, err := p.ImageExists(ctx, id)
	if err != nil || !exists {
		return err
	}
	out, err := p.output(ctx, "image", "inspect", "--format", "{{json .RepoTags}}", id)
	if err != nil {
		return fmt.Errorf("remove image %s (%s): %w", ref, id, err)
	}
	var names []string
	if err := json.Unmarshal(out, &names); err != nil {
		return fmt.Errorf("remove image %s: podman image inspect: %w", id, err)
	}
	if len(names) > 0 {
		return nil // named by someone else now: theirs
	}
	if _, err := p.output(ctx, "rmi", id); err != nil {
		return fmt.Errorf("remove image %s (once %s): %w", id, ref, err)
	}
	return nil
}

// sameImage reports whether the image ids a and b (full, or one a prefix
// of the other of at least 12 hex digits, as podman abbreviates them)
// name the same image.
func sameImage(a, b string) bool {
	a, b = strings.TrimPrefix(a, "sha256:"), strings.TrimPrefix(b, "sha256:")
	if len(a) > len(b) {
		a, b = b, a
	}
	return len(a) >= 12 && strings.HasPrefix(b, a)
}
