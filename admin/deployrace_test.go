package admin

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
)

// beforeTxnStore runs the hook it was armed with once, before the next
// transaction or CAS that writes a key under prefix: a concurrent call
// that lands between a handler's reads and its write. (Armed, not reset:
// the store's background writers may be inside run meanwhile.)
type beforeTxnStore struct {
	store.Store
	prefix string
	hook   atomic.Pointer[func()]
}

func (s *beforeTxnStore) Txn(ctx context.Context, ops []store.Op) error {
	for _, op := range ops {
		if op.Kind == store.OpPut && s.under(op.Key) {
			s.run()
			break
		}
	}
	return s.Store.Txn(ctx, ops)
}

func (s *beforeTxnStore) CAS(ctx context.Context, key string, value []byte, version uint64) (uint64, error) {
	if s.under(key) {
		s.run()
	}
	return s.Store.CAS(ctx, key, value, version)
}

func (s *beforeTxnStore) under(key string) bool {
	return len(key) > len(s.prefix) && key[:len(s.prefix)] == s.prefix
}

// arm makes the next write under prefix run f first.
func (s *beforeTxnStore) arm(f func()) { s.hook.Store(&f) }

// run calls the armed hook, once; the hook's own writes (a concurrent
// call of the same kind) do not call it again.
func (s *beforeTxnStore) run() {
	if h := s.hook.Swap(nil); h != nil {
		(*h)()
	}
}

// A deploy or resize racing with the ufop's DELETE wrote its deployment
// after the delete had removed the others and the ufop record: the
// deployment outlived its ufop (a record nobody lists, instances nobody
// stops) and a later ufop of the same name, another account's, inherited
// it.
func TestDeployRacingDeleteUfop(t *testing.T) {
	for _, call := range []struct {
		name, path string
		body       map[string]any
	}{
		{"deploy", "/v1/ufops/grepd/deployments", map[string]any{"version": "v1", "expect": 1, "region": "z1"}},
		{"resize", "/v1/ufops/grepd/resize", map[string]any{"num": 1, "region": "z1"}},
	} {
		t.Run(call.name, func(t *testing.T) {
			bs := &beforeTxnStore{prefix: store.DeploymentsOf("grepd")}
			e := newEnv(t, func(c *Config) {
				bs.Store = c.Store
				c.Store = bs
			})
			alice := e.user("alice", 0)
			e.deployGrepd(alice, 1)
			bs.arm(func() { e.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/grepd", nil, nil) })
			r := e.req(alice, "POST", call.path, call.body)
			if r.Status != http.StatusNotFound {
				t.Errorf("%s after the ufop was deleted: %d %s, want 404", call.name, r.Status, r.Body)
			}
			kvs, err := e.st.List(context.Background(), store.DeploymentsOf("grepd"))
			if err != nil || len(kvs) != 0 {
				t.Errorf("deployments of the deleted ufop: %d %v", len(kvs), err)
			}
			e.rt.mu.Lock()
			n := len(e.rt.specs)
			e.rt.mu.Unlock()
			if n != 0 {
				t.Errorf("%d deployments still run", n)
			}
		})
	}
}

// A release created while the ufop was being deleted outlived it, and
// passed to the next ufop of that name, another account's: bob saw
// alice's release (its image, its env) and could deploy it.
func TestCreateReleaseRacingDeleteUfop(t *testing.T) {
	bs := &beforeTxnStore{prefix: store.ReleasesOf("grepd")}
	e := newEnv(t, func(c *Config) {
		bs.Store = c.Store
		c.Store = bs
	})
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	e.push(alice, "grepd:v1")
	bs.arm(func() { e.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/grepd", nil, nil) })
	r := e.req(alice, "POST", "/v1/releases", map[string]any{
		"ufopname": "grepd", "verstr": "v1", "image": "grepd:v1", "flavor": "C1M1",
		"env": map[string]any{"global": []map[string]string{{"key": "TOKEN", "value": "alice-secret"}}},
	})
	if r.Status != http.StatusNotFound {
		t.Errorf("release after the ufop was deleted: %d %s, want 404", r.Status, r.Body)
	}
	e.ufop(bob, "grepd", dora.ModePrivate)
	var got struct {
		Releases []dora.Release `json:"releases"`
	}
	e.must(http.StatusOK, bob, "GET", "/v1/ufops/grepd/releases", nil, &got)
	if len(got.Releases) != 0 {
		t.Fatalf("bob's new ufop holds alice's releases: %+v", got.Releases)
	}
}

// The same through POST /version, which makes release v<n> of build n.
func TestSwitchVersionRacingDeleteUfop(t *testing.T) {
	bs := &beforeTxnStore{prefix: store.ReleasesOf("grepd")}
	e := newEnv(t, func(c *Config) {
		bs.Store = c.Store
		c.Store = bs
	})
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	e.must(http.StatusAccepted, alice, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "ubuntu", "true"))}, nil)
	if b := e.waitBuild(alice, "grepd", 1); b.Status != dora.BuildSuccess {
		t.Fatalf("build: %+v", b)
	}
	bs.arm(func() { e.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/grepd", nil, nil) })
	if r := e.req(alice, "POST", "/v1/ufops/grepd/version", map[string]any{"build": 1}); r.Status != http.StatusNotFound {
		t.Errorf("switch after the ufop was deleted: %d %s, want 404", r.Status, r.Body)
	}
	e.ufop(bob, "grepd", dora.ModePrivate)
	var got struct {
		Releases []dora.Release `json:"releases"`
	}
	e.must(http.StatusOK, bob, "GET", "/v1/ufops/grepd/releases", nil, &got)
	if len(got.Releases) != 0 {
		t.Fatalf("bob's new ufop holds alice's releases: %+v", got.Releases)
	}
}

// A build started while its ufop was being deleted: its record outlived
// the ufop, and the next ufop of that name (bob's) had alice's build 1.
func TestCreateBuildRacingDeleteUfop(t *testing.T) {
	bs := &beforeTxnStore{prefix: store.BuildsOf("grepd")}
	e := newEnv(t, func(c *Config) {
		bs.Store = c.Store
		c.Store = bs
	})
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	bs.arm(func() { e.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/grepd", nil, nil) })
	r := e.req(alice, "POST", "/v1/ufops/grepd/builds", typed{"application/gzip", string(pkg(t, "ubuntu", "true"))})
	if r.Status != http.StatusNotFound {
		t.Errorf("build after the ufop was deleted: %d %s, want 404", r.Status, r.Body)
	}
	e.srv.Close() // wait for a build that started anyway
	e.ufop(bob, "grepd", dora.ModePrivate)
	var got []dora.Build
	e.must(http.StatusOK, bob, "GET", "/v1/ufops/grepd/builds", nil, &got)
	if len(got) != 0 {
		t.Fatalf("bob's new ufop holds alice's builds: %+v", got)
	}
}

// Two deploys of the same version to the same region at once (two
// admins, a retried click) each found no deployment there and each
// created one: two live deployments of v1 in z1, both running instances,
// only one of which the API ever showed or changed again.
func TestConcurrentDeploysMakeOneDeployment(t *testing.T) {
	for _, call := range []struct {
		name, path string
		status     int
		body       map[string]any
	}{
		{"deploy", "/v1/ufops/grepd/deployments", http.StatusAccepted, map[string]any{"version": "v1", "expect": 1, "region": "z1"}},
		{"resize", "/v1/ufops/grepd/resize", http.StatusOK, map[string]any{"num": 1, "region": "z1"}},
	} {
		t.Run(call.name, func(t *testing.T) {
			bs := &beforeTxnStore{prefix: store.DeploymentsOf("grepd")}
			e := newEnv(t, func(c *Config) {
				bs.Store = c.Store
				c.Store = bs
			})
			alice := e.user("alice", 0)
			e.deployGrepd(alice, 1)
			bs.arm(func() { e.must(call.status, alice, "POST", call.path, call.body, nil) })
			e.must(call.status, alice, "POST", call.path, call.body, nil)
			var deps []dora.Deployment
			e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/deployments", nil, &deps)
			n := 0
			for _, d := range deps {
				if d.Region == "z1" && d.Version == "v1" && liveDeployment(d) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("%d live deployments of v1 in z1, want 1: %+v", n, deps)
			}
		})
	}
}

// Two resizes of the ufop's deployments in two regions at once each
// counted the other's old floor: together they ran over the account's
// per-ufop instance limit.
func TestConcurrentResizesKeepTheLimit(t *testing.T) {
	bs := &beforeTxnStore{prefix: store.DeploymentsOf("grepd")}
	e := newEnv(t, func(c *Config) {
		bs.Store = c.Store
		c.Store = bs
	})
	alice := e.user("alice", 5)
	e.deployGrepd(alice, 1)
	e.must(http.StatusOK, alice, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 1, "region": "z1"}, nil)
	bs.arm(func() {
		e.must(http.StatusOK, alice, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 4, "region": "z1"}, nil)
	})
	r := e.req(alice, "POST", "/v1/ufops/grepd/resize", map[string]any{"num": 4, "region": "z0"})
	if r.Status != http.StatusForbidden {
		t.Errorf("second resize: %d %s, want 403 over the limit", r.Status, r.Body)
	}
	var deps []dora.Deployment
	e.must(http.StatusOK, alice, "GET", "/v1/ufops/grepd/deployments", nil, &deps)
	total := 0
	for _, d := range deps {
		if liveDeployment(d) {
			total += d.Desired
		}
	}
	if total > 5 {
		t.Fatalf("%d instances asked for, over the limit of 5: %+v", total, deps)
	}
}
