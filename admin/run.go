package admin

import (
	"context"
	"errors"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/store"
)

// Run is the server's background work until ctx ends: at start it marks
// builds interrupted by a restart FAILED and re-applies every deployment
// that is not REPLACED (so a restarted `dorad dev` brings its instances
// back); then every PollInterval it copies each deployment's runtime status
// into the store and finishes blue/green switches. It returns nil when ctx
// ends and calls Close.
func (s *Server) Run(ctx context.Context) error {
	defer s.Close()
	if s.stats != nil {
		s.bgWG.Add(1)
		go func() {
			defer s.bgWG.Done()
			_ = s.stats.Run(ctx)
		}()
	}
	if err := s.failInterruptedBuilds(ctx); err != nil {
		s.log.Error("admin: recover builds", "err", err)
	}
	if err := s.reapplyAll(ctx); err != nil {
		s.log.Error("admin: re-apply deployments", "err", err)
	}
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for {
		if err := s.Reconcile(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("admin: reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// failInterruptedBuilds marks RUNNING builds FAILED: no process runs them
// any more after a restart.
func (s *Server) failInterruptedBuilds(ctx context.Context) error {
	builds, _, err := store.List[dora.Build](ctx, s.st, store.PrefixBuilds)
	if err != nil {
		return err
	}
	for _, b := range builds {
		if b.Status == dora.BuildRunning {
			if err := s.finishBuild(ctx, b.Ufop, b.Number, dora.BuildFailed, "interrupted: the server restarted during the build"); err != nil {
				return err
			}
		}
	}
	return nil
}

// reapplyAll asks the runtime to run every deployment that is not REPLACED;
// a STOPPED one is applied and its instances stopped again.
func (s *Server) reapplyAll(ctx context.Context) error {
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
			if !liveDeployment(d) {
				continue
			}
			nd := s.applyDeployment(ctx, u, d)
			if d.Status == dora.DeployStopped && nd.Status != dora.DeployFailed {
				if err := s.rt.StopInstances(ctx, d.ID, nil); err != nil {
					s.log.Warn("admin: re-stop deployment", "deployment", d.ID, "err", err)
				}
			}
		}
	}
	return nil
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
