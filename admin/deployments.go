package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/api"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/store"
)

// DeploymentInfo is a deployment with its instances as the runtime reports
// them (GET /v1/ufops/{name}/deployments/{id}; a wire type of internal/api).
type DeploymentInfo = api.DeploymentInfo

// applyTimeout bounds one runtime call made on behalf of a request; the
// call outlives a client that hangs up so that the store and the runtime
// agree.
const applyTimeout = time.Minute

// deploymentsKV lists a ufop's deployments (sorted by creation) with their
// store versions.
func (s *Server) deploymentsKV(ctx context.Context, ufop string) ([]dora.Deployment, []uint64, error) {
	deps, kvs, err := store.List[dora.Deployment](ctx, s.st, store.DeploymentsOf(ufop))
	if err != nil {
		return nil, nil, err
	}
	vers := make([]uint64, len(kvs))
	for i, kv := range kvs {
		vers[i] = kv.Version
	}
	idx := make([]int, len(deps))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return deps[idx[a]].Created.Before(deps[idx[b]].Created) })
	sd, sv := make([]dora.Deployment, len(deps)), make([]uint64, len(deps))
	for i, j := range idx {
		sd[i], sv[i] = deps[j], vers[j]
	}
	return sd, sv, nil
}

// deployments lists a ufop's deployments sorted by creation.
func (s *Server) deployments(ctx context.Context, ufop string) ([]dora.Deployment, error) {
	deps, _, err := s.deploymentsKV(ctx, ufop)
	return deps, err
}

// updateDeployment applies fn to deployments/<ufop>/<id> with CAS retries;
// fn returns false to leave the record as is.
func (s *Server) updateDeployment(ctx context.Context, ufop, id string, fn func(*dora.Deployment) bool) (dora.Deployment, error) {
	key := store.DeploymentKey(ufop, id)
	for i := 0; i < casRetries; i++ {
		d, ver, err := store.Get[dora.Deployment](ctx, s.st, key)
		if err != nil {
			return d, err
		}
		if !fn(&d) {
			return d, nil
		}
		if _, err := s.st.CAS(ctx, key, mustJSON(d), ver); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return d, fmt.Errorf("update deployment %s: %w", id, err)
		}
		return d, nil
	}
	return dora.Deployment{}, fmt.Errorf("update deployment %s: %w", id, store.ErrConflict)
}

// artifactWeek is the granularity of artifact URL deadlines: the URL stays
// the same for a week (so applying a spec twice changes nothing) and is
// valid for one to two weeks.
const artifactWeek = 7 * 24 * 3600

// artifactURL is the signed URL of build n's result, or "" without root keys.
func (s *Server) artifactURL(ufop string, n int) string {
	if s.cfg.RootAK == "" || s.cfg.RootSK == "" {
		return ""
	}
	deadline := (s.now().Unix()/artifactWeek + 2) * artifactWeek
	base := s.public.String() + "/v1/artifacts/" + url.PathEscape(ufop) + "/" + strconv.Itoa(n) + ".tar.gz"
	return auth.DownloadURL(base, s.cfg.RootAK, s.cfg.RootSK, deadline)
}

// spec builds the runtime.Spec of a deployment.
func (s *Server) spec(ctx context.Context, u dora.Ufop, d dora.Deployment) (runtime.Spec, error) {
	rel, _, err := store.Get[dora.Release](ctx, s.st, store.ReleaseKey(u.Name, d.Version))
	if err != nil {
		return runtime.Spec{}, fmt.Errorf("release %s %s: %w", u.Name, d.Version, err)
	}
	fl, ok := s.flavor(rel.Flavor)
	if !ok {
		return runtime.Spec{}, fmt.Errorf("flavor %q is not offered any more", rel.Flavor)
	}
	img, err := s.resolveImage(ctx, u.Owner, rel.Image)
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			return runtime.Spec{}, errors.New(ae.Msg)
		}
		return runtime.Spec{}, err
	}
	spec := runtime.Spec{Deployment: d, Release: rel, Owner: u.Owner, Flavor: fl}
	if img.build != nil {
		if s.cfg.Builder == nil {
			return runtime.Spec{}, errors.New("no builder configured to run program packages")
		}
		b := img.build
		// This host's files of build n that are not b's, an earlier
		// ufop's of the same name (deleted through another admin), are
		// removed (Owns): the local runtime then finds none, as for a
		// build of another host, rather than run them.
		s.cfg.Builder.Owns(b.Ufop, b.Number, b.ArtifactID)
		spec.Package = &runtime.Package{
			Dir:         s.cfg.Builder.Dir(b.Ufop, b.Number),
			Run:         b.Run,
			ArtifactURL: s.artifactURL(b.Ufop, b.Number),
		}
	} else {
		spec.OCIImage = img.ociRef
	}
	return spec, nil
}

// imageRunner is implemented by runtimes that run OCI images only when a
// container engine is installed (the local runtime: podman).
type imageRunner interface {
	CanRunImages() error
}

// checkRunnable refuses (422, saying what to install) a deployment of an
// OCI image on a runtime that cannot run images, before anything is
// stored: the deployment would only go FAILED after "Deploy success".
func (s *Server) checkRunnable(ctx context.Context, owner, image string) error {
	ir, ok := s.rt.(imageRunner)
	if !ok {
		return nil
	}
	img, err := s.resolveImage(ctx, owner, image)
	if err != nil || img.build != nil {
		return nil // a build, or an error that applyDeployment records
	}
	if err := ir.CanRunImages(); err != nil {
		return errf(http.StatusUnprocessableEntity, "image %s: %v", image, err)
	}
	return nil
}

// applyDeployment asks the runtime to run d; a failure is recorded on the
// deployment (FAILED with the runtime's message), not returned.
func (s *Server) applyDeployment(ctx context.Context, u dora.Ufop, d dora.Deployment) dora.Deployment {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), applyTimeout)
	defer cancel()
	spec, err := s.spec(ctx, u, d)
	if err == nil {
		err = s.rt.Apply(ctx, spec)
	}
	now := s.nowUTC()
	if errors.Is(err, runtime.ErrBusy) {
		// Mid-rollout: not a failure; Reconcile applies it again.
		s.retryMu.Lock()
		s.retry[d.ID] = true
		s.retryMu.Unlock()
		s.log.Info("admin: runtime busy, apply deferred", "deployment", d.ID)
		return d
	}
	s.retryMu.Lock()
	delete(s.retry, d.ID)
	s.retryMu.Unlock()
	if err != nil {
		msg := err.Error()
		s.log.Warn("admin: apply failed", "deployment", d.ID, "ufop", u.Name, "err", msg)
		nd, uerr := s.updateDeployment(ctx, u.Name, d.ID, func(x *dora.Deployment) bool {
			x.Status, x.Message, x.Updated = dora.DeployFailed, msg, now
			return true
		})
		if uerr != nil {
			s.log.Error("admin: record failed apply", "deployment", d.ID, "err", uerr)
			d.Status, d.Message = dora.DeployFailed, msg
			return d
		}
		return nd
	}
	if d.Status == dora.DeployFailed {
		nd, uerr := s.updateDeployment(ctx, u.Name, d.ID, func(x *dora.Deployment) bool {
			if x.Status != dora.DeployFailed {
				return false
			}
			x.Status, x.Message, x.Updated = dora.DeployPending, "", now
			return true
		})
		if uerr == nil {
			return nd
		}
	}
	return d
}

// activate makes version the active one of ufop (planActivate) and asks
// the runtime to remove the deployments it replaces and run the ones it
// creates.
func (s *Server) activate(ctx context.Context, name, version string) (dora.Ufop, error) {
	for i := 0; i < casRetries; i++ {
		u, uver, err := s.getUfop(ctx, name)
		if err != nil {
			return u, err
		}
		if u.ActiveVersion == version {
			return u, nil
		}
		deps, vers, err := s.deploymentsKV(ctx, name)
		if err != nil {
			return u, err
		}
		a := planActivate(u, deps, version, s.nowUTC(), newDeploymentID)
		var ops []store.Op
		for _, nd := range a.Create {
			ops = append(ops, store.Op{Kind: store.OpPut, Key: store.DeploymentKey(name, nd.ID), Value: mustJSON(nd), CreateOnly: true})
		}
		for _, r := range a.Replace {
			ops = append(ops, store.Op{Kind: store.OpPut, Key: store.DeploymentKey(name, r.Deployment.ID), Value: mustJSON(r.Deployment), Version: vers[r.Index]})
		}
		ops = append(ops, store.Op{Kind: store.OpPut, Key: store.UfopKey(name), Value: mustJSON(a.Ufop), Version: uver})
		if err := s.st.Txn(ctx, ops); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return u, fmt.Errorf("activate %s %s: %w", name, version, err)
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), applyTimeout)
		for _, r := range a.Replace {
			if err := s.rt.Remove(rctx, r.Deployment.ID); err != nil && !errors.Is(err, runtime.ErrNotFound) {
				s.log.Warn("admin: remove replaced deployment", "deployment", r.Deployment.ID, "err", err)
			}
		}
		cancel()
		for _, d := range a.Create {
			s.applyDeployment(ctx, a.Ufop, d)
		}
		return a.Ufop, nil
	}
	return dora.Ufop{}, fmt.Errorf("activate %s %s: %w", name, version, store.ErrConflict)
}

// newDeploymentID names a new deployment.
func newDeploymentID() string { return "deploy-" + uuid.NewString() }

// regionParam returns the region asked for, or the default one; 422 when
// unknown.
func (s *Server) regionParam(region string) (string, error) {
	if region == "" {
		return s.defaultRegion(), nil
	}
	if !s.hasRegion(region) {
		return "", errf(http.StatusUnprocessableEntity, "region %q: unknown (qdoractl region lists the regions; GET /v1/regions)", region)
	}
	return region, nil
}

func (s *Server) deploy(w http.ResponseWriter, r *http.Request, c *call) error {
	var req api.DeployRequest
	if err := c.decode(r, &req); err != nil {
		return err
	}
	limit := c.acct.Limit()
	if err := checkDeployRequest(req, limit); err != nil {
		return err
	}
	region, err := s.regionParam(req.Region)
	if err != nil {
		return err
	}
	ctx := r.Context()
	for i := 0; i < casRetries; i++ {
		u, uver, err := s.ownedUfop(ctx, c, r.PathValue("name"))
		if err != nil {
			return err
		}
		rel, _, err := store.Get[dora.Release](ctx, s.st, store.ReleaseKey(u.Name, req.Version))
		if errors.Is(err, store.ErrNotFound) {
			return errf(http.StatusUnprocessableEntity, "version %q of %s: no such release", req.Version, u.Name)
		} else if err != nil {
			return err
		}
		if err := s.checkRunnable(ctx, u.Owner, rel.Image); err != nil {
			return err
		}
		deps, vers, err := s.deploymentsKV(ctx, u.Name)
		if err != nil {
			return err
		}
		ch, err := planDeploy(deps, u.Name, req, region, rel, limit, s.nowUTC(), newDeploymentID)
		if err != nil {
			return err
		}
		d := ch.Deployment
		ops := []store.Op{changeOp(u.Name, ch, vers)}
		if u.ActiveVersion == "" {
			// The first deployment makes its version the active one.
			u.ActiveVersion = req.Version
			ops = append(ops, store.Op{Kind: store.OpPut, Key: store.UfopKey(u.Name), Value: mustJSON(u), Version: uver})
		} else {
			ops = append(ops, ufopGuard(u, uver))
		}
		if err := s.st.Txn(ctx, ops); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return fmt.Errorf("deploy %s %s: %w", u.Name, req.Version, err)
		}
		d = s.applyDeployment(ctx, u, d)
		if req.Activate && u.ActiveVersion != req.Version {
			if _, err := s.activate(ctx, u.Name, req.Version); err != nil {
				return err
			}
		}
		writeJSON(w, http.StatusAccepted, d)
		return nil
	}
	return fmt.Errorf("deploy: %w", store.ErrConflict)
}

// ufopCheck is the condition that ufop name is still at version ver: a
// deployment written with it cannot outlive a concurrent DELETE of the
// ufop (nor land in a new ufop of the same name).
func ufopCheck(name string, ver uint64) store.Op {
	return store.Op{Kind: store.OpCheck, Key: store.UfopKey(name), Version: ver}
}

// ufopGuard is the ufop operation of a transaction writing a deployment: a
// rewrite of the unchanged ufop at its version, which serializes the
// deploys and resizes of a ufop. Two calls each finding no deployment of
// a version in a region cannot both create one, nor can two calls each
// counting the other's old floor both pass the instance limit: the second
// conflicts and reads again. Like ufopCheck, it fails once the ufop is
// deleted.
func ufopGuard(u dora.Ufop, ver uint64) store.Op {
	return store.Op{Kind: store.OpPut, Key: store.UfopKey(u.Name), Value: mustJSON(u), Version: ver}
}

// changeOp is the store operation writing ch: a CAS on the record it
// updates, or the creation of a new one.
func changeOp(ufop string, ch deploymentChange, vers []uint64) store.Op {
	op := store.Op{Kind: store.OpPut, Key: store.DeploymentKey(ufop, ch.Deployment.ID), Value: mustJSON(ch.Deployment)}
	if ch.Index >= 0 {
		op.Version = vers[ch.Index]
	} else {
		op.CreateOnly = true
	}
	return op
}

func (s *Server) resize(w http.ResponseWriter, r *http.Request, c *call) error {
	var req struct {
		Num    *int   `json:"num"`
		Region string `json:"region"`
	}
	if err := c.decode(r, &req); err != nil {
		return err
	}
	if req.Num == nil || *req.Num < 0 {
		return errf(http.StatusBadRequest, "num: a non-negative instance count is required")
	}
	num := *req.Num
	region, err := s.regionParam(req.Region)
	if err != nil {
		return err
	}
	limit := c.acct.Limit()
	ctx := r.Context()
	for i := 0; i < casRetries; i++ {
		u, uver, err := s.ownedUfop(ctx, c, r.PathValue("name"))
		if err != nil {
			return err
		}
		if u.ActiveVersion == "" {
			return errf(http.StatusConflict, "ufop %s has no active version yet: activate a version first "+
				"(qdoractl ufopver %s -c <build>, or qdoractl deploy %s <version> --region <region> --expect <n> --activate; "+
				"in the console, a build's \"Use as active version\" or Deploy)", u.Name, u.Name, u.Name)
		}
		deps, vers, err := s.deploymentsKV(ctx, u.Name)
		if err != nil {
			return err
		}
		// A new deployment takes the active release's policy, once it is
		// known to be runnable here.
		var autoscale *dora.AutoscalePolicy
		if findLive(deps, u.ActiveVersion, region) < 0 {
			rel, _, err := store.Get[dora.Release](ctx, s.st, store.ReleaseKey(u.Name, u.ActiveVersion))
			if err != nil {
				return fmt.Errorf("resize %s: active release: %w", u.Name, err)
			}
			if err := s.checkRunnable(ctx, u.Owner, rel.Image); err != nil {
				return err
			}
			autoscale = rel.Autoscale
		}
		ch, err := planResize(deps, u.Name, u.ActiveVersion, region, num, limit, autoscale, s.nowUTC(), newDeploymentID)
		if err != nil {
			return err
		}
		if err := s.st.Txn(ctx, []store.Op{changeOp(u.Name, ch, vers), ufopGuard(u, uver)}); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return fmt.Errorf("resize %s: %w", u.Name, err)
		}
		d := s.applyDeployment(ctx, u, ch.Deployment)
		writeJSON(w, http.StatusOK, d)
		return nil
	}
	return fmt.Errorf("resize: %w", store.ErrConflict)
}

func (s *Server) listDeployments(w http.ResponseWriter, r *http.Request, c *call) error {
	_, _, deps, err := s.ownedDeployments(r.Context(), c, r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, deps)
	return nil
}

// ownedDeployment returns deployment {id} of the caller's ufop {name}.
func (s *Server) ownedDeployment(r *http.Request, c *call) (dora.Ufop, dora.Deployment, error) {
	u, _, err := s.ownedUfop(r.Context(), c, r.PathValue("name"))
	if err != nil {
		return u, dora.Deployment{}, err
	}
	id := r.PathValue("id")
	d, _, err := store.Get[dora.Deployment](r.Context(), s.st, store.DeploymentKey(u.Name, id))
	if errors.Is(err, store.ErrNotFound) {
		return u, d, errf(http.StatusNotFound, "deployment %q of %s not found", id, u.Name)
	}
	return u, d, err
}

func (s *Server) getDeployment(w http.ResponseWriter, r *http.Request, c *call) error {
	_, d, err := s.ownedDeployment(r, c)
	if err != nil {
		return err
	}
	info := DeploymentInfo{Deployment: d, Instances: []runtime.InstanceStatus{}}
	// "autoscale" answers the policy in force (defaults and the release's
	// block merged under the deployment's overrides).
	rel, _, err := store.Get[dora.Release](r.Context(), s.st, store.ReleaseKey(d.Ufop, d.Version))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	info.Autoscale = policyView(policyInForce(d, rel, s.ownerLimit(r.Context(), d.Ufop)))
	if liveDeployment(d) {
		st, err := s.rt.Status(r.Context(), d.ID)
		if err == nil && st.Instances != nil {
			info.Instances = st.Instances
		} else if err != nil && !errors.Is(err, runtime.ErrNotFound) {
			s.log.Warn("admin: runtime status", "deployment", d.ID, "err", err)
		}
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

// ownerLimit is the instance limit of the account owning ufop (0 when it
// cannot be read: no bound beyond the deployment's own).
func (s *Server) ownerLimit(ctx context.Context, ufop string) int {
	u, _, err := s.getUfop(ctx, ufop)
	if err != nil {
		return 0
	}
	a, _, err := store.Get[dora.Account](ctx, s.st, store.AccountKey(u.Owner))
	if err != nil {
		return 0
	}
	return a.Limit()
}

func (s *Server) deploymentEvents(w http.ResponseWriter, r *http.Request, c *call) error {
	_, d, err := s.ownedDeployment(r, c)
	if err != nil {
		return err
	}
	kvs, err := s.st.List(r.Context(), store.ScaleEventsOf(d.ID))
	if err != nil {
		return fmt.Errorf("list events of %s: %w", d.ID, err)
	}
	out := make([]json.RawMessage, 0, len(kvs))
	for _, kv := range kvs {
		if json.Valid(kv.Value) {
			out = append(out, json.RawMessage(kv.Value))
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
