package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler"
	"github.com/doraproject/dora/internal/store"
)

// Duration is a time.Duration in JSON as a Go duration string ("30s") or
// a number of seconds.
type Duration time.Duration

// UnmarshalJSON accepts "1m30s" or 90.
func (d *Duration) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s == "" {
			*d = 0
			return nil
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("duration: want a string like \"30s\" or seconds: %w", err)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// MarshalJSON writes the duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// ReleaseConfig is dora.yaml as JSON, the body of POST /v1/releases.
type ReleaseConfig struct {
	UfopName    string           `json:"ufopname"`
	VerStr      string           `json:"verstr"`
	Image       string           `json:"image"`
	Desc        string           `json:"desc"`
	Flavor      string           `json:"flavor"`
	HealthCheck dora.HealthCheck `json:"health_check"`
	LogFilePath []string         `json:"log_file_paths"`
	Env         struct {
		Global []dora.EnvVar `json:"global"`
	} `json:"env"`
	Protocol string `json:"protocol"`
	Timeouts struct {
		Connect   Duration `json:"connect"`
		FirstByte Duration `json:"first_byte"`
		Idle      Duration `json:"idle"`
	} `json:"timeouts"`
	// Autoscale is a dora.AutoscalePolicy (camelCase keys, durations in
	// nanoseconds as encoding/json writes time.Duration).
	Autoscale *dora.AutoscalePolicy `json:"autoscale"`
	// BodyLimit is dora.Release.BodyLimit in bytes (0 default, -1 never).
	BodyLimit int64 `json:"body_limit"`
	// Cache is dora.yaml's cache: {enabled, ttl}.
	Cache *struct {
		Enabled bool     `json:"enabled"`
		TTL     Duration `json:"ttl"`
	} `json:"cache"`
}

// Limits of a release's fields.
const (
	MaxHealthTimeout = 300 // seconds
	MaxEnvVars       = 100
	MaxLogPaths      = 16
	MaxStepTimeout   = time.Hour
)

var (
	versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)
	envKeyRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	// buildImageRE matches a build image name "<ufop>.v<n>".
	buildImageRE = regexp.MustCompile(`^([a-z0-9_-]{1,20})\.v([0-9]{1,9})$`)
)

// validateRelease checks what needs no store: 400 errors.
func (s *Server) validateRelease(rc ReleaseConfig) (dora.Release, error) {
	bad := func(format string, args ...any) (dora.Release, error) {
		return dora.Release{}, errf(http.StatusBadRequest, format, args...)
	}
	if rc.UfopName == "" {
		return bad("ufopname: required")
	}
	if !versionRE.MatchString(rc.VerStr) {
		return bad("verstr %q: 1 to 32 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit", rc.VerStr)
	}
	if rc.Image == "" || len(rc.Image) > 256 {
		return bad("image: required, at most 256 bytes")
	}
	if rc.Flavor == "" {
		return bad("flavor: required (see GET /v1/flavors)")
	}
	if len(rc.Desc) > 1024 {
		return bad("desc: at most 1024 bytes")
	}
	hc := rc.HealthCheck
	if hc.Path != "" && (!strings.HasPrefix(hc.Path, "/") || len(hc.Path) > 1024 || strings.ContainsAny(hc.Path, " \t\r\n")) {
		return bad("health_check.path %q: must start with / and hold no spaces", hc.Path)
	}
	if hc.Timeout < 0 || hc.Timeout > MaxHealthTimeout {
		return bad("health_check.timeout %d: must be 0 to %d seconds", hc.Timeout, MaxHealthTimeout)
	}
	if len(rc.LogFilePath) > MaxLogPaths {
		return bad("log_file_paths: at most %d", MaxLogPaths)
	}
	for _, p := range rc.LogFilePath {
		if p == "" || len(p) > 1024 || strings.IndexByte(p, 0) >= 0 {
			return bad("log_file_paths: %q is not a usable path", p)
		}
	}
	if len(rc.Env.Global) > MaxEnvVars {
		return bad("env.global: at most %d variables", MaxEnvVars)
	}
	for _, e := range rc.Env.Global {
		if !envKeyRE.MatchString(e.Key) {
			return bad("env.global: bad variable name %q", e.Key)
		}
		if len(e.Value) > 4096 || strings.IndexByte(e.Value, 0) >= 0 {
			return bad("env.global: value of %s too long or holds NUL", e.Key)
		}
	}
	proto := dora.Protocol(strings.ToLower(rc.Protocol))
	switch proto {
	case "":
		proto = dora.ProtocolDora
	case dora.ProtocolDora, dora.ProtocolUfop:
	default:
		return bad("protocol %q: must be dora or ufop", rc.Protocol)
	}
	t := dora.StepTimeouts{
		Connect:   time.Duration(rc.Timeouts.Connect),
		FirstByte: time.Duration(rc.Timeouts.FirstByte),
		Idle:      time.Duration(rc.Timeouts.Idle),
	}
	for name, d := range map[string]time.Duration{"connect": t.Connect, "first_byte": t.FirstByte, "idle": t.Idle} {
		if d < 0 || d > MaxStepTimeout {
			return bad("timeouts.%s: must be 0 to %s", name, MaxStepTimeout)
		}
	}
	rel := dora.Release{
		Ufop: rc.UfopName, Version: rc.VerStr, Image: rc.Image, Flavor: rc.Flavor, Desc: rc.Desc,
		HealthCheck: hc, LogFilePaths: rc.LogFilePath, Env: rc.Env.Global, Protocol: proto, Timeouts: t,
		Created: s.nowUTC(), BodyLimit: rc.BodyLimit,
	}
	if rc.BodyLimit < -1 || rc.BodyLimit > dora.MaxBodyLimit {
		return bad("body_limit %d: must be -1 (never), 0 (default %d) or up to %d bytes", rc.BodyLimit, dora.DefaultBodyLimit, dora.MaxBodyLimit)
	}
	if c := rc.Cache; c != nil {
		if c.TTL < 0 || time.Duration(c.TTL) > dora.MaxCacheTTL {
			return bad("cache.ttl: must be 0 to %s", dora.MaxCacheTTL)
		}
		rel.Cache = &dora.CachePolicy{Enabled: c.Enabled, TTL: time.Duration(c.TTL)}
	}
	if rc.Autoscale != nil {
		p := *rc.Autoscale
		if err := validatePolicy(p); err != nil {
			return bad("autoscale: %v", err)
		}
		// The block merged over the defaults must make a valid policy
		// (floor and ceiling come with each deployment).
		probe := dora.Release{Autoscale: &p}
		if err := autoscaler.PolicyFrom(dora.Deployment{Expect: 0, Max: dora.DefaultMaxInstances}, probe).Validate(); err != nil {
			return bad("autoscale: %s", policyProblems(err))
		}
		rel.Autoscale = &p
	}
	return rel, nil
}

// validatePolicy rejects negative or absurd values; zero fields take the
// autoscaler's defaults.
func validatePolicy(p dora.AutoscalePolicy) error {
	var problems []string
	for name, v := range map[string]float64{"target": p.Target, "panic_threshold": p.PanicThreshold,
		"max_scale_up_rate": p.MaxScaleUpRate, "max_scale_down_rate": p.MaxScaleDownRate} {
		if v < 0 || v > 1e6 {
			problems = append(problems, name+" must be 0 to 1e6")
		}
	}
	for name, d := range map[string]time.Duration{"stable_window": p.StableWindow, "panic_window": p.PanicWindow,
		"scale_up_cooldown": p.ScaleUpCooldown, "scale_down_cooldown": p.ScaleDownCooldown,
		"evaluation_interval": p.EvaluationInterval} {
		if d < 0 || d > 24*time.Hour {
			problems = append(problems, name+" must be 0 to 24h")
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// policyProblems renders every problem autoscaler.Policy.Validate found
// on one line, "; "-separated.
func policyProblems(err error) string {
	var msgs []string
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			msgs = append(msgs, strings.TrimPrefix(e.Error(), autoscaler.ErrInvalidPolicy.Error()+": "))
		}
	} else {
		msgs = append(msgs, err.Error())
	}
	return strings.Join(msgs, "; ")
}

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
	rel, err := s.validateRelease(rc)
	if err != nil {
		return err
	}
	ctx := r.Context()
	if _, _, err := s.ownedUfop(ctx, c, rel.Ufop); err != nil {
		return err
	}
	if _, ok := s.flavor(rel.Flavor); !ok {
		return errf(http.StatusUnprocessableEntity, "flavor %q: unknown (see GET /v1/flavors)", rel.Flavor)
	}
	if _, err := s.resolveImage(ctx, c.acct.ID, rel.Image); err != nil {
		return err
	}
	if _, err := s.st.CAS(ctx, store.ReleaseKey(rel.Ufop, rel.Version), mustJSON(rel), 0); errors.Is(err, store.ErrConflict) {
		return errf(http.StatusConflict, "release %s %s already exists", rel.Ufop, rel.Version)
	} else if err != nil {
		return fmt.Errorf("create release %s %s: %w", rel.Ufop, rel.Version, err)
	}
	writeJSON(w, http.StatusCreated, rel)
	return nil
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
