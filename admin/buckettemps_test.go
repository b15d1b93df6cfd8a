package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/pfop/boltq"
	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/router/origin"
)

// putTemp stores an upload temporary in bucket, as an upload does.
func (e *env) putTemp(bucket string) string {
	e.t.Helper()
	key := rs.TempKey()
	if _, err := e.objs.Put(context.Background(), bucket, key, strings.NewReader("in flight"), origin.PutOptions{}); err != nil {
		e.t.Fatal(err)
	}
	return key
}

// gone fails unless bucket/key is absent from the object store.
func (e *env) gone(what, bucket, key string) {
	e.t.Helper()
	if _, err := e.objs.Stat(context.Background(), bucket, key); !errors.Is(err, origin.ErrNotFound) {
		e.t.Errorf("%s: %s/%s still there (%v)", what, bucket, key, err)
	}
}

// A bucket whose only objects are upload temporaries looks empty to its
// owner (listings hide them, rs refuses their keys): it can be deleted,
// and its temporaries go with it, so that the next bucket of that name
// starts clean. A deleted bucket's temporaries (the leader's sweep walks
// existing buckets only) do not keep its name from being given out again:
// they are removed when it is. Objects a user can see still keep a bucket
// from being deleted, and the temporaries of a bucket that exists are
// never touched by another account's create.
func TestBucketDeletionTakesItsUploadTemporaries(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "photos"}, nil)
	tmps := []string{e.putTemp("photos"), e.putTemp("photos")}
	var list struct{ Items []origin.Object }
	e.must(http.StatusOK, alice, "GET", "/v1/list/photos", nil, &list)
	if len(list.Items) != 0 {
		t.Fatalf("list: %+v, want nothing", list.Items)
	}
	// bob cannot take the name of alice's bucket, nor its uploads.
	if r := e.req(bob, "POST", "/v1/buckets", map[string]any{"name": "photos"}); r.Status != http.StatusConflict || !strings.Contains(r.errMsg(), "already exists") {
		t.Fatalf("bob creates alice's photos: %d %s, want 409 already exists", r.Status, r.Body)
	}
	for _, k := range tmps {
		if _, err := e.objs.Stat(context.Background(), "photos", k); err != nil {
			t.Fatalf("the temporary of alice's bucket %s: %v", k, err)
		}
	}
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/buckets/photos", nil, nil)
	for _, k := range tmps {
		e.gone("deleted bucket", "photos", k)
	}
	e.must(http.StatusCreated, bob, "POST", "/v1/buckets", map[string]any{"name": "photos"}, nil)
	e.must(http.StatusOK, bob, "GET", "/v1/list/photos", nil, &list)
	if len(list.Items) != 0 {
		t.Fatalf("bob's new photos: %+v, want nothing", list.Items)
	}

	// Temporaries stored under a name after its bucket was deleted.
	left := e.putTemp("albums")
	e.must(http.StatusCreated, bob, "POST", "/v1/buckets", map[string]any{"name": "albums"}, nil)
	e.gone("created bucket", "albums", left)

	// A visible object still counts, many temporaries before it or not,
	// and the temporaries stay with the bucket.
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "docs"}, nil)
	var docsTmps []string
	for range 20 {
		docsTmps = append(docsTmps, e.putTemp("docs"))
	}
	e.putObject(alice, "docs", "z.txt", "kept")
	if r := e.req(alice, "DELETE", "/v1/buckets/docs", nil); r.Status != http.StatusConflict || !strings.Contains(r.errMsg(), "still holds objects") {
		t.Fatalf("delete docs holding z.txt: %d %s, want 409", r.Status, r.Body)
	}
	for _, k := range append(docsTmps, "z.txt") {
		if _, err := e.objs.Stat(context.Background(), "docs", k); err != nil {
			t.Fatalf("docs/%s after a refused delete: %v", k, err)
		}
	}
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/objects/docs/z.txt", nil, nil)
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/buckets/docs", nil, nil)
	for _, k := range docsTmps {
		e.gone("deleted docs", "docs", k)
	}
}

// holdTempOpen stops a keyless upload between storing its temporary and
// copying it to its key: the Open of the temporary says so on opening and
// waits for release.
type holdTempOpen struct {
	ObjectStore
	opening chan string
	release chan struct{}
}

func (h holdTempOpen) Open(ctx context.Context, bucket, key string, offset, length int64) (io.ReadCloser, origin.Object, error) {
	if rs.ReservedKey(key) {
		h.opening <- key
		<-h.release
	}
	return h.ObjectStore.Open(ctx, bucket, key, offset, length)
}

// A keyless upload under way when its bucket is deleted: the delete takes
// its temporary, and the upload fails at its move step, storing nothing
// and leaving the bucket deleted; the next bucket of the name is empty.
func TestBucketDeletedDuringAKeylessUpload(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "photos"}, nil)
	q, err := boltq.Open(filepath.Join(t.TempDir(), "pfop.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	hold := holdTempOpen{e.objs, make(chan string, 1), make(chan struct{})}
	h, err := pfop.NewHandler(pfop.HandlerConfig{Store: e.st, Queue: q, Objects: hold})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("token", pfop.UploadToken(alice.AccessKey, alice.SecretKey, pfop.PutPolicy{Scope: "photos", Deadline: time.Now().Add(time.Hour).Unix()}))
	fw, _ := mw.CreateFormFile("file", "slow.txt")
	fw.Write([]byte("stored as the bucket went"))
	mw.Close()
	req := httptest.NewRequest(http.MethodPost, "/", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Wrap(http.NotFoundHandler()).ServeHTTP(w, req)
	}()
	var tmp string
	select {
	case tmp = <-hold.opening:
	case <-time.After(30 * time.Second):
		t.Fatal("the upload never reached its move")
	}
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/buckets/photos", nil, nil)
	e.gone("deleted bucket", "photos", tmp)
	close(hold.release)
	<-done
	var reply map[string]any
	json.Unmarshal(w.Body.Bytes(), &reply)
	if w.Code < 400 || reply["error"] == nil {
		t.Fatalf("upload into a bucket deleted meanwhile: %d %s, want an error", w.Code, w.Body)
	}
	t.Logf("the uploader got %d %s", w.Code, w.Body)
	if objs, err := e.objs.List(context.Background(), "photos", "", 0); err != nil || len(objs) != 0 {
		t.Fatalf("left in the deleted bucket: %+v %v", objs, err)
	}
	e.must(http.StatusNotFound, alice, "GET", "/v1/buckets/photos", nil, nil)
	e.must(http.StatusCreated, bob, "POST", "/v1/buckets", map[string]any{"name": "photos"}, nil)
}
