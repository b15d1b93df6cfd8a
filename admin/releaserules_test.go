package admin

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/api"
)

func TestCheckRelease(t *testing.T) {
	base := func(change func(*ReleaseConfig)) ReleaseConfig {
		rc := ReleaseConfig{UfopName: "grepd", VerStr: "v1", Image: "grepd.v1", Flavor: "default"}
		if change != nil {
			change(&rc)
		}
		return rc
	}
	for _, c := range []struct {
		name string
		rc   ReleaseConfig
		want string // a part of the refusal; "" = accepted
	}{
		{"minimal", base(nil), ""},
		{"no ufop", base(func(rc *ReleaseConfig) { rc.UfopName = "" }), "ufopname: required"},
		{"bad version", base(func(rc *ReleaseConfig) { rc.VerStr = "-v1" }), `verstr "-v1"`},
		{"long version", base(func(rc *ReleaseConfig) { rc.VerStr = strings.Repeat("v", 33) }), "verstr"},
		{"no image", base(func(rc *ReleaseConfig) { rc.Image = "" }), "image: required"},
		{"no flavor", base(func(rc *ReleaseConfig) { rc.Flavor = "" }), "flavor: required"},
		{"long desc", base(func(rc *ReleaseConfig) { rc.Desc = strings.Repeat("d", 1025) }), "desc: at most 1024"},
		{"health path without slash", base(func(rc *ReleaseConfig) { rc.HealthCheck = &api.HealthCheckConfig{Path: "h"} }), "health_check.path"},
		{"health path with space", base(func(rc *ReleaseConfig) { rc.HealthCheck = &api.HealthCheckConfig{Path: "/a b"} }), "health_check.path"},
		{"health timeout over", base(func(rc *ReleaseConfig) { rc.HealthCheck = &api.HealthCheckConfig{Timeout: MaxHealthTimeout + 1} }), "health_check.timeout"},
		{"health ok", base(func(rc *ReleaseConfig) { rc.HealthCheck = &api.HealthCheckConfig{Path: "/health", Timeout: 3} }), ""},
		{"too many log paths", base(func(rc *ReleaseConfig) { rc.LogFilePaths = make([]string, MaxLogPaths+1) }), "log_file_paths: at most"},
		{"empty log path", base(func(rc *ReleaseConfig) { rc.LogFilePaths = []string{""} }), "not a usable path"},
		{"bad env name", base(func(rc *ReleaseConfig) {
			rc.Env = &api.EnvConfig{Global: []dora.EnvVar{{Key: "1X", Value: "v"}}}
		}), `bad variable name "1X"`},
		{"env value with NUL", base(func(rc *ReleaseConfig) {
			rc.Env = &api.EnvConfig{Global: []dora.EnvVar{{Key: "X", Value: "a\x00b"}}}
		}), "value of X"},
		{"bad protocol", base(func(rc *ReleaseConfig) { rc.Protocol = "grpc" }), `protocol "grpc"`},
		{"bad timeout", base(func(rc *ReleaseConfig) { rc.Timeouts = &api.TimeoutsConfig{Idle: "soon"} }), "timeouts.idle"},
		{"timeout over an hour", base(func(rc *ReleaseConfig) { rc.Timeouts = &api.TimeoutsConfig{Connect: "2h"} }), "timeouts.connect: must be 0 to"},
		{"body limit never", base(func(rc *ReleaseConfig) { rc.BodyLimit = -1 }), ""},
		{"body limit under -1", base(func(rc *ReleaseConfig) { rc.BodyLimit = -2 }), "body_limit -2"},
		{"body limit over", base(func(rc *ReleaseConfig) { rc.BodyLimit = dora.MaxBodyLimit + 1 }), "body_limit"},
		{"bad cache ttl", base(func(rc *ReleaseConfig) { rc.Cache = &api.CacheConfig{Enabled: true, TTL: "x"} }), "cache.ttl"},
		{"cache ttl over", base(func(rc *ReleaseConfig) { rc.Cache = &api.CacheConfig{Enabled: true, TTL: "1000h"} }), "cache.ttl: must be 0 to"},
		{"negative autoscale target", base(func(rc *ReleaseConfig) { rc.Autoscale = &dora.AutoscalePolicy{Target: -1} }), "autoscale: target must be 0 to 1e6"},
		{"autoscale window over a day", base(func(rc *ReleaseConfig) { rc.Autoscale = &dora.AutoscalePolicy{StableWindow: 25 * time.Hour} }), "stable_window must be 0 to 24h"},
		{"autoscale panic window over stable", base(func(rc *ReleaseConfig) {
			rc.Autoscale = &dora.AutoscalePolicy{StableWindow: time.Minute, PanicWindow: 2 * time.Minute}
		}), "autoscale: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			rel, err := checkRelease(c.rc, ruleNow)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted %+v, want a refusal with %q", rel, c.want)
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrInvalid with %q", err, c.want)
			}
		})
	}
}

// TestCheckReleaseFills checks what an accepted release holds beyond the
// config: the defaults and the parsed values.
func TestCheckReleaseFills(t *testing.T) {
	rel, err := checkRelease(ReleaseConfig{UfopName: "grepd", VerStr: "v2", Image: "img", Flavor: "C1M1",
		Protocol: "UFOP", Timeouts: &api.TimeoutsConfig{Connect: "2s", Idle: "90"},
		Cache: &api.CacheConfig{Enabled: true, TTL: "10m"}, Autoscale: &dora.AutoscalePolicy{Target: 3}}, ruleNow)
	if err != nil {
		t.Fatal(err)
	}
	if rel.Protocol != dora.ProtocolUfop || !rel.Created.Equal(ruleNow) {
		t.Errorf("protocol %q created %v, want ufop at %v", rel.Protocol, rel.Created, ruleNow)
	}
	if rel.Timeouts.Connect != 2*time.Second || rel.Timeouts.Idle != 90*time.Second || rel.Timeouts.FirstByte != 0 {
		t.Errorf("timeouts %+v", rel.Timeouts)
	}
	if rel.Cache == nil || !rel.Cache.Enabled || rel.Cache.TTL != 10*time.Minute {
		t.Errorf("cache %+v", rel.Cache)
	}
	if rel.Autoscale == nil || rel.Autoscale.Target != 3 {
		t.Errorf("autoscale %+v", rel.Autoscale)
	}
	rel, err = checkRelease(ReleaseConfig{UfopName: "grepd", VerStr: "v2", Image: "img", Flavor: "C1M1"}, ruleNow)
	if err != nil || rel.Protocol != dora.ProtocolDora {
		t.Errorf("default protocol %q (%v), want dora", rel.Protocol, err)
	}
}
