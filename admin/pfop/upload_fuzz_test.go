package pfop

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/accountstest"
	"github.com/doraproject/dora/internal/store/memory"
)

// unusedQueue and unusedObjects fill the HandlerConfig fields that checking
// an upload token never reaches: a call to either panics.
type (
	unusedQueue   struct{ Queue }
	unusedObjects struct{ ObjectStore }
)

// FuzzUploadToken shows what checkUpload, the gate of every upload path
// (form, resumable v1 and v2), makes of the upload token and key a client
// sends. It never panics; a refusal carries an upload status and a message.
// A token Alice signed over policy is accepted only when the policy is
// JSON, unexpired, without callbackUrl and scoped to her bucket, and the
// target then follows the scope: the scope's key, a key under its prefix,
// or any new key. A token of any other form is accepted only when its
// sign is the HMAC (by an independent signer) of its policy under the SK
// of the AK it names, and the target is then that account's.
func FuzzUploadToken(f *testing.F) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	alice, bob := accountstest.Alice, accountstest.Bob
	st := memory.New()
	accountstest.Seed(f, st, dora.Bucket{Name: "photos", Owner: alice.ID}, dora.Bucket{Name: "bobs", Owner: bob.ID})
	h, err := NewHandler(HandlerConfig{Store: st, Queue: unusedQueue{}, Objects: unusedObjects{}, Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	deadline := now.Unix() + 3600
	for _, c := range []struct {
		policy   string
		key      string
		keyGiven bool
	}{
		{`{"scope":"photos","deadline":1777640400}`, "a.jpg", true},
		{`{"scope":"photos","deadline":1777640400}`, "", false},
		{`{"scope":"photos:a.jpg","deadline":1777640400}`, "", false},
		{`{"scope":"photos:a.jpg","deadline":1777640400,"insertOnly":1}`, "b.jpg", true},
		{`{"scope":"photos:img/","isPrefixalScope":1,"deadline":1777640400}`, "img/1.png", true},
		{`{"scope":"photos:","isPrefixalScope":1,"deadline":1777640400,"mimeLimit":"image/*"}`, "", true},
		{`{"scope":"bobs","deadline":1777640400}`, "x", true},
		{`{"scope":"photos","deadline":1777640400,"persistentOps":"qhash/md5;upper|saveas/cGhvdG9zOm91dA==","persistentPipeline":"p1"}`, "k", true},
		{`{"scope":"photos","deadline":1,"callbackUrl":"http://x"}`, "k", true},
		{`{"scope":"photos","deadline":"soon"}`, "k", true},
	} {
		p := PutPolicy{Scope: "photos:" + c.key, Deadline: deadline}
		f.Add([]byte(c.policy), c.key, c.keyGiven, UploadToken(alice.AccessKey, alice.SecretKey, p))
	}
	f.Add([]byte(`{}`), "k", true, UploadToken(bob.AccessKey, bob.SecretKey, PutPolicy{Scope: "bobs", Deadline: deadline}))
	f.Add([]byte(`null`), "k", true, "AK-alice:c2ln:e30=")
	f.Fuzz(func(t *testing.T, policy []byte, key string, keyGiven bool, token string) {
		if !keyGiven {
			key = "" // as every caller passes a key the client did not name
		}
		ctx := context.Background()
		enc := base64.URLEncoding.EncodeToString(policy)
		signed := alice.AccessKey + ":" + accountstest.HMACB64(alice.SecretKey, enc) + ":" + enc
		got, ue := h.checkUpload(ctx, signed, key, keyGiven)
		if ue != nil {
			checkRefusal(t, ue)
		} else {
			checkTarget(t, policy, key, keyGiven, now, got)
		}

		got, ue = h.checkUpload(ctx, token, key, keyGiven)
		if ue != nil {
			checkRefusal(t, ue)
			return
		}
		parts := strings.Split(token, ":")
		if len(parts) != 3 {
			t.Fatalf("token %q accepted without three parts", token)
		}
		var owner dora.Account
		for _, a := range []dora.Account{alice, bob} {
			if parts[0] == a.AccessKey {
				owner = a
			}
		}
		if owner.ID == "" || parts[1] != accountstest.HMACB64(owner.SecretKey, parts[2]) {
			t.Fatalf("token %q accepted without a valid sign", token)
		}
		if got.owner != owner.ID {
			t.Fatalf("token %q signed by %s accepted for account %s", token, owner.ID, got.owner)
		}
	})
}

// checkRefusal fails t unless ue is a refusal a client can act on: one of
// the upload statuses, with a message.
func checkRefusal(t *testing.T, ue *uploadError) {
	t.Helper()
	switch ue.status {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, StatusNoBucket:
	default:
		t.Fatalf("refusal with status %d (%s)", ue.status, ue.msg)
	}
	if ue.msg == "" {
		t.Fatalf("refusal %d without a message", ue.status)
	}
}

// checkTarget fails t unless got, accepted for a token Alice signed over
// policy with the client's key, is what the policy allows at now.
func checkTarget(t *testing.T, policy []byte, key string, keyGiven bool, now time.Time, got uploadTarget) {
	t.Helper()
	var p PutPolicy
	if err := json.Unmarshal(policy, &p); err != nil {
		t.Fatalf("policy %q accepted, but it is not a policy: %v", policy, err)
	}
	if !reflect.DeepEqual(got.policy, p) {
		t.Fatalf("policy %q read as %+v, want %+v", policy, got.policy, p)
	}
	if p.Deadline < now.Unix() || p.CallbackURL != "" {
		t.Fatalf("policy %q accepted at %d: expired or with a callback", policy, now.Unix())
	}
	if p.PersistentOps != "" {
		if _, err := ParseFops(p.PersistentOps); err != nil {
			t.Fatalf("policy %q accepted with bad persistentOps: %v", policy, err)
		}
	}
	bucket, scoped, hasKey := strings.Cut(p.Scope, ":")
	if got.owner != accountstest.Alice.ID || bucket != "photos" || got.bucket != bucket {
		t.Fatalf("policy %q let %s write to bucket %q (scope bucket %q), not Alice's photos", policy, got.owner, got.bucket, bucket)
	}
	if got.insertOnly != (!hasKey || p.InsertOnly != 0) {
		t.Fatalf("policy %q: insertOnly %v", policy, got.insertOnly)
	}
	want := key
	switch {
	case !hasKey && !keyGiven:
		want = "" // the etag, once stored
	case !hasKey:
	case p.IsPrefixalScope != 0:
		if !keyGiven || !strings.HasPrefix(key, scoped) {
			t.Fatalf("policy %q (prefix %q) accepted key %q (given %v)", policy, scoped, key, keyGiven)
		}
	case !keyGiven:
		want = scoped
	case key != scoped:
		t.Fatalf("policy %q (key %q) accepted key %q", policy, scoped, key)
	}
	if got.key != want {
		t.Fatalf("policy %q, key %q (given %v): target key %q, want %q", policy, key, keyGiven, got.key, want)
	}
	if (keyGiven || want != "") && (got.key == "" || len(got.key) > MaxJobKeyByte) {
		t.Fatalf("policy %q: target key of %d bytes", policy, len(got.key))
	}
}
