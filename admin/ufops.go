package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/api"
	"github.com/doraproject/dora/internal/store"
)

// UfopInfo is a ufop as `qufopctl info` shows it (a wire type of internal/api).
type UfopInfo = api.UfopInfo

// parseModeJSON accepts a mode as a number (0, 1, 2) or a string
// ("public", "protected", "private", "0"...); absent means private.
func parseModeJSON(raw json.RawMessage) (dora.Mode, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return dora.ModePrivate, nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err == nil {
		if n < 0 || n > 2 {
			return 0, dora.ErrBadMode
		}
		return dora.Mode(n), nil
	}
	var str string
	if err := json.Unmarshal(raw, &str); err != nil {
		return 0, dora.ErrBadMode
	}
	return dora.ParseMode(str)
}

func (s *Server) createUfop(w http.ResponseWriter, r *http.Request, c *call) error {
	var req struct {
		Name string          `json:"name"`
		Desc string          `json:"desc"`
		Mode json.RawMessage `json:"mode"`
	}
	if err := c.decode(r, &req); err != nil {
		return err
	}
	if err := dora.ValidateUfopName(req.Name); err != nil {
		return errf(http.StatusBadRequest, "name: %v", err)
	}
	mode, err := parseModeJSON(req.Mode)
	if err != nil {
		return errf(http.StatusBadRequest, "mode: %v", err)
	}
	if len(req.Desc) > 1024 {
		return errf(http.StatusBadRequest, "desc: at most 1024 bytes")
	}
	if msg := badText(req.Desc); msg != "" {
		return errf(http.StatusBadRequest, "desc: %s", msg)
	}
	if mode == dora.ModePublic && !c.acct.Root {
		return errf(http.StatusForbidden, "mode: only the root account may create public ufops; use protected or private")
	}
	u := dora.Ufop{Name: req.Name, Owner: c.acct.ID, Desc: req.Desc, Mode: mode, Created: s.nowUTC()}
	if _, err := s.st.CAS(r.Context(), store.UfopKey(u.Name), mustJSON(u), 0); errors.Is(err, store.ErrConflict) {
		return errf(http.StatusConflict, "ufop %q is already registered", u.Name)
	} else if err != nil {
		return fmt.Errorf("register ufop %s: %w", u.Name, err)
	}
	writeJSON(w, http.StatusCreated, u)
	return nil
}

// setUfopMode changes a ufop's mode (POST /v1/ufops/{name}/mode, body
// {"mode": "public"|"protected"|"private"|0|1|2}): the owner only, public
// for the root account only, as at register. The router's metadata cache
// sees the change through its watch.
func (s *Server) setUfopMode(w http.ResponseWriter, r *http.Request, c *call) error {
	var req struct {
		Mode json.RawMessage `json:"mode"`
	}
	if err := c.decode(r, &req); err != nil {
		return err
	}
	if len(req.Mode) == 0 || string(req.Mode) == "null" {
		return errf(http.StatusBadRequest, "mode: required (public, protected, private or 0, 1, 2)")
	}
	mode, err := parseModeJSON(req.Mode)
	if err != nil {
		return errf(http.StatusBadRequest, "mode: %v", err)
	}
	if mode == dora.ModePublic && !c.acct.Root {
		return errf(http.StatusForbidden, "mode: only the root account may make a ufop public; use protected or private")
	}
	if _, _, err := s.ownedUfop(r.Context(), c, r.PathValue("name")); err != nil {
		return err
	}
	u, err := s.updateUfop(r.Context(), r.PathValue("name"), func(u *dora.Ufop) error {
		if u.Owner != c.acct.ID {
			return errf(http.StatusForbidden, "ufop %q belongs to another account", u.Name)
		}
		u.Mode = mode
		return nil
	})
	if err != nil {
		return err
	}
	// Leaving protected revokes the applications: made protected again,
	// the ufop is open to none of those who applied before until they
	// apply again. Done on every change to another mode, so a call that
	// failed here is finished by the next.
	if mode != dora.ModeProtected {
		if err := s.forgetApplications(r.Context(), u.Name); err != nil {
			return fmt.Errorf("set mode of ufop %s: %w", u.Name, err)
		}
	}
	info, err := s.ufopInfo(r.Context(), u, c.acct)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

// forgetApplications removes ufop name from every account's applications.
func (s *Server) forgetApplications(ctx context.Context, name string) error {
	accts, _, err := store.List[dora.Account](ctx, s.st, store.PrefixAccounts)
	if err != nil {
		return fmt.Errorf("list accounts: %w", err)
	}
	for _, a := range accts {
		if !a.HasApplied(name) {
			continue
		}
		if _, err := s.updateAccount(ctx, a.ID, func(a *dora.Account) error {
			a.Applied = removeName(a.Applied, name)
			return nil
		}); err != nil {
			return fmt.Errorf("forget application of %s: %w", a.ID, err)
		}
	}
	return nil
}

// getUfop reads ufops/<name>: 404 when missing (or the name is invalid).
func (s *Server) getUfop(ctx context.Context, name string) (dora.Ufop, uint64, error) {
	if dora.ValidateUfopName(name) != nil {
		return dora.Ufop{}, 0, errf(http.StatusNotFound, "ufop %q not found", name)
	}
	u, ver, err := store.Get[dora.Ufop](ctx, s.st, store.UfopKey(name))
	if errors.Is(err, store.ErrNotFound) {
		return u, 0, errf(http.StatusNotFound, "ufop %q not found", name)
	}
	return u, ver, err
}

// ownedDeployments is ownedUfop (the ufop and its record version) with
// the ufop's deployments, oldest first.
func (s *Server) ownedDeployments(ctx context.Context, c *call, name string) (dora.Ufop, uint64, []dora.Deployment, error) {
	u, ver, err := s.ownedUfop(ctx, c, name)
	if err != nil {
		return u, 0, nil, err
	}
	deps, err := s.deployments(ctx, u.Name)
	if err != nil {
		return u, 0, nil, err
	}
	return u, ver, deps, nil
}

// ownedUfop returns the caller's ufop: 404 when missing, 403 when another
// account owns it.
func (s *Server) ownedUfop(ctx context.Context, c *call, name string) (dora.Ufop, uint64, error) {
	u, ver, err := s.getUfop(ctx, name)
	if err != nil {
		return u, 0, err
	}
	if u.Owner != c.acct.ID {
		return u, 0, errf(http.StatusForbidden, "ufop %q belongs to another account", name)
	}
	return u, ver, nil
}

// updateUfop applies fn to ufops/<name> with CAS retries.
func (s *Server) updateUfop(ctx context.Context, name string, fn func(*dora.Ufop) error) (dora.Ufop, error) {
	for i := 0; i < casRetries; i++ {
		u, ver, err := s.getUfop(ctx, name)
		if err != nil {
			return u, err
		}
		if err := fn(&u); err != nil {
			return u, err
		}
		if _, err := s.st.CAS(ctx, store.UfopKey(name), mustJSON(u), ver); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return u, fmt.Errorf("update ufop %s: %w", name, err)
		}
		return u, nil
	}
	return dora.Ufop{}, fmt.Errorf("update ufop %s: %w", name, store.ErrConflict)
}

// ufopInfo assembles UfopInfo; viewer decides whether the access list is
// shown in full.
func (s *Server) ufopInfo(ctx context.Context, u dora.Ufop, viewer dora.Account) (UfopInfo, error) {
	info := UfopInfo{Ufop: u, Flavor: "default", AccessList: []string{u.Owner}, MaxInstanceNum: dora.DefaultInstanceLimit}
	owner, _, err := store.Get[dora.Account](ctx, s.st, store.AccountKey(u.Owner))
	if err == nil {
		info.MaxInstanceNum = owner.Limit()
	}
	if u.ActiveVersion != "" {
		rel, _, err := store.Get[dora.Release](ctx, s.st, store.ReleaseKey(u.Name, u.ActiveVersion))
		if err == nil {
			info.Flavor = rel.Flavor
		}
		deps, err := s.deployments(ctx, u.Name)
		if err != nil {
			return info, err
		}
		// Autoscale: the policy in force of the active version's (last
		// created) live deployment; the release's merged over the
		// defaults when none runs.
		inForce := policyInForce(dora.Deployment{Max: dora.DefaultMaxInstances}, rel, info.MaxInstanceNum)
		for _, d := range deps {
			if d.Version == u.ActiveVersion && liveDeployment(d) {
				info.InstanceNum += d.Desired
				inForce = policyInForce(d, rel, info.MaxInstanceNum)
			}
		}
		info.Autoscale = policyView(inForce)
	}
	if viewer.ID == u.Owner && u.Mode == dora.ModeProtected {
		accts, _, err := store.List[dora.Account](ctx, s.st, store.PrefixAccounts)
		if err != nil {
			return info, err
		}
		for _, a := range accts {
			if a.ID != u.Owner && a.HasApplied(u.Name) {
				info.AccessList = append(info.AccessList, a.ID)
			}
		}
	}
	return info, nil
}

func (s *Server) listUfops(w http.ResponseWriter, r *http.Request, c *call) error {
	all, _, err := store.List[dora.Ufop](r.Context(), s.st, store.PrefixUfops)
	if err != nil {
		return err
	}
	out := []UfopInfo{}
	for _, u := range all {
		if !u.CanBeUsedBy(c.acct) {
			continue
		}
		info, err := s.ufopInfo(r.Context(), u, c.acct)
		if err != nil {
			return err
		}
		out = append(out, info)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getUfopInfo(w http.ResponseWriter, r *http.Request, c *call) error {
	u, _, err := s.getUfop(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	if !u.CanBeUsedBy(c.acct) {
		return errf(http.StatusForbidden, "ufop %q is not available to this account", u.Name)
	}
	info, err := s.ufopInfo(r.Context(), u, c.acct)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (s *Server) deleteUfop(w http.ResponseWriter, r *http.Request, c *call) error {
	ctx := r.Context()
	u, ver, deps, err := s.ownedDeployments(ctx, c, r.PathValue("name"))
	if err != nil {
		return err
	}
	// Stop the instances first: if the runtime fails, nothing is deleted
	// and the call can be retried.
	for _, d := range deps {
		if err := s.rt.Remove(ctx, d.ID); err != nil && !errors.Is(err, runtime.ErrNotFound) {
			return errf(http.StatusServiceUnavailable, "stopping deployment %s: %v", d.ID, err)
		}
	}
	// The children go first, in batches a Consul transaction takes (scale
	// events before the deployments that name them), then the accounts'
	// applications, then the ufop record: a DELETE interrupted anywhere
	// leaves the ufop in place, and a retry finishes the job.
	if err := s.deleteChildren(ctx, u.Name, deps); err != nil {
		return fmt.Errorf("delete ufop %s: %w", u.Name, err)
	}
	// Forget the applications too, so that a later ufop of the same name
	// does not inherit them.
	if err := s.forgetApplications(ctx, u.Name); err != nil {
		return fmt.Errorf("delete ufop %s: %w", u.Name, err)
	}
	if err := s.st.Txn(ctx, []store.Op{{Kind: store.OpDelete, Key: store.UfopKey(u.Name), Version: ver}}); errors.Is(err, store.ErrConflict) {
		return errf(http.StatusConflict, "ufop %q changed while being deleted; retry", u.Name)
	} else if err != nil {
		return fmt.Errorf("delete ufop %s: %w", u.Name, err)
	}
	// Its builds running here stop (those on other admins at their next
	// heartbeat): a build of the next ufop of this name, perhaps another
	// account's, would otherwise share their numbers.
	s.cancelBuilds(u.Name)
	// Records a concurrent call added meanwhile (a build, a scale event,
	// a deployment) would otherwise outlive the ufop; best effort.
	if late, err := s.deployments(ctx, u.Name); err == nil {
		if err := s.deleteChildren(ctx, u.Name, late); err != nil {
			s.log.Warn("admin: delete ufop: late records", "ufop", u.Name, "err", err)
		}
		deps = append(deps, late...)
	}
	// Stop every deployment again now that no record names them: the
	// leader's Reconcile applies again a deployment the runtime lost, so
	// it may have restarted one stopped above before its record went, and
	// a deploy may have added one; nothing would ever stop those. Best
	// effort: the ufop is gone either way.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), applyTimeout)
	for _, d := range deps {
		if _, err := s.rt.Status(rctx, d.ID); errors.Is(err, runtime.ErrNotFound) {
			continue
		}
		if err := s.rt.Remove(rctx, d.ID); err != nil && !errors.Is(err, runtime.ErrNotFound) {
			s.log.Warn("admin: delete ufop: stop deployment", "ufop", u.Name, "deployment", d.ID, "err", err)
		}
	}
	cancel()
	// The build directories go last, with no record left to name them;
	// best effort: the ufop is gone either way.
	if s.cfg.Builder != nil {
		if err := s.cfg.Builder.Remove(u.Name); err != nil {
			s.log.Warn("admin: delete ufop: build directories", "ufop", u.Name, "err", err)
		}
	}
	if err := s.removeSharedArtifacts(ctx, u.Name); err != nil {
		s.log.Warn("admin: delete ufop: shared build results", "ufop", u.Name, "err", err)
	}
	s.retryMu.Lock()
	for _, d := range deps {
		delete(s.retry, d.ID)
	}
	s.retryMu.Unlock()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// applyUfop adds a protected ufop to the caller's applications, written
// only while the ufop record is unchanged: an application must not
// survive a concurrent change of mode (which revokes the applications)
// or DELETE of the ufop.
func (s *Server) applyUfop(w http.ResponseWriter, r *http.Request, c *call) error {
	ctx := r.Context()
	for i := 0; i < casRetries; i++ {
		u, uver, err := s.getUfop(ctx, r.PathValue("name"))
		if err != nil {
			return err
		}
		if u.Mode != dora.ModeProtected {
			return errf(http.StatusBadRequest, "ufop %q is %s; only protected ufops are applied for", u.Name, u.Mode)
		}
		acct, aver, err := store.Get[dora.Account](ctx, s.st, store.AccountKey(c.acct.ID))
		if errors.Is(err, store.ErrNotFound) {
			return errf(http.StatusNotFound, "account %q not found", c.acct.ID)
		} else if err != nil {
			return fmt.Errorf("apply for ufop %s: read account %s: %w", u.Name, c.acct.ID, err)
		}
		if !acct.HasApplied(u.Name) {
			acct.Applied = append(acct.Applied, u.Name)
			sort.Strings(acct.Applied)
			err = s.st.Txn(ctx, []store.Op{
				{Kind: store.OpPut, Key: store.AccountKey(acct.ID), Value: mustJSON(acct), Version: aver},
				ufopCheck(u.Name, uver),
			})
			if errors.Is(err, store.ErrConflict) {
				continue
			} else if err != nil {
				return fmt.Errorf("apply for ufop %s: update account %s: %w", u.Name, acct.ID, err)
			}
		}
		writeJSON(w, http.StatusOK, publicAccount(acct))
		return nil
	}
	return fmt.Errorf("apply for ufop %s: %w", r.PathValue("name"), store.ErrConflict)
}

func (s *Server) unapplyUfop(w http.ResponseWriter, r *http.Request, c *call) error {
	name := r.PathValue("name")
	acct, err := s.updateAccount(r.Context(), c.acct.ID, func(a *dora.Account) error {
		a.Applied = removeName(a.Applied, name)
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, publicAccount(acct))
	return nil
}

// maxTxnOps is the most operations admin puts in one store transaction:
// Consul's cap (internal/store/consulkv.MaxTxnOps), the smallest of the
// backends'.
const maxTxnOps = 64

// deleteChildren deletes the records of ufop name: the scale events of
// deps, then its builds, releases and deployments, in transactions of at
// most maxTxnOps unconditional deletes (so it can be repeated).
func (s *Server) deleteChildren(ctx context.Context, name string, deps []dora.Deployment) error {
	var prefixes []string
	for _, d := range deps {
		prefixes = append(prefixes, store.ScaleEventsOf(d.ID))
	}
	prefixes = append(prefixes,
		store.BuildsOf(name),
		store.ReleasesOf(name),
		store.DeploymentsOf(name),
	)
	for _, prefix := range prefixes {
		kvs, err := s.st.List(ctx, prefix)
		if err != nil {
			return fmt.Errorf("list %s: %w", prefix, err)
		}
		for len(kvs) > 0 {
			n := min(len(kvs), maxTxnOps)
			ops := make([]store.Op, n)
			for i, kv := range kvs[:n] {
				ops[i] = store.Op{Kind: store.OpDelete, Key: kv.Key}
			}
			if err := s.st.Txn(ctx, ops); err != nil {
				return fmt.Errorf("delete under %s: %w", prefix, err)
			}
			kvs = kvs[n:]
		}
	}
	return nil
}

// removeName returns names without name (a new slice).
func removeName(names []string, name string) []string {
	kept := names[:0:0]
	for _, n := range names {
		if n != name {
			kept = append(kept, n)
		}
	}
	return kept
}

// liveDeployment reports whether a deployment is still the current one of
// its version and region (anything but REPLACED; a STOPPED one can be
// started again).
func liveDeployment(d dora.Deployment) bool {
	return d.Status != dora.DeployReplaced
}

// modeName is how GET releases spells a mode.
func modeName(m dora.Mode) string { return strings.ToLower(m.String()) }
