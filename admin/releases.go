package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler"
	"github.com/doraproject/dora/internal/api"
	"github.com/doraproject/dora/internal/store"
)

// ReleaseConfig is dora.yaml as JSON, the body of POST /v1/releases (a
// wire type of internal/api).
type ReleaseConfig = api.ReleaseConfig

// Limits of a release's fields.
const (
	MaxHealthTimeout = 300 // seconds
	MaxEnvVars       = 100
	MaxLogPaths      = 16
	MaxStepTimeout   = time.Hour
)

var (
	// buildImageRE matches a build image name "<ufop>.v<n>".
	buildImageRE = regexp.MustCompile(`^([a-z0-9_-]{1,20})\.v([0-9]{1,9})$`)
)

// policyInForce is the scaling policy the autoscaler applies to d:
// defaults, then the release's autoscale block, then the deployment's,
// with the ceiling bounded by the owner's instance limit (0: none known).
func policyInForce(d dora.Deployment, rel dora.Release, limit int) autoscaler.Policy {
	return autoscaler.PolicyFrom(d, rel).WithLimit(limit)
}

// policyView is p as a dora.AutoscalePolicy with every field filled, for
// the API's "autoscale" answers (the policy in force, not the overrides).
func policyView(p autoscaler.Policy) *dora.AutoscalePolicy {
	return &dora.AutoscalePolicy{
		Target: p.Target, StableWindow: p.StableWindow, PanicWindow: p.PanicWindow,
		PanicThreshold: p.PanicThreshold, MaxScaleUpRate: p.MaxScaleUpRate, MaxScaleDownRate: p.MaxScaleDownRate,
		ScaleUpCooldown: p.ScaleUpCooldown, ScaleDownCooldown: p.ScaleDownCooldown,
		EvaluationInterval: p.EvaluationInterval,
	}
}

// resolvedImage is a release image found to exist.
type resolvedImage struct {
	build   *dora.Build // a successful program-package build
	ociRef  string      // a pullable OCI reference
	ociName string
}

// resolveImage finds a release image of owner: a successful build
// "<ufop>.v<n>" of one of owner's ufops, or a pushed OCI image. 422 when
// neither.
func (s *Server) resolveImage(ctx context.Context, owner, name string) (resolvedImage, error) {
	if b, ok, err := s.ownedBuildImage(ctx, owner, name); err != nil {
		return resolvedImage{}, err
	} else if ok {
		return resolvedImage{build: &b}, nil
	}
	imgs, err := s.ociImages(ctx, owner)
	if err != nil {
		return resolvedImage{}, err
	}
	want := name
	if !strings.Contains(want, ":") && !strings.Contains(want, "@") {
		want += ":latest"
	}
	for _, im := range imgs {
		if im.Name == name || im.Name == want {
			ref := im.Ref
			if ref == "" {
				ref = s.public.Host + "/" + owner + "/" + im.Name
			}
			return resolvedImage{ociRef: ref, ociName: im.Name}, nil
		}
	}
	return resolvedImage{}, errf(http.StatusUnprocessableEntity,
		"image %q: no successful build or pushed image of that name (see GET /v1/images)", name)
}

// ownedBuildImage reports whether name is "<ufop>.v<n>" for a successful
// build of a ufop owned by owner.
func (s *Server) ownedBuildImage(ctx context.Context, owner, name string) (dora.Build, bool, error) {
	m := buildImageRE.FindStringSubmatch(name)
	if m == nil {
		return dora.Build{}, false, nil
	}
	n, err := strconv.Atoi(m[2])
	if err != nil || n < 1 {
		return dora.Build{}, false, nil
	}
	u, _, err := store.Get[dora.Ufop](ctx, s.st, store.UfopKey(m[1]))
	if errors.Is(err, store.ErrNotFound) {
		return dora.Build{}, false, nil
	}
	if err != nil {
		return dora.Build{}, false, err
	}
	if u.Owner != owner {
		return dora.Build{}, false, nil
	}
	b, _, err := store.Get[dora.Build](ctx, s.st, store.BuildKey(m[1], n))
	if errors.Is(err, store.ErrNotFound) {
		return dora.Build{}, false, nil
	}
	if err != nil {
		return dora.Build{}, false, err
	}
	return b, b.Status == dora.BuildSuccess, nil
}

// ociImages lists owner's pushed images: from Config.Images, else from the
// store's images/<owner>/<name:tag> records.
func (s *Server) ociImages(ctx context.Context, owner string) ([]Image, error) {
	if s.cfg.Images != nil {
		imgs, err := s.cfg.Images.ListImages(ctx, owner)
		if err != nil {
			return nil, errf(http.StatusServiceUnavailable, "listing pushed images: %v", err)
		}
		return imgs, nil
	}
	prefix := store.ImagesOf(owner)
	kvs, err := s.st.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	out := make([]Image, 0, len(kvs))
	for _, kv := range kvs {
		var rec struct {
			Digest  string    `json:"digest"`
			Created time.Time `json:"created"`
			Ref     string    `json:"ref"`
		}
		_ = json.Unmarshal(kv.Value, &rec) // a record we cannot read still names an image
		out = append(out, Image{Name: strings.TrimPrefix(kv.Key, prefix), Kind: ImageKindOCI,
			Digest: rec.Digest, Created: rec.Created, Ref: rec.Ref})
	}
	return out, nil
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request, c *call) error {
	ctx := r.Context()
	imgs, err := s.ociImages(ctx, c.acct.ID)
	if err != nil {
		return err
	}
	for i := range imgs {
		imgs[i].Kind = ImageKindOCI
	}
	ufops, _, err := store.List[dora.Ufop](ctx, s.st, store.PrefixUfops)
	if err != nil {
		return err
	}
	for _, u := range ufops {
		if u.Owner != c.acct.ID {
			continue
		}
		builds, _, err := store.List[dora.Build](ctx, s.st, store.BuildsOf(u.Name))
		if err != nil {
			return err
		}
		for _, b := range builds {
			if b.Status == dora.BuildSuccess {
				imgs = append(imgs, Image{Name: b.Image, Kind: ImageKindPackage, Created: b.Finished})
			}
		}
	}
	if imgs == nil {
		imgs = []Image{}
	}
	writeJSON(w, http.StatusOK, imgs)
	return nil
}

func (s *Server) createRelease(w http.ResponseWriter, r *http.Request, c *call) error {
	var rc ReleaseConfig
	if err := c.decode(r, &rc); err != nil {
		return err
	}
	rel, err := checkRelease(rc, s.nowUTC())
	if err != nil {
		return err
	}
	ctx := r.Context()
	for i := 0; i < casRetries; i++ {
		_, uver, err := s.ownedUfop(ctx, c, rel.Ufop)
		if err != nil {
			return err
		}
		if _, ok := s.flavor(rel.Flavor); !ok {
			return errf(http.StatusUnprocessableEntity, "flavor %q: unknown (see GET /v1/flavors)", rel.Flavor)
		}
		if _, err := s.resolveImage(ctx, c.acct.ID, rel.Image); err != nil {
			return err
		}
		// Written only while the ufop is unchanged: a release must not
		// outlive a concurrent DELETE of its ufop, whose name another
		// account may register next.
		key := store.ReleaseKey(rel.Ufop, rel.Version)
		err = s.st.Txn(ctx, []store.Op{
			{Kind: store.OpPut, Key: key, Value: mustJSON(rel), CreateOnly: true},
			ufopCheck(rel.Ufop, uver),
		})
		if errors.Is(err, store.ErrConflict) {
			if _, gerr := s.st.Get(ctx, key); gerr == nil {
				return errf(http.StatusConflict, "release %s %s already exists", rel.Ufop, rel.Version)
			}
			continue // the ufop changed: read it again
		} else if err != nil {
			return fmt.Errorf("create release %s %s: %w", rel.Ufop, rel.Version, err)
		}
		writeJSON(w, http.StatusCreated, rel)
		return nil
	}
	return fmt.Errorf("create release %s %s: %w", rel.Ufop, rel.Version, store.ErrConflict)
}

func (s *Server) listReleases(w http.ResponseWriter, r *http.Request, c *call) error {
	u, _, err := s.ownedUfop(r.Context(), c, r.PathValue("name"))
	if err != nil {
		return err
	}
	rels, _, err := store.List[dora.Release](r.Context(), s.st, store.ReleasesOf(u.Name))
	if err != nil {
		return err
	}
	deps, err := s.deployments(r.Context(), u.Name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"mode": modeName(u.Mode), "releases": rels, "deployments": deps})
	return nil
}
