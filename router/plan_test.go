package router

import (
	"testing"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store/memory"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/fop"
	"github.com/doraproject/dora/router/meta"
)

// TestUnknownUfopBeforeReady: until every kind of metadata is loaded (the
// buckets may be, the ufops not yet), a step whose ufop the snapshot lacks
// gets 503 with Retry-After, not a 404 the client would take for an
// answer; once loaded, the 404.
func TestUnknownUfopBeforeReady(t *testing.T) {
	b := dora.Bucket{Name: "photos", Owner: alice.ID}
	snap := meta.NewSnapshot(meta.Data{Accounts: []dora.Account{alice}, Buckets: []dora.Bucket{b}})
	req, err := fop.Parse("grepd/x")
	if err != nil {
		t.Fatal(err)
	}
	loading, err := New(Config{Store: memory.New(), Objects: newMemOrigin(), Pool: pool.New(pool.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	defer loading.Close()
	if _, e := loading.plan(snap, b, req.Steps, nil); e == nil || e.status != 503 || !e.retryAfter {
		t.Fatalf("before the metadata is loaded: %+v, want 503 with Retry-After", e)
	}
	loaded, err := New(Config{Meta: staticMeta{snap}, Objects: newMemOrigin(), Pool: pool.New(pool.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	defer loaded.Close()
	if _, e := loaded.plan(snap, b, req.Steps, nil); e == nil || e.status != 404 {
		t.Fatalf("once loaded: %+v, want 404", e)
	}
}
