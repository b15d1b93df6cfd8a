package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/tick"
)

// Run is the server's background work until ctx ends. The part that must
// run once among the admins sharing the store runs only while this admin
// leads (Config.Leader; always without one): at the start of each term it
// fails builds whose admin is gone and re-applies every deployment that is
// not REPLACED and that the runtime does not know (so a restarted `dorad
// dev` brings its instances back, while a new leader on Nomad deploys
// nothing twice); then every
// PollInterval it copies each deployment's runtime status into the store,
// finishes blue/green switches and fails builds whose admin stopped
// beating. Every admin, leading or not, re-applies the deployments whose
// apply it deferred (runtime busy) while serving a request. Run returns
// nil when ctx ends and calls Close.
func (s *Server) Run(ctx context.Context) error {
	defer s.Close()
	if s.stats != nil {
		s.bgWG.Add(1)
		go func() {
			defer s.bgWG.Done()
			_ = s.stats.Run(ctx)
		}()
	}
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		s.retryDeferredLoop(ctx)
	}()
	elector := s.cfg.Leader
	if elector == nil {
		elector = alwaysLeader{}
	}
	if err := elector.Run(ctx, s.lead); err != nil {
		return fmt.Errorf("admin: leader election: %w", err)
	}
	return nil
}

// alwaysLeader is the elector of an admin that is the only one.
type alwaysLeader struct{}

func (alwaysLeader) Run(ctx context.Context, fn func(context.Context)) error {
	fn(ctx)
	<-ctx.Done()
	return nil
}

// Leading reports whether this admin currently leads the background work.
func (s *Server) Leading() bool { return s.leading.Load() }

// lead is one leadership term: it ends when ctx does.
func (s *Server) lead(ctx context.Context) {
	s.leading.Store(true)
	s.leaderGauge.Set(1)
	s.terms.Inc()
	defer func() {
		s.leading.Store(false)
		s.leaderGauge.Set(0)
	}()
	s.log.Info("admin: leading the background work")
	// The objects whose deleteAfterDays fell due, alongside; the term
	// ends only once its sweep has.
	var expiry sync.WaitGroup
	defer expiry.Wait()
	if s.expirer != nil && s.cfg.ExpiryInterval > 0 {
		expiry.Go(func() { s.expireLoop(ctx) })
	}
	if err := s.recoverBuilds(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("admin: recover builds", "err", err)
	}
	if err := s.reapplyAll(ctx); err != nil && ctx.Err() == nil {
		s.log.Error("admin: re-apply deployments", "err", err)
	}
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	lastRecover := s.now()
	for {
		if err := s.Reconcile(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("admin: reconcile", "err", err)
		}
		if ctx.Err() == nil {
			s.passes.Inc()
		}
		if now := s.now(); now.Sub(lastRecover) >= s.cfg.BuildHeartbeat {
			lastRecover = now
			if err := s.recoverBuilds(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("admin: recover builds", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// retryDeferredLoop re-applies, every PollInterval while this admin does
// not lead, the deployments whose apply this admin deferred; the leader's
// Reconcile does it for its own.
func (s *Server) retryDeferredLoop(ctx context.Context) {
	tick.Every(ctx, s.cfg.PollInterval, func() {
		if s.leading.Load() {
			return
		}
		if err := s.retryDeferred(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("admin: retry deferred applies", "err", err)
		}
	})
}

// retryDeferred re-applies the deployments whose apply met runtime.ErrBusy
// in this process.
func (s *Server) retryDeferred(ctx context.Context) error {
	s.retryMu.Lock()
	ids := make([]string, 0, len(s.retry))
	for id := range s.retry {
		ids = append(ids, id)
	}
	s.retryMu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	return s.eachDeployment(ctx, func(u dora.Ufop, d dora.Deployment) error {
		if !slices.Contains(ids, d.ID) {
			return nil
		}
		if !liveDeployment(d) {
			s.retryMu.Lock()
			delete(s.retry, d.ID)
			s.retryMu.Unlock()
			return nil
		}
		s.applyDeployment(ctx, u, d)
		return nil
	})
}

// eachDeployment calls f with every deployment of every ufop, in store
// order, and stops at the first error (a failed read or f's).
func (s *Server) eachDeployment(ctx context.Context, f func(dora.Ufop, dora.Deployment) error) error {
	ufops, _, err := store.List[dora.Ufop](ctx, s.st, store.PrefixUfops)
	if err != nil {
		return err
	}
	for _, u := range ufops {
		deps, err := s.deployments(ctx, u.Name)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := f(u, d); err != nil {
				return err
			}
		}
	}
	return nil
}

// recoverBuilds fails the RUNNING builds no process runs any more: those
// recorded by an admin that kept no Owner (an older version) and those,
// not run by this process, whose owner has not beaten for BuildStaleAfter
// heartbeats (it died, or was restarted: a new process has a new id).
func (s *Server) recoverBuilds(ctx context.Context) error {
	builds, _, err := store.List[dora.Build](ctx, s.st, store.PrefixBuilds)
	if err != nil {
		return err
	}
	now := s.now()
	staleAfter := time.Duration(BuildStaleAfter) * s.cfg.BuildHeartbeat
	stale := func(b dora.Build) (string, bool) { return staleBuild(b, s.id, now, staleAfter) }
	for _, b := range builds {
		if b.Status != dora.BuildRunning {
			continue
		}
		if _, ok := stale(b); !ok {
			continue
		}
		failed, err := s.failStaleBuild(ctx, b.Ufop, b.Number, b.Owner, stale)
		if err != nil {
			return err
		}
		if failed {
			s.log.Warn("admin: failed an interrupted build", "ufop", b.Ufop, "number", b.Number, "owner", b.Owner)
		}
	}
	return nil
}

// reapplyAll asks the runtime to run every deployment that is not REPLACED
// and that the runtime does not know (a restarted local runtime lost its
// instances; Nomad keeps its jobs); a STOPPED one is applied and its
// instances stopped again.
func (s *Server) reapplyAll(ctx context.Context) error {
	return s.eachDeployment(ctx, func(u dora.Ufop, d dora.Deployment) error {
		if !liveDeployment(d) {
			return nil
		}
		if _, err := s.rt.Status(ctx, d.ID); err == nil {
			// The runtime still runs it (Nomad, after a takeover by
			// another admin): applying it again would be a second
			// deploy, and with another admin's artifact URL a rolling
			// replacement of every instance.
			return nil
		} else if !errors.Is(err, runtime.ErrNotFound) {
			return err
		}
		nd := s.applyDeployment(ctx, u, d)
		if d.Status == dora.DeployStopped && nd.Status != dora.DeployFailed {
			if err := s.rt.StopInstances(ctx, d.ID, nil); err != nil {
				s.log.Warn("admin: re-stop deployment", "deployment", d.ID, "err", err)
			}
		}
		return nil
	})
}

// ScaledToZero is the message of a RUNNING deployment that runs no
// instance because its floor is 0 and nothing asks for one.
const ScaledToZero = "scaled to zero: the next request starts an instance"

// Reconcile runs one pass of Run's loop: it copies runtime statuses into
// the store and finishes blue/green switches. Exported for tests and for
// callers that drive the loop themselves.
func (s *Server) Reconcile(ctx context.Context) error {
	ufops, _, err := store.List[dora.Ufop](ctx, s.st, store.PrefixUfops)
	if err != nil {
		return err
	}
	var firstErr error
	for _, u := range ufops {
		if err := s.reconcileUfop(ctx, u); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

func (s *Server) reconcileUfop(ctx context.Context, u dora.Ufop) error {
	deps, err := s.deployments(ctx, u.Name)
	if err != nil {
		return err
	}
	for i, d := range deps {
		if !liveDeployment(d) {
			continue
		}
		s.retryMu.Lock()
		again := s.retry[d.ID]
		s.retryMu.Unlock()
		if again {
			d = s.applyDeployment(ctx, u, d)
			deps[i] = d
		}
		st, err := s.rt.Status(ctx, d.ID)
		if errors.Is(err, runtime.ErrNotFound) {
			if d.Status == dora.DeployPending || d.Status == dora.DeployRunning {
				// The runtime lost it (restarted on its own): apply again.
				deps[i] = s.applyDeployment(ctx, u, d)
			}
			continue
		}
		if err != nil {
			return err
		}
		status, msg, changed := observedStatus(d, st)
		if !changed {
			continue
		}
		now := s.nowUTC()
		nd, err := s.updateDeployment(ctx, u.Name, d.ID, func(x *dora.Deployment) bool {
			if x.Status == dora.DeployReplaced || (x.Status == status && x.Message == msg) {
				return false
			}
			x.Status, x.Message, x.Updated = status, msg, now
			return true
		})
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue // deleted meanwhile
			}
			return err
		}
		deps[i] = nd
	}
	if u.PreviousVersion == "" {
		return nil
	}
	return s.finishSwitch(ctx, u, deps)
}

// finishSwitch replaces each deployment of the previous version whose
// region has a RUNNING deployment of the active version, and clears
// PreviousVersion once none of it serves any more.
func (s *Server) finishSwitch(ctx context.Context, u dora.Ufop, deps []dora.Deployment) error {
	replace, done := switchStep(u, deps)
	for _, d := range replace {
		if err := s.rt.Remove(ctx, d.ID); err != nil && !errors.Is(err, runtime.ErrNotFound) {
			return err
		}
		now := s.nowUTC()
		_, err := s.updateDeployment(ctx, u.Name, d.ID, func(x *dora.Deployment) bool {
			x.Status, x.Message, x.Updated = dora.DeployReplaced, "replaced by "+u.ActiveVersion, now
			return true
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		s.log.Info("admin: blue/green step", "ufop", u.Name, "replaced", d.ID, "region", d.Region,
			"from", u.PreviousVersion, "to", u.ActiveVersion)
	}
	if !done {
		return nil
	}
	prev, active := u.PreviousVersion, u.ActiveVersion
	_, err := s.updateUfop(ctx, u.Name, func(x *dora.Ufop) error {
		if x.PreviousVersion == prev && x.ActiveVersion == active {
			x.PreviousVersion = ""
		}
		return nil
	})
	var ae *apiError
	if errors.As(err, &ae) {
		return nil // deleted meanwhile
	}
	return err
}

// expiryResume is how soon the next sweep comes when one stopped at its
// bound (rs.Expirer.Limit) with records left.
const expiryResume = time.Minute

// expireLoop sweeps the expired objects (sweepExpired) now, then every
// ExpiryInterval until ctx ends; a failed sweep (the store or the object
// store unreachable) is logged and retried at the next one.
func (s *Server) expireLoop(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := s.sweepExpired(ctx)
		wait := s.cfg.ExpiryInterval
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.log.Warn("admin: expire objects (deleteAfterDays); retrying at the next sweep", "err", err, "expired", res.Expired, "next", wait)
		case res.More:
			wait = min(wait, expiryResume)
		}
		t.Reset(wait)
	}
}

// sweepExpired runs one sweep of rs.Expirer at the admin's clock: the
// objects whose deleteAfterDays fell due are deleted, as rs delete does,
// and counted (dora_admin_objects_expired_total). Run calls it only while
// this admin leads.
func (s *Server) sweepExpired(ctx context.Context) (rs.SweepResult, error) {
	if s.expirer == nil {
		return rs.SweepResult{}, nil
	}
	res, err := s.expirer.Sweep(ctx, s.now(), func(bucket, key string) { s.expired.Inc() })
	if res.Expired > 0 {
		s.log.Info("admin: expired objects (deleteAfterDays)", "expired", res.Expired, "examined", res.Examined, "more", res.More)
	}
	return res, err
}
