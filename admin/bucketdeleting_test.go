package admin

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
)

// listHook runs hook (once) when the bucket is listed: the delete's check
// that it is empty.
type listHook struct {
	ObjectStore
	once sync.Once
	hook func()
}

func (l *listHook) List(ctx context.Context, bucket, prefix string, limit int) ([]origin.Object, error) {
	l.once.Do(l.hook)
	return l.ObjectStore.List(ctx, bucket, prefix, limit)
}

// A bucket delete checks that the bucket is empty, then removes its
// record: a write that ended between the two (its last check of the
// bucket done before the removal) left its object under the deleted name,
// which nobody could then delete or create again (409). The delete now
// marks the bucket first, and a write that ends while the mark stands
// stores nothing (rs.Target.Still: gone); a delete refused because the
// bucket holds objects takes its mark off again.
func TestBucketDeleteHoldsWritesOffWhileItChecks(t *testing.T) {
	var during error
	var e *env
	hooked := &listHook{hook: func() {}}
	e = newEnv(t, func(c *Config) {
		hooked.ObjectStore = c.Objects
		c.Objects = hooked
	})
	alice := e.user("alice", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "photos"}, nil)
	b, _, err := store.Get[dora.Bucket](context.Background(), e.st, store.BucketKey("photos"))
	if err != nil {
		t.Fatal(err)
	}
	target := rs.TargetOf(b)
	hooked.once = sync.Once{} // the create listed it too
	hooked.hook = func() { during = target.Still(context.Background(), e.st) }

	// A bucket that holds an object: the delete is refused, the mark goes.
	if _, err := e.objs.Put(context.Background(), "photos", "a.txt", strings.NewReader("a"), origin.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := e.req(alice, "DELETE", "/v1/buckets/photos", nil); r.Status != http.StatusConflict {
		t.Fatalf("delete of a bucket holding an object: %d %s, want 409", r.Status, r.Body)
	}
	if !errors.Is(during, rs.ErrBucketGone) {
		t.Fatalf("a write ending while the delete checked the bucket: %v, want ErrBucketGone", during)
	}
	if err := target.Still(context.Background(), e.st); err != nil {
		t.Fatalf("a write after the refused delete: %v, want the bucket still there", err)
	}

	// An empty bucket: a write ending during the check stores nothing,
	// and the delete goes through.
	if err := e.objs.Delete(context.Background(), "photos", "a.txt"); err != nil {
		t.Fatal(err)
	}
	hooked.once = sync.Once{}
	during = nil
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/buckets/photos", nil, nil)
	if !errors.Is(during, rs.ErrBucketGone) {
		t.Fatalf("a write ending while the delete checked the empty bucket: %v, want ErrBucketGone", during)
	}
}
