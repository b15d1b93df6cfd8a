package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
)

// TestDiskFullIs507: an upload or metadata write that hits a full disk
// (ENOSPC or EDQUOT, wrapped as the object store and bolt wrap them)
// answers 507 with a JSON error that says so, not "500 internal error".
// The soak's TestSoakDiskFull drives the same path on a real full tmpfs.
func TestDiskFullIs507(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT} {
		err := fmt.Errorf("put object: %w", &os.PathError{Op: "write", Path: "/data/objects/.tmp/x", Err: errno})
		rec := httptest.NewRecorder()
		writeError(rec, err)
		var body struct {
			Error string `json:"error"`
		}
		if rec.Code != http.StatusInsufficientStorage || json.Unmarshal(rec.Body.Bytes(), &body) != nil || body.Error == "" {
			t.Errorf("%v: got %d %q, want 507 with a JSON error", errno, rec.Code, rec.Body.String())
		}
	}
	rec := httptest.NewRecorder()
	writeError(rec, fmt.Errorf("put object: %w", &os.PathError{Op: "write", Path: "x", Err: syscall.EIO}))
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("EIO: got %d, want 500", rec.Code)
	}
}

// outageStore fails every Get while down is set, as a store whose server
// is unreachable does.
type outageStore struct {
	store.Store
	down *atomic.Bool
}

func (o outageStore) Get(ctx context.Context, key string) (store.KV, error) {
	if o.down.Load() {
		return store.KV{}, errors.New("consul: connection refused")
	}
	return o.Store.Get(ctx, key)
}

// TestStoreOutageIs503NotBadSignature: while the metadata store does not
// answer, a correctly signed request gets 503 (retry), not 401 (the soak
// saw every signed upload answered "bad signature" during a Consul outage).
// An unknown key is still 401.
func TestStoreOutageIs503NotBadSignature(t *testing.T) {
	var down atomic.Bool
	e := newEnv(t, func(c *Config) { c.Store = outageStore{c.Store, &down} })
	e.must(http.StatusOK, e.root, "GET", "/v1/buckets", nil, nil)
	down.Store(true)
	if r := e.req(e.root, "GET", "/v1/buckets", nil); r.Status != http.StatusServiceUnavailable {
		t.Fatalf("signed request during a store outage: %d %s, want 503", r.Status, r.Body)
	}
	down.Store(false)
	stranger := dora.Account{AccessKey: "unknownAccessKey000000000001", SecretKey: "unknownSecretKey000000000000000000000001"}
	if r := e.req(stranger, "GET", "/v1/buckets", nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("unknown key: %d %s, want 401", r.Status, r.Body)
	}
}
