package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/memory"
	"github.com/doraproject/dora/internal/store/storetest"
)

func TestUfopRegistration(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.ufop(alice, "grepd", dora.ModeProtected)

	cases := []struct {
		name string
		acct dora.Account
		body map[string]any
		want int
	}{
		{"too short", alice, map[string]any{"name": "abcd"}, http.StatusBadRequest},
		{"too long", alice, map[string]any{"name": "abcdefghijklmnopqrstu"}, http.StatusBadRequest},
		{"upper case", alice, map[string]any{"name": "Grepd2"}, http.StatusBadRequest},
		{"dot", alice, map[string]any{"name": "grep.d"}, http.StatusBadRequest},
		{"reserved", alice, map[string]any{"name": "imageInfo"}, http.StatusBadRequest},
		{"reserved any case", alice, map[string]any{"name": "imageinfo"}, http.StatusBadRequest},
		{"reserved saveas", alice, map[string]any{"name": "saveas"}, http.StatusBadRequest},
		{"taken by another", bob, map[string]any{"name": "grepd"}, http.StatusConflict},
		{"taken by self", alice, map[string]any{"name": "grepd"}, http.StatusConflict},
		{"public by user", bob, map[string]any{"name": "bobpub", "mode": 0}, http.StatusForbidden},
		{"public by user, spelled", bob, map[string]any{"name": "bobpub", "mode": "public"}, http.StatusForbidden},
		{"bad mode", bob, map[string]any{"name": "bobpub", "mode": 7}, http.StatusBadRequest},
		{"bad mode string", bob, map[string]any{"name": "bobpub", "mode": "open"}, http.StatusBadRequest},
		{"public by root", e.root, map[string]any{"name": "rootpub", "mode": 0}, http.StatusCreated},
		{"protected spelled", bob, map[string]any{"name": "bobprot", "mode": "protected"}, http.StatusCreated},
		{"default private", bob, map[string]any{"name": "bobpriv"}, http.StatusCreated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.req(tc.acct, "POST", "/v1/ufops", tc.body)
			if r.Status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.want, r.Body)
			}
		})
	}
	if u := e.ufopRecord("bobpriv"); u.Mode != dora.ModePrivate || u.Owner != bob.ID {
		t.Errorf("bobpriv = %+v", u)
	}
	if _, err := e.st.Get(context.Background(), store.UfopKey("bobpub")); err == nil {
		t.Error("a refused ufop was recorded")
	}

	// Visibility: bob sees his own, the public one; grepd (protected) after apply.
	names := func(acct dora.Account) map[string]bool {
		var infos []UfopInfo
		e.must(http.StatusOK, acct, "GET", "/v1/ufops", nil, &infos)
		m := map[string]bool{}
		for _, i := range infos {
			m[i.Name] = true
		}
		return m
	}
	if got := names(bob); !got["bobpriv"] || !got["bobprot"] || !got["rootpub"] || got["grepd"] || len(got) != 3 {
		t.Errorf("bob sees %v", got)
	}
	e.must(http.StatusForbidden, bob, "GET", "/v1/ufops/grepd", nil, nil)
	e.must(http.StatusNotFound, bob, "GET", "/v1/ufops/nosuchufop", nil, nil)
	var acct dora.Account
	e.must(http.StatusOK, bob, "POST", "/v1/ufops/grepd/apply", nil, &acct)
	if !acct.HasApplied("grepd") || acct.SecretKey != "" {
		t.Fatalf("after apply: %+v", acct)
	}
	if got := names(bob); !got["grepd"] {
		t.Errorf("bob does not see grepd after apply: %v", got)
	}
	var info UfopInfo
	e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd", nil, &info)
	if info.Owner != alice.ID || info.MaxInstanceNum != dora.DefaultInstanceLimit || info.Flavor != "default" ||
		len(info.AccessList) != 2 || info.AccessList[1] != bob.ID {
		t.Errorf("info = %+v", info)
	}
	e.must(http.StatusBadRequest, alice, "POST", "/v1/ufops/bobpriv/apply", nil, nil)
	e.must(http.StatusBadRequest, alice, "POST", "/v1/ufops/rootpub/apply", nil, nil)
	e.must(http.StatusNotFound, alice, "POST", "/v1/ufops/nosuchufop/apply", nil, nil)
	var after dora.Account
	e.must(http.StatusOK, bob, "DELETE", "/v1/ufops/grepd/apply", nil, &after)
	if after.HasApplied("grepd") || after.ID != bob.ID {
		t.Fatal("still applied")
	}
	e.must(http.StatusForbidden, bob, "GET", "/v1/ufops/grepd", nil, nil)
	e.must(http.StatusOK, bob, "POST", "/v1/ufops/grepd/apply", nil, nil)

	// Delete: only the owner; removes releases and deployments, stops instances.
	e.release(alice, "grepd", "v1")
	var d dora.Deployment
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/deployments", map[string]any{"version": "v1", "expect": 1}, &d)
	e.must(http.StatusForbidden, bob, "DELETE", "/v1/ufops/grepd", nil, nil)
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/grepd", nil, nil)
	if rm := e.rt.removedIDs(); len(rm) != 1 || rm[0] != d.ID {
		t.Errorf("removed %v, want [%s]", rm, d.ID)
	}
	for _, p := range []string{store.UfopKey("grepd"), store.ReleasesOf("grepd"), store.DeploymentsOf("grepd")} {
		kvs, err := e.st.List(context.Background(), p)
		if err != nil || len(kvs) != 0 {
			t.Errorf("%s left: %v %v", p, kvs, err)
		}
	}
	e.must(http.StatusNotFound, alice, "GET", "/v1/ufops/grepd", nil, nil)
	// The name is free again, and the old applications are gone.
	e.must(http.StatusOK, bob, "GET", "/v1/whoami", nil, &after)
	if after.HasApplied("grepd") {
		t.Error("the deleted ufop is still in bob's applied list")
	}
	e.ufop(bob, "grepd", dora.ModePrivate)
}

func TestReleases(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	e.ufop(bob, "bobufop", dora.ModePrivate)
	e.push(alice, "ufopdemo:v1")
	e.push(bob, "bobimage:v1")

	base := func(mod func(m map[string]any)) map[string]any {
		m := map[string]any{
			"ufopname": "grepd", "verstr": "v1", "image": "ufopdemo:v1", "desc": "a demo", "flavor": "C1M1",
			"health_check":   map[string]any{"path": "/health", "timeout": 3},
			"log_file_paths": []string{}, "env": map[string]any{"global": []map[string]string{{"key": "K", "value": "V"}}},
			"timeouts": map[string]any{"connect": "2s", "first_byte": "30s"},
		}
		if mod != nil {
			mod(m)
		}
		return m
	}
	cases := []struct {
		name string
		acct dora.Account
		body map[string]any
		want int
	}{
		{"unknown flavor", alice, base(func(m map[string]any) { m["flavor"] = "C64M512" }), http.StatusUnprocessableEntity},
		{"no flavor", alice, base(func(m map[string]any) { delete(m, "flavor") }), http.StatusBadRequest},
		{"unknown image", alice, base(func(m map[string]any) { m["image"] = "nope:v9" }), http.StatusUnprocessableEntity},
		{"another account's image", alice, base(func(m map[string]any) { m["image"] = "bobimage:v1" }), http.StatusUnprocessableEntity},
		{"unbuilt package image", alice, base(func(m map[string]any) { m["image"] = "grepd.v1" }), http.StatusUnprocessableEntity},
		{"health path without slash", alice, base(func(m map[string]any) { m["health_check"] = map[string]any{"path": "health"} }), http.StatusBadRequest},
		{"health timeout too big", alice, base(func(m map[string]any) { m["health_check"] = map[string]any{"path": "/h", "timeout": 301} }), http.StatusBadRequest},
		{"health timeout negative", alice, base(func(m map[string]any) { m["health_check"] = map[string]any{"timeout": -1} }), http.StatusBadRequest},
		{"bad protocol", alice, base(func(m map[string]any) { m["protocol"] = "grpc" }), http.StatusBadRequest},
		{"bad env key", alice, base(func(m map[string]any) { m["env"] = map[string]any{"global": []map[string]string{{"key": "A-B"}}} }), http.StatusBadRequest},
		{"bad timeout", alice, base(func(m map[string]any) { m["timeouts"] = map[string]any{"idle": "forever"} }), http.StatusBadRequest},
		{"bad version", alice, base(func(m map[string]any) { m["verstr"] = "v 1" }), http.StatusBadRequest},
		{"no ufopname", alice, base(func(m map[string]any) { delete(m, "ufopname") }), http.StatusBadRequest},
		{"unknown ufop", alice, base(func(m map[string]any) { m["ufopname"] = "nosuchufop" }), http.StatusNotFound},
		{"other user's ufop", bob, base(nil), http.StatusForbidden},
		{"body limit too big", alice, base(func(m map[string]any) { m["body_limit"] = 1 << 30 }), http.StatusBadRequest},
		{"bad cache ttl", alice, base(func(m map[string]any) { m["cache"] = map[string]any{"enabled": true, "ttl": "-1s"} }), http.StatusBadRequest},
		{"negative autoscale", alice, base(func(m map[string]any) { m["autoscale"] = map[string]any{"target": -1} }), http.StatusBadRequest},
		{"ok", alice, base(func(m map[string]any) {
			m["body_limit"], m["cache"] = 1000, map[string]any{"enabled": true, "ttl": "10m"}
		}), http.StatusCreated},
		{"duplicate", alice, base(nil), http.StatusConflict},
		{"ufop protocol, autoscale", alice, base(func(m map[string]any) {
			m["verstr"], m["protocol"], m["autoscale"] = "v2", "ufop", map[string]any{"target": 4}
		}), http.StatusCreated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.req(tc.acct, "POST", "/v1/releases", tc.body)
			if r.Status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.want, r.Body)
			}
		})
	}
	var list struct {
		Mode        string            `json:"mode"`
		Releases    []dora.Release    `json:"releases"`
		Deployments []dora.Deployment `json:"deployments"`
	}
	e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/releases", nil, &list)
	if list.Mode != "private" || len(list.Releases) != 2 || list.Deployments == nil {
		t.Fatalf("releases = %+v", list)
	}
	r1, r2 := list.Releases[0], list.Releases[1]
	if r1.Protocol != dora.ProtocolDora || r1.HealthCheck.Path != "/health" || r1.Timeouts.Connect.String() != "2s" ||
		len(r1.Env) != 1 || r1.Env[0].Key != "K" || r1.BodyLimit != 1000 || r1.Cache == nil || !r1.Cache.Enabled || r1.Cache.TTL != 10*time.Minute {
		t.Errorf("v1 = %+v", r1)
	}
	if r2.Protocol != dora.ProtocolUfop || r2.Autoscale == nil || r2.Autoscale.Target != 4 {
		t.Errorf("v2 = %+v", r2)
	}
	e.must(http.StatusForbidden, bob, "GET", "/v1/ufops/grepd/releases", nil, nil)

	var imgs []Image
	e.must(http.StatusOK, alice, "GET", "/v1/images", nil, &imgs)
	if len(imgs) != 1 || imgs[0].Name != "ufopdemo:v1" || imgs[0].Kind != ImageKindOCI {
		t.Errorf("images = %+v", imgs)
	}
}

func TestImagesFromStoreRecords(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Images = nil })
	alice := e.user("alice", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	if _, err := e.st.Put(context.Background(), store.ImageKey(alice.ID, "ufopdemo", "v1"), []byte(`{"digest":"sha256:abc"}`)); err != nil {
		t.Fatal(err)
	}
	var imgs []Image
	e.must(http.StatusOK, alice, "GET", "/v1/images", nil, &imgs)
	if len(imgs) != 1 || imgs[0].Name != "ufopdemo:v1" || imgs[0].Digest != "sha256:abc" {
		t.Fatalf("images = %+v", imgs)
	}
	e.must(http.StatusCreated, alice, "POST", "/v1/releases", map[string]any{
		"ufopname": "grepd", "verstr": "v1", "image": "ufopdemo:v1", "flavor": "C1M1"}, nil)
}

// txnCapStore refuses transactions of more than max ops, as Consul does,
// and fails the failAt-th transaction (counted from 1; 0: never).
type txnCapStore struct {
	store.Store
	max int

	mu     sync.Mutex
	txns   int
	failAt int
}

var errInjected = errors.New("injected store failure")

func (s *txnCapStore) Txn(ctx context.Context, ops []store.Op) error {
	if len(ops) > s.max {
		return fmt.Errorf("txn of %d ops: too many (max %d)", len(ops), s.max)
	}
	s.mu.Lock()
	s.txns++
	fail := s.failAt > 0 && s.txns == s.failAt
	s.mu.Unlock()
	if fail {
		return errInjected
	}
	return s.Store.Txn(ctx, ops)
}

func (s *txnCapStore) failOn(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.txns, s.failAt = 0, n
}

// A ufop with more records than a Consul transaction holds is deleted in
// batches; a DELETE interrupted half-way leaves the ufop, and a retry
// finishes the job.
func TestDeleteUfopWithManyRecords(t *testing.T) {
	e := newEnv(t)
	capped := &txnCapStore{Store: e.st, max: 64}
	e.start(func(c *Config) { c.Store = capped })
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.ufop(alice, "bigufop", dora.ModeProtected)
	e.must(http.StatusOK, bob, "POST", "/v1/ufops/bigufop/apply", nil, nil)
	e.release(alice, "bigufop", "v1")
	var d dora.Deployment
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/bigufop/deployments", map[string]any{"version": "v1", "expect": 1}, &d)
	ctx := context.Background()
	for i := range 150 {
		if _, err := e.st.Put(ctx, store.ScaleEventKey(d.ID, time.Unix(0, int64(i))), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 70 {
		b := dora.Build{Ufop: "bigufop", Number: i + 1, Status: dora.BuildFailed}
		if _, err := e.st.Put(ctx, store.BuildKey("bigufop", i+1), mustJSON(b)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 70 {
		if _, err := e.st.Put(ctx, store.ReleaseKey("bigufop", fmt.Sprintf("v%d", i+2)), mustJSON(dora.Release{Ufop: "bigufop", Version: fmt.Sprintf("v%d", i+2)})); err != nil {
			t.Fatal(err)
		}
	}

	capped.failOn(3) // part-way through the batches
	if r := e.req(alice, "DELETE", "/v1/ufops/bigufop", nil); r.Status != http.StatusInternalServerError {
		t.Fatalf("interrupted delete: %d %s, want 500", r.Status, r.Body)
	}
	e.must(http.StatusOK, alice, "GET", "/v1/ufops/bigufop", nil, nil)
	capped.failOn(0)
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/bigufop", nil, nil)
	for _, p := range []string{store.UfopKey("bigufop"), store.ReleasesOf("bigufop"), store.BuildsOf("bigufop"),
		store.DeploymentsOf("bigufop"), store.ScaleEventsOf(d.ID)} {
		if kvs, err := e.st.List(ctx, p); err != nil || len(kvs) != 0 {
			t.Errorf("%s left: %d records, %v", p, len(kvs), err)
		}
	}
	var after dora.Account
	e.must(http.StatusOK, bob, "GET", "/v1/whoami", nil, &after)
	if after.HasApplied("bigufop") {
		t.Error("the deleted ufop is still in bob's applied list")
	}
}

// TestDeleteUfopRemovesBuilds: DELETE removes the ufop's build directories
// (results, logs, failed builds) and leaves another ufop's alone; a ufop of
// the same name then builds afresh.
func TestDeleteUfopRemovesBuilds(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	e.ufop(alice, "other", dora.ModePrivate)
	for _, c := range []struct {
		ufop, line, status string
	}{
		{"grepd", "true", dora.BuildSuccess},
		{"grepd", "false", dora.BuildFailed},
		{"other", "true", dora.BuildSuccess},
	} {
		var b dora.Build
		e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/"+c.ufop+"/builds", typed{"application/gzip", string(pkg(t, "ubuntu", c.line))}, &b)
		if got := e.waitBuild(alice, c.ufop, b.Number); got.Status != c.status {
			t.Fatalf("%s build %d: %+v", c.ufop, b.Number, got)
		}
	}
	grepdDir := filepath.Dir(filepath.Dir(e.bld.Dir("grepd", 1)))
	if _, err := os.Stat(grepdDir); err != nil {
		t.Fatal(err)
	}
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/grepd", nil, nil)
	if _, err := os.Stat(grepdDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("grepd's build directories after DELETE: %v", err)
	}
	if _, err := os.Stat(e.bld.Dir("other", 1)); err != nil {
		t.Fatalf("another ufop's build after DELETE: %v", err)
	}
	e.ufop(alice, "grepd", dora.ModePrivate)
	var b dora.Build
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "ubuntu", "true"))}, &b)
	if got := e.waitBuild(alice, "grepd", b.Number); b.Number != 1 || got.Status != dora.BuildSuccess {
		t.Fatalf("new grepd build: %+v", got)
	}
	if _, err := os.Stat(e.bld.LogPath("grepd", 2)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the old grepd's build 2 log survived: %v", err)
	}
}

// TestTxnCapStoreContract: the test wrapper honours the store contract when
// it injects nothing (a transaction at Consul's cap passes through).
func TestTxnCapStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return &txnCapStore{Store: memory.New(), max: storetest.TxnOps}
	})
}

// A ufop's mode can change after register: the owner's call, public for
// the root account only, as at register.
func TestSetUfopMode(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	var info UfopInfo
	e.must(http.StatusOK, alice, "POST", "/v1/ufops/grepd/mode", map[string]any{"mode": "protected"}, &info)
	if info.Mode != dora.ModeProtected || e.ufopRecord("grepd").Mode != dora.ModeProtected {
		t.Fatalf("mode = %v, stored %v", info.Mode, e.ufopRecord("grepd").Mode)
	}
	e.must(http.StatusOK, alice, "POST", "/v1/ufops/grepd/mode", map[string]any{"mode": 2}, nil)
	for _, c := range []struct {
		name string
		acct dora.Account
		body map[string]any
		want int
	}{
		{"public by a user", alice, map[string]any{"mode": "public"}, http.StatusForbidden},
		{"another's ufop", bob, map[string]any{"mode": 1}, http.StatusForbidden},
		{"no mode", alice, map[string]any{}, http.StatusBadRequest},
		{"bad mode", alice, map[string]any{"mode": 7}, http.StatusBadRequest},
	} {
		if r := e.req(c.acct, "POST", "/v1/ufops/grepd/mode", c.body); r.Status != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, r.Status, r.Body, c.want)
		}
	}
	if m := e.ufopRecord("grepd").Mode; m != dora.ModePrivate {
		t.Fatalf("refused calls changed the mode to %v", m)
	}
}
