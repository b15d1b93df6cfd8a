package admin

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/internal/store"
)

// A build still running when its ufop is deleted: alice's build 1 of
// grepd runs on the first admin; alice deletes grepd; bob registers
// grepd and starts his build 1 on a second admin (same store, its own
// build directory). The first admin stops alice's build, and nothing of
// it reaches bob's build 1: it stays bob's, RUNNING, until bob's own
// build ends.
func TestBuildOfADeletedUfopLeavesTheNextOwnersBuildAlone(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	gates := t.TempDir()
	aliceGate, bobGate := filepath.Join(gates, "alice"), filepath.Join(gates, "bob")
	wait := func(gate string) string { return "while [ ! -e " + gate + " ]; do sleep 0.01; done" }

	e.ufop(alice, "grepd", dora.ModePrivate)
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "ubuntu", wait(aliceGate)))}, nil)
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/grepd", nil, nil)

	bld2, err := build.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e2 := &env{t: t, dir: e.dir, st: e.st, rt: newFakeRuntime(), objs: e.objs, bld: bld2, root: e.root, imgs: map[string][]Image{}}
	e2.start()
	e2.ufop(bob, "grepd", dora.ModePrivate)
	var bobs dora.Build
	e2.must(http.StatusAccepted, bob, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "ubuntu", wait(bobGate)))}, &bobs)
	if bobs.Number != 1 {
		t.Fatalf("bob's first build is number %d", bobs.Number)
	}

	// The delete stopped alice's build: the first admin counts it as
	// canceled without its gate ever opening.
	canceled := `dora_admin_build_duration_seconds_count{outcome="canceled"} 1`
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m := e.req(dora.Account{}, "GET", "/metrics", nil); strings.Contains(string(m.Body), canceled) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("alice's build still runs 10 s after her ufop was deleted (no %s)", canceled)
			break
		}
	}

	// Whatever alice's build does now, and however the first admin
	// stops, bob's build 1 is left as bob's admin recorded it.
	if err := os.WriteFile(aliceGate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	got, _, err := store.Get[dora.Build](context.Background(), e.st, store.BuildKey("grepd", 1))
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != dora.BuildRunning || got.Owner != e2.srv.id || !got.Created.Equal(bobs.Created) || got.Error != "" {
		t.Fatalf("bob's build 1, still running on the second admin, became %+v (the second admin is %s)", got, e2.srv.id)
	}
	if err := os.WriteFile(bobGate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if b := e2.waitBuild(bob, "grepd", 1); b.Status != dora.BuildSuccess {
		t.Fatalf("bob's build 1 = %+v", b)
	}
}

// A ufop deleted through another admin than the one running its build:
// the building admin's next heartbeat finds the build's record gone and
// stops the build.
func TestBuildStopsWhenItsUfopIsDeletedThroughAnotherAdmin(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.BuildHeartbeat = 20 * time.Millisecond })
	alice := e.user("alice", 0)
	gate := filepath.Join(t.TempDir(), "gate")
	e.ufop(alice, "grepd", dora.ModePrivate)
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/builds",
		typed{"application/gzip", string(pkg(t, "ubuntu", "while [ ! -e "+gate+" ]; do sleep 0.01; done"))}, nil)

	bld2, err := build.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e2 := &env{t: t, dir: e.dir, st: e.st, rt: newFakeRuntime(), objs: e.objs, bld: bld2, root: e.root, imgs: map[string][]Image{}}
	e2.start()
	e2.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/grepd", nil, nil)

	canceled := `dora_admin_build_duration_seconds_count{outcome="canceled"} 1`
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m := e.req(dora.Account{}, "GET", "/metrics", nil); strings.Contains(string(m.Body), canceled) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the build still runs on its admin 10 s after its ufop was deleted through another (no %s)", canceled)
		}
	}
}
