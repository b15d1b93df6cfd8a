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
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/store"
)

// DeploymentInfo is a deployment with its instances as the runtime reports
// them (GET /v1/ufops/{name}/deployments/{id}).
type DeploymentInfo struct {
	dora.Deployment
	Instances []runtime.InstanceStatus `json:"instances"`
}

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

// findLive returns the index of the live deployment of version in region,
// or -1.
func findLive(deps []dora.Deployment, version, region string) int {
	for i, d := range deps {
		if d.Version == version && d.Region == region && liveDeployment(d) {
			return i
		}
	}
	return -1
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

// activate makes version the active one of ufop, blue/green: the old
// active version becomes PreviousVersion while it has serving deployments,
// and every region it serves in gets a deployment of the new version with
// the same floor and ceiling unless one exists. A switch begun while
// another is in progress replaces the older previous version at once.
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
		now := s.nowUTC()
		old := u.ActiveVersion
		var ops []store.Op
		var toApply, toRemove []dora.Deployment
		serving := 0
		for _, od := range deps {
			if od.Version != old || old == "" || !liveDeployment(od) || od.Status == dora.DeployFailed {
				continue
			}
			serving++
			if findLive(deps, version, od.Region) >= 0 {
				continue
			}
			nd := dora.Deployment{
				ID: "deploy-" + uuid.NewString(), Ufop: name, Version: version, Region: od.Region,
				Expect: od.Expect, Max: od.Max, Desired: od.Desired, Autoscale: od.Autoscale,
				Status: dora.DeployPending, Created: now, Updated: now,
			}
			deps = append(deps, nd)
			vers = append(vers, 0)
			ops = append(ops, store.Op{Kind: store.OpPut, Key: store.DeploymentKey(name, nd.ID), Value: mustJSON(nd), CreateOnly: true})
			toApply = append(toApply, nd)
		}
		if prev := u.PreviousVersion; prev != "" && prev != version && prev != old {
			for j, pd := range deps {
				if pd.Version == prev && liveDeployment(pd) && vers[j] > 0 {
					pd.Status, pd.Message, pd.Updated = dora.DeployReplaced, "replaced by "+version, now
					ops = append(ops, store.Op{Kind: store.OpPut, Key: store.DeploymentKey(name, pd.ID), Value: mustJSON(pd), Version: vers[j]})
					toRemove = append(toRemove, pd)
				}
			}
		}
		u.ActiveVersion, u.PreviousVersion = version, ""
		if serving > 0 {
			u.PreviousVersion = old
		}
		ops = append(ops, store.Op{Kind: store.OpPut, Key: store.UfopKey(name), Value: mustJSON(u), Version: uver})
		if err := s.st.Txn(ctx, ops); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return u, fmt.Errorf("activate %s %s: %w", name, version, err)
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), applyTimeout)
		for _, d := range toRemove {
			if err := s.rt.Remove(rctx, d.ID); err != nil && !errors.Is(err, runtime.ErrNotFound) {
				s.log.Warn("admin: remove replaced deployment", "deployment", d.ID, "err", err)
			}
		}
		cancel()
		for _, d := range toApply {
			s.applyDeployment(ctx, u, d)
		}
		return u, nil
	}
	return dora.Ufop{}, fmt.Errorf("activate %s %s: %w", name, version, store.ErrConflict)
}

// regionParam returns the region asked for, or the default one; 422 when
// unknown.
func (s *Server) regionParam(region string) (string, error) {
	if region == "" {
		return s.defaultRegion(), nil
	}
	if !s.hasRegion(region) {
		return "", errf(http.StatusUnprocessableEntity, "region %q: unknown (see GET /v1/regions)", region)
	}
	return region, nil
}

func clamp(v, lo, hi int) int {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

func overLimit(limit int) error {
	return errf(http.StatusForbidden, "over the account's limit of %d instances per ufop", limit)
}

// runningOf is what a deployment counts against its owner's per-ufop
// instance limit: the instances it is asked to run now (Desired), nothing
// when it cannot run (FAILED, STOPPED) or was replaced.
func runningOf(d dora.Deployment) int {
	switch d.Status {
	case dora.DeployFailed, dora.DeployStopped, dora.DeployReplaced:
		return 0
	}
	return max(d.Desired, 0)
}

// otherRunning sums what the ufop's deployments (every version and region)
// but deps[skip] run: the account's limit is per ufop and counts the
// instances that can actually run. Ceilings are not reserved: the
// autoscaler grows a deployment only into what the others leave
// (autoscaler.ShareOfLimit), so "deploy v2 beside v1, then switch" fits
// the default limit and a dead version never blocks.
func otherRunning(deps []dora.Deployment, skip int) int {
	total := 0
	for i, d := range deps {
		if i != skip {
			total += runningOf(d)
		}
	}
	return total
}

// checkUfopLimit refuses a floor (the instances a deployment must run)
// that would take the ufop's running total over limit (403 naming the
// current total).
func checkUfopLimit(limit, others, floor int) error {
	if others+floor <= limit {
		return nil
	}
	return errf(http.StatusForbidden,
		"over the account's limit of %d instances per ufop: its other deployments run %d (every version and region; failed and stopped ones do not count), this one asks for %d; resize or stop another first",
		limit, others, floor)
}

// defaultCeiling is a deployment's ceiling when the caller names none.
func defaultCeiling(limit, floor int) int {
	return max(min(dora.DefaultMaxInstances, limit), floor)
}

func (s *Server) deploy(w http.ResponseWriter, r *http.Request, c *call) error {
	var req struct {
		Version  string  `json:"version"`
		Region   string  `json:"region"`
		Expect   int     `json:"expect"`
		Max      int     `json:"max"`
		Target   float64 `json:"target"`
		Activate bool    `json:"activate"`
	}
	if err := c.decode(r, &req); err != nil {
		return err
	}
	if req.Version == "" {
		return errf(http.StatusBadRequest, "version: required")
	}
	if req.Expect < 0 || req.Max < 0 {
		return errf(http.StatusBadRequest, "expect and max: must not be negative")
	}
	if req.Target < 0 || req.Target > 1e6 {
		return errf(http.StatusBadRequest, "target: must be 0 to 1e6 in-flight requests per instance")
	}
	if req.Max > 0 && req.Expect > req.Max {
		return errf(http.StatusBadRequest, "expect (%d) must not exceed max (%d)", req.Expect, req.Max)
	}
	region, err := s.regionParam(req.Region)
	if err != nil {
		return err
	}
	ctx := r.Context()
	limit := c.acct.Limit()
	if req.Expect > limit || req.Max > limit {
		return overLimit(limit)
	}
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
		j := findLive(deps, req.Version, region)
		others := otherRunning(deps, j)
		maxN := req.Max
		if maxN == 0 {
			maxN = defaultCeiling(limit, req.Expect)
		}
		if err := checkUfopLimit(limit, others, req.Expect); err != nil {
			return err
		}
		now := s.nowUTC()
		var d dora.Deployment
		var op store.Op
		if j >= 0 {
			d = deps[j]
			d.Expect, d.Max = req.Expect, maxN
			d.Desired = clamp(d.Desired, d.Expect, d.Max)
			d.Updated = now
			op = store.Op{Kind: store.OpPut, Key: store.DeploymentKey(u.Name, d.ID), Version: vers[j]}
		} else {
			d = dora.Deployment{
				ID: "deploy-" + uuid.NewString(), Ufop: u.Name, Version: req.Version, Region: region,
				Expect: req.Expect, Max: maxN, Desired: req.Expect, Status: dora.DeployPending,
				Created: now, Updated: now,
			}
			if rel.Autoscale != nil {
				p := *rel.Autoscale
				d.Autoscale = &p
			}
			op = store.Op{Kind: store.OpPut, Key: store.DeploymentKey(u.Name, d.ID), CreateOnly: true}
		}
		if req.Target > 0 {
			p := dora.AutoscalePolicy{}
			if d.Autoscale != nil {
				p = *d.Autoscale
			}
			p.Target = req.Target
			d.Autoscale = &p
		}
		if err := policyInForce(d, rel, limit).Validate(); err != nil {
			return errf(http.StatusBadRequest, "autoscale policy of %s %s: %s", u.Name, req.Version, policyProblems(err))
		}
		op.Value = mustJSON(d)
		ops := []store.Op{op}
		first := u.ActiveVersion == ""
		if first {
			u.ActiveVersion = req.Version
			ops = append(ops, store.Op{Kind: store.OpPut, Key: store.UfopKey(u.Name), Value: mustJSON(u), Version: uver})
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
	if num > limit {
		return overLimit(limit)
	}
	ctx := r.Context()
	for i := 0; i < casRetries; i++ {
		u, _, err := s.ownedUfop(ctx, c, r.PathValue("name"))
		if err != nil {
			return err
		}
		if u.ActiveVersion == "" {
			return errf(http.StatusConflict, "ufop %s has no active version yet: switch to a build (POST /version) or deploy a release", u.Name)
		}
		deps, vers, err := s.deploymentsKV(ctx, u.Name)
		if err != nil {
			return err
		}
		now := s.nowUTC()
		var d dora.Deployment
		var op store.Op
		j := findLive(deps, u.ActiveVersion, region)
		others := otherRunning(deps, j)
		if err := checkUfopLimit(limit, others, num); err != nil {
			return err
		}
		if j >= 0 {
			d = deps[j]
			d.Expect, d.Desired, d.Max = num, num, max(d.Max, num)
			d.Updated = now
			op = store.Op{Kind: store.OpPut, Key: store.DeploymentKey(u.Name, d.ID), Version: vers[j]}
		} else {
			rel, _, err := store.Get[dora.Release](ctx, s.st, store.ReleaseKey(u.Name, u.ActiveVersion))
			if err != nil {
				return fmt.Errorf("resize %s: active release: %w", u.Name, err)
			}
			if err := s.checkRunnable(ctx, u.Owner, rel.Image); err != nil {
				return err
			}
			d = dora.Deployment{
				ID: "deploy-" + uuid.NewString(), Ufop: u.Name, Version: u.ActiveVersion, Region: region,
				Expect: num, Max: defaultCeiling(limit, num), Desired: num,
				Autoscale: rel.Autoscale, Status: dora.DeployPending, Created: now, Updated: now,
			}
			op = store.Op{Kind: store.OpPut, Key: store.DeploymentKey(u.Name, d.ID), CreateOnly: true}
		}
		op.Value = mustJSON(d)
		if err := s.st.Txn(ctx, []store.Op{op}); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return fmt.Errorf("resize %s: %w", u.Name, err)
		}
		d = s.applyDeployment(ctx, u, d)
		writeJSON(w, http.StatusOK, d)
		return nil
	}
	return fmt.Errorf("resize: %w", store.ErrConflict)
}

func (s *Server) listDeployments(w http.ResponseWriter, r *http.Request, c *call) error {
	u, _, err := s.ownedUfop(r.Context(), c, r.PathValue("name"))
	if err != nil {
		return err
	}
	deps, err := s.deployments(r.Context(), u.Name)
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
