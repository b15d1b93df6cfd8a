package admin

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/build"
)

// The build rules: how builds are numbered and recorded, when a RUNNING
// build is taken for dead, and what a version switch (ufopver) releases,
// as plain functions of the records and now, table-tested alone
// (buildrules_test.go). The handlers in builds.go read, call, write.

// nextBuildNumber is one more than the highest number among builds.
func nextBuildNumber(builds []dora.Build) int {
	n := 0
	for _, b := range builds {
		n = max(n, b.Number)
	}
	return n + 1
}

// newBuild is the RUNNING record of build n of ufop from its ufop.yaml,
// started at now by the admin process owner.
func newBuild(ufop string, n int, y build.UfopYAML, owner string, now time.Time) dora.Build {
	b := dora.Build{
		Ufop: ufop, Number: n, Status: dora.BuildRunning, Image: dora.BuildImageName(ufop, n),
		Base: y.Image, Run: y.Run, Protocol: dora.Protocol(y.Protocol), Created: now, BodyLimit: y.BodyLimit,
		Owner: owner, Heartbeat: now,
	}
	if y.Cache != nil {
		b.Cache = &dora.CachePolicy{Enabled: y.Cache.Enabled, TTL: y.CacheTTL}
	}
	return b
}

// staleBuild says whether the RUNNING build b is run by no process any
// more, and the error to record: one recorded without an owner (an older
// admin), or one of another process (self is this one's id) whose last
// heartbeat (else its start) is more than staleAfter before now.
func staleBuild(b dora.Build, self string, now time.Time, staleAfter time.Duration) (string, bool) {
	if b.Owner == "" {
		return "interrupted: the server restarted during the build", true
	}
	last := b.Heartbeat
	if last.IsZero() {
		last = b.Created
	}
	if b.Owner == self || now.Sub(last) <= staleAfter {
		return "", false
	}
	return fmt.Sprintf("interrupted: the admin running the build stopped (no heartbeat since %s)", last.UTC().Format(time.RFC3339)), true
}

// checkSwitchRequest checks a POST /v1/ufops/{name}/version body: a
// positive build number and a protocol that is empty, dora or ufop (any
// case); it returns the protocol lowercased.
func checkSwitchRequest(buildNumber int, protocol string) (dora.Protocol, error) {
	if buildNumber < 1 {
		return "", refuse(ErrInvalid, "build: a positive build number is required")
	}
	proto := dora.Protocol(strings.ToLower(protocol))
	switch proto {
	case "", dora.ProtocolDora, dora.ProtocolUfop:
		return proto, nil
	}
	return "", refuse(ErrInvalid, "protocol %q: must be dora or ufop", protocol)
}

// buildVersion is the release version a switch to build n makes: "v<n>".
func buildVersion(n int) string { return fmt.Sprintf("v%d", n) }

// releaseFromBuild is the release a switch to build b of ufop makes when
// none of its version exists: flavor "default" when flavors has it, else
// the first; the protocol the caller asked (proto), else ufop.yaml's, else
// ufop (POST /uop: a program package and ufopver are seed 001's flow,
// whose programs speak /uop, docs/api.md). A build that has not succeeded
// is refused (ErrNotReady).
func releaseFromBuild(ufop string, b dora.Build, proto dora.Protocol, flavors []dora.Flavor, now time.Time) (dora.Release, error) {
	if b.Status != dora.BuildSuccess {
		return dora.Release{}, refuse(ErrNotReady, "build %d of %s is %s, not SUCCESS", b.Number, ufop, b.Status)
	}
	if proto == "" {
		proto = b.Protocol
	}
	if proto == "" {
		proto = dora.ProtocolUfop
	}
	flavor := "default"
	if !hasFlavor(flavors, flavor) && len(flavors) > 0 {
		flavor = flavors[0].Name
	}
	return dora.Release{Ufop: ufop, Version: buildVersion(b.Number), Image: b.Image, Flavor: flavor,
		Desc: "from build " + strconv.Itoa(b.Number), Protocol: proto, Created: now,
		BodyLimit: b.BodyLimit, Cache: b.Cache}, nil
}

func hasFlavor(flavors []dora.Flavor, name string) bool {
	for _, f := range flavors {
		if f.Name == name {
			return true
		}
	}
	return false
}
