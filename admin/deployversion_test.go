package admin

import (
	"context"
	"net/http"
	"path"
	"testing"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
)

// cleaningStore reads keys as Consul's HTTP API does: its mux answers a
// path with "." or ".." segments with a redirect to the cleaned one, which
// the client follows, so "releases/a/../b/v1" reads releases/b/v1.
type cleaningStore struct{ store.Store }

func (s cleaningStore) Get(ctx context.Context, key string) (store.KV, error) {
	return s.Store.Get(ctx, path.Clean(key))
}

// A deploy's version names a release of the caller's ufop; one that is no
// version name ("../bobufop/v1") reached the store as a key, which a store
// that cleans keys resolved to another account's release: alice ran bob's
// release (its image name, its env) under her ufop.
func TestDeployVersionMustBeAVersionName(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Store = cleaningStore{c.Store} })
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.ufop(bob, "bobufop", dora.ModePrivate)
	e.release(bob, "bobufop", "v1")
	e.ufop(alice, "grepd", dora.ModePrivate)
	e.push(alice, "bobufop:v1") // alice's own image of the same name
	for _, v := range []string{"../bobufop/v1", "./v1", "v1/x", "-v1", ""} {
		r := e.req(alice, "POST", "/v1/ufops/grepd/deployments", map[string]any{"version": v, "expect": 1})
		if r.Status != http.StatusBadRequest || !contains(r.errMsg(), "version") {
			t.Errorf("version %q: status %d %s, want 400 about the version", v, r.Status, r.Body)
		}
	}
	kvs, err := e.st.List(context.Background(), store.DeploymentsOf("grepd"))
	if err != nil || len(kvs) != 0 {
		t.Fatalf("deployments recorded: %v %v", kvs, err)
	}
	if got := e.ufopRecord("grepd").ActiveVersion; got != "" {
		t.Errorf("active version %q", got)
	}
}
