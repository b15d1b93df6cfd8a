package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/tick"
)

// keyedMutex serializes work per key (build numbering per ufop).
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedEntry{}
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}

func (s *Server) createBuild(w http.ResponseWriter, r *http.Request, c *call) error {
	ctx := r.Context()
	u, uver, err := s.ownedUfop(ctx, c, r.PathValue("name"))
	if err != nil {
		return err
	}
	if s.cfg.Builder == nil {
		return errf(http.StatusServiceUnavailable, "no builder configured")
	}
	if r.ContentLength > s.cfg.MaxBuildBytes {
		return errf(http.StatusRequestEntityTooLarge, "build package over %d bytes", s.cfg.MaxBuildBytes)
	}
	unlock := s.buildLocks.lock(u.Name)
	defer unlock()
	builds, _, err := store.List[dora.Build](ctx, s.st, store.BuildsOf(u.Name))
	if err != nil {
		return err
	}
	n := nextBuildNumber(builds)
	// Its shared copy's key and this host's files are its own: the same
	// ufop name deleted and registered again numbers its builds from 1
	// again (artifactKey, build.Builder.Owns).
	artifactID := randomKey(16)
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxBuildBytes)
	y, err := s.cfg.Builder.UnpackAs(ctx, u.Name, n, artifactID, body, s.cfg.MaxBuildBytes)
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return errf(http.StatusRequestEntityTooLarge, "build package over %d bytes", mbe.Limit)
		case errors.Is(err, build.ErrBadPackage):
			return errf(http.StatusBadRequest, "%v", err)
		}
		return fmt.Errorf("unpack build %s #%d: %w", u.Name, n, err)
	}
	baseDir := ""
	if buildImageRE.MatchString(y.Image) {
		base, ok, err := s.ownedBuildImage(ctx, c.acct.ID, y.Image)
		if err != nil {
			return err
		}
		if !ok {
			return errf(http.StatusUnprocessableEntity,
				"ufop.yaml image %q: not a successful build of yours (use a base such as ubuntu or <ufop>.v<n>)", y.Image)
		}
		if !s.cfg.Builder.Owns(base.Ufop, base.Number, base.ArtifactID) || !s.cfg.Builder.Has(base.Ufop, base.Number) {
			return errf(http.StatusConflict,
				"ufop.yaml image %q: built by another admin, whose host holds its files; build on top of it there, or build %s again here", y.Image, base.Ufop)
		}
		baseDir = s.cfg.Builder.Dir(base.Ufop, base.Number)
	}
	b := newBuild(u.Name, n, y, s.id, s.nowUTC())
	b.ArtifactID = artifactID
	// Recorded only while the ufop is unchanged: a build must not outlive
	// a concurrent DELETE of its ufop (a later ufop of the same name,
	// another account's, would take it for its own).
	err = s.st.Txn(ctx, []store.Op{
		{Kind: store.OpPut, Key: store.BuildKey(u.Name, n), Value: mustJSON(b), CreateOnly: true},
		ufopCheck(u.Name, uver),
	})
	if errors.Is(err, store.ErrConflict) {
		if _, _, gerr := s.ownedUfop(ctx, c, u.Name); gerr != nil {
			return gerr
		}
		return errf(http.StatusConflict, "build %d of %s was recorded concurrently; retry", n, u.Name)
	} else if err != nil {
		return fmt.Errorf("record build %s #%d: %w", u.Name, n, err)
	}
	run := buildRun{build: b, ufopOwner: u.Owner, ufopCreated: u.Created}
	ctx, cancel := s.trackBuild(s.bgCtx, u.Name, n)
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		defer s.untrackBuild(u.Name, n, cancel)
		s.runBuild(ctx, cancel, run, baseDir)
	}()
	writeJSON(w, http.StatusAccepted, b)
	return nil
}

// errBuildGone cancels a build whose record or ufop is no longer the one
// it was started for: the ufop was deleted (and perhaps registered again,
// by another account whose builds count from 1 again).
var errBuildGone = errors.New("its ufop was deleted during the build")

// buildRun is one run of a build by this process: the record it created
// and the ufop it was created for, known by its owner and registration
// time, which a ufop deleted and registered again does not match.
type buildRun struct {
	build       dora.Build
	ufopOwner   string
	ufopCreated time.Time
}

// trackBuild returns the context build n of ufop runs under, which
// cancelBuilds cancels; untrackBuild forgets it.
func (s *Server) trackBuild(parent context.Context, ufop string, n int) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	s.runningMu.Lock()
	defer s.runningMu.Unlock()
	if s.running == nil {
		s.running = map[string]map[int]context.CancelCauseFunc{}
	}
	if s.running[ufop] == nil {
		s.running[ufop] = map[int]context.CancelCauseFunc{}
	}
	s.running[ufop][n] = cancel
	return ctx, cancel
}

// untrackBuild forgets build n of ufop, once it ended, and releases its
// context.
func (s *Server) untrackBuild(ufop string, n int, cancel context.CancelCauseFunc) {
	cancel(nil)
	s.runningMu.Lock()
	defer s.runningMu.Unlock()
	delete(s.running[ufop], n)
	if len(s.running[ufop]) == 0 {
		delete(s.running, ufop)
	}
}

// cancelBuilds stops the builds of ufop this process runs (its ufop is
// deleted); those of other admins stop at their next heartbeat.
func (s *Server) cancelBuilds(ufop string) {
	s.runningMu.Lock()
	defer s.runningMu.Unlock()
	for _, cancel := range s.running[ufop] {
		cancel(errBuildGone)
	}
}

// runBuild runs the build script (the builder writes LogPath itself) and
// records how it ended, on its own record only: once its ufop is deleted
// the build stops (cancel stops it) and records nothing.
func (s *Server) runBuild(ctx context.Context, cancel context.CancelCauseFunc, run buildRun, baseDir string) {
	b := run.build
	start := time.Now()
	beatCtx, stopBeat := context.WithCancel(ctx)
	beaten := make(chan struct{})
	go func() {
		defer close(beaten)
		s.beatBuild(beatCtx, run, func() { cancel(errBuildGone) })
	}()
	err := s.cfg.Builder.Build(ctx, b.Ufop, b.Number, baseDir, nil)
	if err == nil {
		// A build of a ufop since deleted stores no shared copy
		// nobody would read.
		if gone, gerr := s.updateOwnBuild(ctx, run, func(*dora.Build) bool { return false }); gerr != nil {
			err = fmt.Errorf("built, but its record could not be read: %w", gerr)
		} else if gone {
			err = errBuildGone
		}
	}
	if err == nil {
		// Other admins serve the artifact from the shared copy.
		if shared, serr := s.shareArtifact(ctx, b); serr != nil {
			err = fmt.Errorf("built, but the result could not be kept where the other admins find it: %w", serr)
		} else if shared {
			err = s.unshareIfGone(ctx, run)
		}
	}
	stopBeat()
	<-beaten
	status, msg := dora.BuildSuccess, ""
	outcome := "success"
	if err != nil {
		status, msg, outcome = dora.BuildFailed, err.Error(), "failed"
		switch {
		case errors.Is(err, errBuildGone) || errors.Is(context.Cause(ctx), errBuildGone):
			msg, outcome = "canceled: "+errBuildGone.Error(), "canceled"
		case ctx.Err() != nil:
			msg, outcome = "interrupted: the server stopped during the build", "interrupted"
		}
	}
	s.buildSeconds.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
	s.log.Info("admin: build finished", "ufop", b.Ufop, "number", b.Number, "status", status, "err", msg)
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer wcancel()
	if _, err := s.updateOwnBuild(wctx, run, func(b *dora.Build) bool {
		b.Status, b.Error, b.Finished = status, msg, s.nowUTC()
		return true
	}); err != nil {
		s.log.Error("admin: record build end", "ufop", b.Ufop, "number", b.Number, "err", err)
	}
}

// unshareIfGone deletes the shared copy of run's build, just stored, and
// returns errBuildGone when its ufop was deleted meanwhile: the deletion
// may have looked for the ufop's copies before this one was complete,
// and would leave it behind. The copy's key is the build's own
// (artifactKey), so the next ufop of the same name keeps its builds'. It
// runs whether or not ctx was canceled (a deletion through this admin
// cancels it), for at most 10 s; when the record cannot be read the copy
// is kept and the error returned.
func (s *Server) unshareIfGone(ctx context.Context, run buildRun) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	gone, err := s.updateOwnBuild(wctx, run, func(*dora.Build) bool { return false })
	if err != nil {
		return fmt.Errorf("built and stored, but its record could not be read: %w", err)
	}
	if !gone {
		return nil
	}
	if err := s.unshareArtifact(wctx, run.build); err != nil {
		s.log.Warn("admin: build of a deleted ufop: shared copy", "ufop", run.build.Ufop, "number", run.build.Number, "err", err)
	}
	return errBuildGone
}

// beatBuild records every BuildHeartbeat, until ctx ends, that this
// process still runs run's build, so that the leader does not take it for
// the build of a dead admin. It stops the build once its record or ufop
// is gone: deleted through another admin.
func (s *Server) beatBuild(ctx context.Context, run buildRun, stop func()) {
	tick.Every(ctx, s.cfg.BuildHeartbeat, func() {
		gone, err := s.updateOwnBuild(ctx, run, func(b *dora.Build) bool {
			b.Heartbeat = s.nowUTC()
			return true
		})
		if err != nil && ctx.Err() == nil {
			s.log.Warn("admin: build heartbeat", "ufop", run.build.Ufop, "number", run.build.Number, "err", err)
		}
		if gone {
			stop()
		}
	})
}

// failStaleBuild fails build n of ufop if it is still RUNNING, still run
// by owner, and stale says so of it (read again under the CAS).
func (s *Server) failStaleBuild(ctx context.Context, ufop string, n int, owner string, stale func(dora.Build) (string, bool)) (bool, error) {
	failed := false
	err := s.updateRunningBuild(ctx, ufop, n, func(b *dora.Build) bool {
		msg, ok := stale(*b)
		if b.Owner != owner || !ok {
			return false
		}
		b.Status, b.Error, b.Finished = dora.BuildFailed, msg, s.nowUTC()
		failed = true
		return true
	})
	return failed && err == nil, err
}

// updateOwnBuild applies change to run's build record while it is
// RUNNING and still run's: the record this process created (same owner
// and creation time), of the ufop it was created for (same owner and
// registration time), the ufop checked unchanged in the transaction that
// writes the build. It reports gone, writing nothing, once the record or
// the ufop is not run's any more: deleted, perhaps registered again by
// another account whose build 1 has the same key. A finished build is
// left alone, as is one change returns false for.
func (s *Server) updateOwnBuild(ctx context.Context, run buildRun, change func(*dora.Build) bool) (gone bool, err error) {
	name, n := run.build.Ufop, run.build.Number
	key := store.BuildKey(name, n)
	for i := 0; i < casRetries; i++ {
		b, bver, err := store.Get[dora.Build](ctx, s.st, key)
		if errors.Is(err, store.ErrNotFound) {
			return true, nil
		} else if err != nil {
			return false, fmt.Errorf("read build %s #%d: %w", name, n, err)
		}
		if b.Owner != run.build.Owner || !b.Created.Equal(run.build.Created) {
			return true, nil
		}
		u, uver, err := store.Get[dora.Ufop](ctx, s.st, store.UfopKey(name))
		if errors.Is(err, store.ErrNotFound) {
			return true, nil
		} else if err != nil {
			return false, fmt.Errorf("read ufop %s of build #%d: %w", name, n, err)
		}
		if u.Owner != run.ufopOwner || !u.Created.Equal(run.ufopCreated) {
			return true, nil
		}
		if b.Status != dora.BuildRunning || !change(&b) {
			return false, nil
		}
		err = s.st.Txn(ctx, []store.Op{
			{Kind: store.OpPut, Key: key, Value: mustJSON(b), Version: bver},
			ufopCheck(name, uver),
		})
		if errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return false, fmt.Errorf("update build %s #%d: %w", name, n, err)
		}
		return false, nil
	}
	return false, fmt.Errorf("update build %s #%d: %w", name, n, store.ErrConflict)
}

// updateRunningBuild applies change to build n of ufop while it is
// RUNNING, under a CAS (retried on conflict); change returns false to leave
// it as it is. A deleted or finished build is left alone.
func (s *Server) updateRunningBuild(ctx context.Context, ufop string, n int, change func(*dora.Build) bool) error {
	for i := 0; i < casRetries; i++ {
		b, ver, err := store.Get[dora.Build](ctx, s.st, store.BuildKey(ufop, n))
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if b.Status != dora.BuildRunning || !change(&b) {
			return nil
		}
		if _, err := s.st.CAS(ctx, store.BuildKey(ufop, n), mustJSON(b), ver); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return err
		}
		return nil
	}
	return store.ErrConflict
}

// buildNumber parses the {n} path value.
func buildNumber(r *http.Request) (int, error) {
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n < 1 {
		return 0, errf(http.StatusBadRequest, "build number %q: must be a positive integer", r.PathValue("n"))
	}
	return n, nil
}

func (s *Server) listBuilds(w http.ResponseWriter, r *http.Request, c *call) error {
	u, _, err := s.ownedUfop(r.Context(), c, r.PathValue("name"))
	if err != nil {
		return err
	}
	builds, _, err := store.List[dora.Build](r.Context(), s.st, store.BuildsOf(u.Name))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, builds)
	return nil
}

// ownedBuild returns build n of the caller's ufop; 404 when absent.
func (s *Server) ownedBuild(r *http.Request, c *call) (dora.Build, error) {
	u, _, err := s.ownedUfop(r.Context(), c, r.PathValue("name"))
	if err != nil {
		return dora.Build{}, err
	}
	n, err := buildNumber(r)
	if err != nil {
		return dora.Build{}, err
	}
	b, _, err := store.Get[dora.Build](r.Context(), s.st, store.BuildKey(u.Name, n))
	if errors.Is(err, store.ErrNotFound) {
		return b, errf(http.StatusNotFound, "build %d of %s not found", n, u.Name)
	}
	return b, err
}

func (s *Server) getBuild(w http.ResponseWriter, r *http.Request, c *call) error {
	b, err := s.ownedBuild(r, c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

// buildLog serves a build's log; with ?follow=1 the reply streams the lines
// as the build writes them and ends when the build has ended and its whole
// log is sent (`qdoractl build` and the console's build page follow it).
func (s *Server) buildLog(w http.ResponseWriter, r *http.Request, c *call) error {
	b, err := s.ownedBuild(r, c)
	if err != nil {
		return err
	}
	if s.cfg.Builder == nil {
		return errf(http.StatusServiceUnavailable, "no builder configured")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	// This host's log of build n is b's only if b's upload was unpacked
	// here: another's is that of an earlier ufop of the same name
	// (deleted through another admin), and is not shown: the path ""
	// names no file, as for a build of another host.
	path := ""
	if s.cfg.Builder.Owns(b.Ufop, b.Number, b.ArtifactID) {
		path = s.cfg.Builder.LogPath(b.Ufop, b.Number)
	}
	if wantFollow(r) {
		key := store.BuildKey(b.Ufop, b.Number)
		finished := func(ctx context.Context) bool {
			cur, _, err := store.Get[dora.Build](ctx, s.st, key)
			// A build whose record is gone (ufop deleted) or unreadable
			// ends the stream rather than holding it open forever.
			return err != nil || cur.Status != dora.BuildRunning
		}
		if err := followFile(r.Context(), streaming(w), path, finished); err != nil {
			s.log.Warn("admin: follow build log", "ufop", b.Ufop, "build", b.Number, "err", err)
		}
		return nil
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		w.WriteHeader(http.StatusOK) // nothing logged yet
		return nil
	}
	if err != nil {
		return fmt.Errorf("open build log: %w", err)
	}
	defer f.Close()
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, f)
	return nil
}

func (s *Server) switchVersion(w http.ResponseWriter, r *http.Request, c *call) error {
	var req struct {
		Build    int    `json:"build"`
		Protocol string `json:"protocol"`
	}
	if err := c.decode(r, &req); err != nil {
		return err
	}
	proto, err := checkSwitchRequest(req.Build, req.Protocol)
	if err != nil {
		return err
	}
	ctx := r.Context()
	version := ""
	for i := 0; version == ""; i++ {
		if i == casRetries {
			return fmt.Errorf("switch version: %w", store.ErrConflict)
		}
		u, uver, err := s.ownedUfop(ctx, c, r.PathValue("name"))
		if err != nil {
			return err
		}
		b, _, err := store.Get[dora.Build](ctx, s.st, store.BuildKey(u.Name, req.Build))
		if errors.Is(err, store.ErrNotFound) {
			return errf(http.StatusNotFound, "build %d of %s not found", req.Build, u.Name)
		} else if err != nil {
			return err
		}
		rel, err := releaseFromBuild(u.Name, b, proto, s.flavors, s.nowUTC())
		if err != nil {
			return err
		}
		key := store.ReleaseKey(u.Name, rel.Version)
		if _, err := s.st.Get(ctx, key); err == nil {
			version = rel.Version
			break
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		// Created only while the ufop is unchanged: a release must not
		// outlive a concurrent DELETE of its ufop.
		err = s.st.Txn(ctx, []store.Op{
			{Kind: store.OpPut, Key: key, Value: mustJSON(rel), CreateOnly: true},
			ufopCheck(u.Name, uver),
		})
		if err == nil {
			version = rel.Version
		} else if !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("create release %s %s: %w", u.Name, rel.Version, err)
		}
	}
	nu, err := s.activate(ctx, r.PathValue("name"), version)
	if err != nil {
		return err
	}
	info, err := s.ufopInfo(ctx, nu, c.acct)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}
