package admin

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/router/origin"
)

// A bucket deleted while an upload to it was streaming: the delete saw no
// object, the upload then stored one in a bucket that no longer existed,
// and the next account to create a bucket of that name read it.
func TestDeletedBucketObjectsDoNotPassToItsNextOwner(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "photos"}, nil)

	pr, pw := io.Pipe()
	req, err := http.NewRequest("PUT", e.ts.URL+"/v1/objects/photos/secret.txt", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/plain")
	done := e.sendAsync(alice, req)
	if _, err := io.WriteString(pw, "alice's "); err != nil { // the upload is under way
		t.Fatal(err)
	}
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/buckets/photos", nil, nil)
	_, _ = io.WriteString(pw, "secret")
	pw.Close()
	upload := <-done

	if upload != http.StatusNotFound {
		t.Errorf("upload to a bucket deleted meanwhile: %d, want 404", upload)
	}
	e.must(http.StatusCreated, bob, "POST", "/v1/buckets", map[string]any{"name": "photos"}, nil)
	got := e.req(bob, "GET", "/v1/objects/photos/secret.txt", nil)
	if got.Status == http.StatusOK || strings.Contains(string(got.Body), "alice's secret") {
		t.Fatalf("bob's new bucket photos holds alice's object: %d %s", got.Status, got.Body)
	}

	// Objects another API left under a deleted bucket's name keep the
	// name from being given out.
	if _, err := e.objs.Put(context.Background(), "albums", "left.txt", strings.NewReader("alice's"), origin.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	r := e.req(bob, "POST", "/v1/buckets", map[string]any{"name": "albums"})
	if r.Status != http.StatusConflict || !strings.Contains(r.errMsg(), "holds objects") {
		t.Fatalf("bucket over a deleted bucket's objects: %d %s, want 409", r.Status, r.Body)
	}
}

// PUT /v1/objects checked its bucket only after the store had committed,
// and then deleted whatever was at the key: with the bucket deleted and
// created again by bob meanwhile, alice's upload overwrote the object bob
// had just stored there, then removed it. It now passes the body through
// the same guard as every other write (admin/rs): the bucket is checked
// before the store commits, and bob's object is left as he wrote it.
func TestPutObjectLeavesTheNextOwnersObject(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "photos"}, nil)

	pr, pw := io.Pipe()
	req, err := http.NewRequest("PUT", e.ts.URL+"/v1/objects/photos/note.txt", pr)
	if err != nil {
		t.Fatal(err)
	}
	done := e.sendAsync(alice, req)
	if _, err := io.WriteString(pw, "alice's "); err != nil {
		t.Fatal(err)
	}
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/buckets/photos", nil, nil)
	e.must(http.StatusCreated, bob, "POST", "/v1/buckets", map[string]any{"name": "photos"}, nil)
	if _, err := e.objs.Put(context.Background(), "photos", "note.txt", strings.NewReader("bob's note"), origin.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(pw, "note")
	pw.Close()
	if upload := <-done; upload != http.StatusNotFound {
		t.Errorf("upload to a bucket deleted and created again meanwhile: %d, want 404", upload)
	}
	got := e.req(bob, "GET", "/v1/objects/photos/note.txt", nil)
	if got.Status != http.StatusOK || string(got.Body) != "bob's note" {
		t.Fatalf("bob's note after alice's upload: %d %q, want 200 \"bob's note\"", got.Status, got.Body)
	}
}

// sendAsync signs req as acct and sends it in the background; the channel
// gets its status (0 when it could not be sent).
func (e *env) sendAsync(acct dora.Account, req *http.Request) <-chan int {
	auth.SignRequest(req, acct.AccessKey, acct.SecretKey, nil, time.Now())
	done := make(chan int, 1)
	go func() {
		res, err := e.ts.Client().Do(req)
		if err != nil {
			done <- 0
			return
		}
		res.Body.Close()
		done <- res.StatusCode
	}()
	return done
}
