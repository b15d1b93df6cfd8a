package admin

import (
	"errors"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler"
	"github.com/doraproject/dora/internal/api"
)

// The release rules: what makes a release config (dora.yaml) acceptable,
// as plain functions of the config and now, table-tested alone
// (releaserules_test.go).

var (
	versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$`)
	envKeyRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

// checkRelease is the release a POST /v1/releases body describes, created
// at now, checked on its own (every field's form and bounds, the autoscale
// block merged over the defaults); a refusal is an ErrInvalid RuleError
// (400). What needs the store or the configuration (the ufop's owner, the
// flavor, the image) the handler checks after it.
func checkRelease(rc ReleaseConfig, now time.Time) (dora.Release, error) {
	bad := func(format string, args ...any) (dora.Release, error) {
		return dora.Release{}, refuse(ErrInvalid, format, args...)
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
	if msg := badText(rc.Desc); msg != "" {
		return bad("desc: %s", msg)
	}
	var hc dora.HealthCheck
	if rc.HealthCheck != nil {
		hc = dora.HealthCheck{Path: rc.HealthCheck.Path, Timeout: rc.HealthCheck.Timeout}
	}
	if hc.Path != "" && (!strings.HasPrefix(hc.Path, "/") || len(hc.Path) > 1024 || strings.ContainsAny(hc.Path, " \t\r\n")) {
		return bad("health_check.path %q: must start with / and hold no spaces", hc.Path)
	}
	if hc.Timeout < 0 || hc.Timeout > MaxHealthTimeout {
		return bad("health_check.timeout %d: must be 0 to %d seconds", hc.Timeout, MaxHealthTimeout)
	}
	if len(rc.LogFilePaths) > MaxLogPaths {
		return bad("log_file_paths: at most %d", MaxLogPaths)
	}
	for _, p := range rc.LogFilePaths {
		if p == "" || len(p) > 1024 || strings.IndexByte(p, 0) >= 0 {
			return bad("log_file_paths: %q is not a usable path", p)
		}
	}
	var env []dora.EnvVar
	if rc.Env != nil {
		env = rc.Env.Global
	}
	if len(env) > MaxEnvVars {
		return bad("env.global: at most %d variables", MaxEnvVars)
	}
	for _, e := range env {
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
	var t dora.StepTimeouts
	if rc.Timeouts != nil {
		for _, f := range []struct {
			name string
			in   api.Duration
			out  *time.Duration
		}{{"connect", rc.Timeouts.Connect, &t.Connect}, {"first_byte", rc.Timeouts.FirstByte, &t.FirstByte}, {"idle", rc.Timeouts.Idle, &t.Idle}} {
			d, err := f.in.Value()
			if err != nil {
				return bad("timeouts.%s: %v", f.name, err)
			}
			*f.out = d
		}
	}
	for name, d := range map[string]time.Duration{"connect": t.Connect, "first_byte": t.FirstByte, "idle": t.Idle} {
		if d < 0 || d > MaxStepTimeout {
			return bad("timeouts.%s: must be 0 to %s", name, MaxStepTimeout)
		}
	}
	rel := dora.Release{
		Ufop: rc.UfopName, Version: rc.VerStr, Image: rc.Image, Flavor: rc.Flavor, Desc: rc.Desc,
		HealthCheck: hc, LogFilePaths: rc.LogFilePaths, Env: env, Protocol: proto, Timeouts: t,
		Created: now, BodyLimit: rc.BodyLimit,
	}
	if rc.BodyLimit < -1 || rc.BodyLimit > dora.MaxBodyLimit {
		return bad("body_limit %d: must be -1 (never), 0 (default %d) or up to %d bytes", rc.BodyLimit, dora.DefaultBodyLimit, dora.MaxBodyLimit)
	}
	if c := rc.Cache; c != nil {
		ttl, err := c.TTL.Value()
		if err != nil {
			return bad("cache.ttl: %v", err)
		}
		if ttl < 0 || ttl > dora.MaxCacheTTL {
			return bad("cache.ttl: must be 0 to %s", dora.MaxCacheTTL)
		}
		rel.Cache = &dora.CachePolicy{Enabled: c.Enabled, TTL: ttl}
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
