package consulkv_test

import (
	"context"
	"errors"
	"testing"

	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/store"
)

// Object keys are the user's (Qiniu allows "a/../b", "a//b", "./x"), and
// they end up in store keys (objmeta/<bucket>/<key>): each is its own key,
// never another one that Consul's HTTP server would clean it into.
func TestDotSegmentsAreKeysOfTheirOwn(t *testing.T) {
	c := agenttest.StartConsul(t)
	s := open(t, c)
	ctx := context.Background()
	if _, err := s.Put(ctx, "objmeta/b/target", []byte("target")); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"objmeta/b/x/../target", "objmeta/b/./target", "objmeta/b//target", "objmeta/b/x/..", "objmeta/b/x/."} {
		if got, err := s.Get(ctx, k); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(%q) before any Put = %q, %v; want not found", k, got.Value, err)
		}
		if _, err := s.Put(ctx, k, []byte(k)); err != nil {
			t.Fatalf("Put(%q): %v", k, err)
		}
		got, err := s.Get(ctx, k)
		if err != nil || string(got.Value) != k || got.Key != k {
			t.Errorf("Get(%q) = %q %q, %v; want its own value", k, got.Key, got.Value, err)
		}
	}
	got, err := s.Get(ctx, "objmeta/b/target")
	if err != nil || string(got.Value) != "target" {
		t.Errorf("the cleaned key changed: %q, %v", got.Value, err)
	}
	kvs, err := s.List(ctx, "objmeta/b/x/../")
	if err != nil || len(kvs) != 1 || kvs[0].Key != "objmeta/b/x/../target" {
		t.Errorf("List(objmeta/b/x/../) = %+v, %v; want just objmeta/b/x/../target", kvs, err)
	}
	kvs, err = s.List(ctx, "objmeta/b/")
	if err != nil || len(kvs) != 6 {
		t.Errorf("List(objmeta/b/) = %d keys, %v; want 6", len(kvs), err)
	}
}

func TestWatchRefusesCleanablePrefixes(t *testing.T) {
	c := agenttest.StartConsul(t)
	s := open(t, c)
	for _, p := range []string{"a/../", "a//", "./a/"} {
		if _, err := s.Watch(context.Background(), p); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Watch(%q) = %v; want store.ErrInvalid", p, err)
		}
	}
}
