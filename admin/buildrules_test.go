package admin

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/build"
)

func TestNextBuildNumber(t *testing.T) {
	for _, c := range []struct {
		name    string
		numbers []int
		want    int
	}{
		{"none", nil, 1},
		{"one", []int{1}, 2},
		{"gap kept", []int{1, 5, 3}, 6}, // a deleted build's number is not reused
	} {
		var builds []dora.Build
		for _, n := range c.numbers {
			builds = append(builds, dora.Build{Number: n})
		}
		if got := nextBuildNumber(builds); got != c.want {
			t.Errorf("%s: next = %d, want %d", c.name, got, c.want)
		}
	}
}

func TestNewBuild(t *testing.T) {
	y := build.UfopYAML{Image: "ubuntu", Run: "./app", Protocol: "dora", BodyLimit: 1024,
		Cache: &build.UfopYAMLCache{Enabled: true, TTL: "5m"}, CacheTTL: 5 * time.Minute}
	b := newBuild("grepd", 7, y, "me", ruleNow)
	if b.Status != dora.BuildRunning || b.Image != "grepd.v7" || b.Number != 7 || b.Base != "ubuntu" ||
		b.Run != "./app" || b.Protocol != dora.ProtocolDora || b.BodyLimit != 1024 || b.Owner != "me" {
		t.Errorf("build %+v", b)
	}
	if !b.Created.Equal(ruleNow) || !b.Heartbeat.Equal(ruleNow) {
		t.Errorf("created %v heartbeat %v, want both %v", b.Created, b.Heartbeat, ruleNow)
	}
	if b.Cache == nil || !b.Cache.Enabled || b.Cache.TTL != 5*time.Minute {
		t.Errorf("cache %+v", b.Cache)
	}
	if b := newBuild("grepd", 1, build.UfopYAML{Image: "ubuntu", Run: "x"}, "me", ruleNow); b.Cache != nil {
		t.Errorf("no cache in ufop.yaml gave %+v", b.Cache)
	}
}

func TestStaleBuild(t *testing.T) {
	after := 30 * time.Second
	for _, c := range []struct {
		name  string
		b     dora.Build
		stale bool
		msg   string
	}{
		{"no owner (older admin)", dora.Build{Created: ruleNow}, true, "server restarted"},
		{"own build, however old", dora.Build{Owner: "me", Heartbeat: ruleNow.Add(-time.Hour)}, false, ""},
		{"other's, fresh beat", dora.Build{Owner: "other", Heartbeat: ruleNow.Add(-after)}, false, ""},
		{"other's, old beat", dora.Build{Owner: "other", Heartbeat: ruleNow.Add(-after - time.Second)}, true, "no heartbeat since 2026-12-03T07:59:29Z"},
		{"other's, never beat, fresh", dora.Build{Owner: "other", Created: ruleNow.Add(-time.Second)}, false, ""},
		{"other's, never beat, old", dora.Build{Owner: "other", Created: ruleNow.Add(-time.Hour)}, true, "no heartbeat since 2026-12-03T07:00:00Z"},
	} {
		msg, stale := staleBuild(c.b, "me", ruleNow, after)
		if stale != c.stale || !strings.Contains(msg, c.msg) || (!stale && msg != "") {
			t.Errorf("%s: stale %v %q, want %v %q", c.name, stale, msg, c.stale, c.msg)
		}
	}
}

func TestCheckSwitchRequest(t *testing.T) {
	for _, c := range []struct {
		build int
		proto string
		want  dora.Protocol
		ok    bool
	}{
		{1, "", "", true},
		{3, "UFOP", dora.ProtocolUfop, true},
		{3, "dora", dora.ProtocolDora, true},
		{0, "", "", false},
		{-1, "dora", "", false},
		{1, "grpc", "", false},
	} {
		got, err := checkSwitchRequest(c.build, c.proto)
		if c.ok != (err == nil) || got != c.want {
			t.Errorf("(%d, %q) = %q, %v; want %q ok=%v", c.build, c.proto, got, err, c.want, c.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("(%d, %q): %v is not ErrInvalid", c.build, c.proto, err)
		}
	}
}

func TestReleaseFromBuild(t *testing.T) {
	ok := dora.Build{Ufop: "grepd", Number: 4, Status: dora.BuildSuccess, Image: "grepd.v4", BodyLimit: -1,
		Cache: &dora.CachePolicy{Enabled: true, TTL: time.Minute}}
	withDefault := []dora.Flavor{{Name: "C1M1"}, {Name: "default"}}
	for _, c := range []struct {
		name    string
		b       dora.Build
		proto   dora.Protocol
		flavors []dora.Flavor
		want    dora.Release
		err     error
	}{
		{"caller's protocol", ok, dora.ProtocolDora, withDefault,
			dora.Release{Flavor: "default", Protocol: dora.ProtocolDora}, nil},
		{"ufop.yaml's protocol", func() dora.Build { b := ok; b.Protocol = dora.ProtocolDora; return b }(), "", withDefault,
			dora.Release{Flavor: "default", Protocol: dora.ProtocolDora}, nil},
		{"ufop by default, first flavor without a default", ok, "", []dora.Flavor{{Name: "C2M4"}},
			dora.Release{Flavor: "C2M4", Protocol: dora.ProtocolUfop}, nil},
		{"failed build", func() dora.Build { b := ok; b.Status = dora.BuildFailed; return b }(), "", withDefault,
			dora.Release{}, ErrNotReady},
		{"running build", func() dora.Build { b := ok; b.Status = dora.BuildRunning; return b }(), "", withDefault,
			dora.Release{}, ErrNotReady},
	} {
		rel, err := releaseFromBuild("grepd", c.b, c.proto, c.flavors, ruleNow)
		if c.err != nil {
			if !errors.Is(err, c.err) || !strings.Contains(err.Error(), "not SUCCESS") {
				t.Errorf("%s: err = %v, want %v", c.name, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if rel.Flavor != c.want.Flavor || rel.Protocol != c.want.Protocol {
			t.Errorf("%s: flavor %q protocol %q, want %q %q", c.name, rel.Flavor, rel.Protocol, c.want.Flavor, c.want.Protocol)
		}
		if rel.Ufop != "grepd" || rel.Version != "v4" || rel.Image != "grepd.v4" || rel.Desc != "from build 4" ||
			rel.BodyLimit != -1 || rel.Cache != ok.Cache || !rel.Created.Equal(ruleNow) {
			t.Errorf("%s: release %+v", c.name, rel)
		}
	}
}
