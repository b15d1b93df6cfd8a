package admin

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/router/origin"
)

// The temporaries of uploads in progress (.dora-upload/) are no user's
// objects on the admin API either: GET /v1/list (qdoractl ls, the
// console) leaves them out and still fills a page, and /v1/objects and
// /v1/stat refuse their keys; the leader's sweeps remove one a crash left
// a day after first seeing it, counted by
// dora_admin_upload_temporaries_removed_total.
func TestUploadTemporariesHiddenAndSwept(t *testing.T) {
	clock := &offsetClock{}
	e := newEnv(t, withClock(clock))
	alice := e.user("alice", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "photos"}, nil)
	ctx := context.Background()
	tmp := rs.TempKey()
	if _, err := e.objs.Put(ctx, "photos", tmp, strings.NewReader("left by a crash"), origin.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	e.putObject(alice, "photos", "z.txt", "kept")
	var list struct{ Items []origin.Object }
	e.must(http.StatusOK, alice, "GET", "/v1/list/photos?limit=1", nil, &list)
	if len(list.Items) != 1 || list.Items[0].Key != "z.txt" {
		t.Fatalf("list: %+v, want z.txt alone", list.Items)
	}
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/objects/photos/" + tmp}, {"DELETE", "/v1/objects/photos/" + tmp},
		{"GET", "/v1/stat/photos/" + tmp}, {"PUT", "/v1/objects/photos/.dora-upload"},
		{"PUT", "/v1/objects/photos/.dora-upload/planted"},
	} {
		e.must(http.StatusBadRequest, alice, c.method, c.path, nil, nil)
	}
	if res, err := e.srv.sweepExpired(ctx); err != nil || res.TempsRemoved != 0 {
		t.Fatalf("first sweep: %+v %v", res, err)
	}
	clock.advance(24 * time.Hour)
	if res, err := e.srv.sweepExpired(ctx); err != nil || res.TempsRemoved != 1 {
		t.Fatalf("a day on: %+v %v", res, err)
	}
	if got := counterValue(t, e.srv.tempsRemoved); got != 1 {
		t.Fatalf("dora_admin_upload_temporaries_removed_total = %v, want 1", got)
	}
	if _, err := e.objs.Stat(ctx, "photos", "z.txt"); err != nil {
		t.Fatalf("z.txt: %v", err)
	}
}
