package router

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/doraproject/dora/router/origin"
)

// rewritingOrigin overwrites an object right after each of its first
// `rewrites` Stats, as another host's upload landing between the router's
// stat and its read would.
type rewritingOrigin struct {
	*memOrigin
	rewrites atomic.Int32
	n        atomic.Int32
	version  atomic.Int32 // each rewrite's content differs
}

func (o *rewritingOrigin) Stat(ctx context.Context, bucket, key string) (origin.Object, error) {
	obj, err := o.memOrigin.Stat(ctx, bucket, key)
	if err == nil && o.n.Add(1) <= o.rewrites.Load() {
		o.add(bucket, key, "text/plain", []byte(strings.Repeat(string(rune('A'+o.version.Add(1))), 20)))
	}
	return obj, err
}

// TestObjectOverwrittenBetweenStatAndRead: the router never serves one
// version's bytes under another's ETag or Content-Range; it describes the
// object again and serves the new version whole and consistent, or, when
// the key keeps changing, answers 503 JSON.
func TestObjectOverwrittenBetweenStatAndRead(t *testing.T) {
	ro := &rewritingOrigin{memOrigin: newMemOrigin()}
	e := newEnv(t, func(c *Config) { c.Objects = ro })
	ro.add("photos", "a.txt", "text/plain", []byte("0123456789abcdefghij"))

	ro.rewrites.Store(1)
	resp, body := e.do("GET", "photos.localhost", "/a.txt", map[string]string{"Range": "bytes=2-5"})
	cur, _ := ro.memOrigin.Stat(context.Background(), "photos", "a.txt")
	if resp.StatusCode != http.StatusPartialContent || string(body) != "BBBB" ||
		resp.Header.Get("ETag") != `"`+cur.ETag+`"` || resp.Header.Get("Content-Range") != "bytes 2-5/20" {
		t.Fatalf("after one overwrite: %d %q ETag %s (current %s) %s", resp.StatusCode, body,
			resp.Header.Get("ETag"), cur.ETag, resp.Header.Get("Content-Range"))
	}

	ro.n.Store(0)
	ro.rewrites.Store(100)
	resp, body = e.do("GET", "photos.localhost", "/a.txt", nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a key rewritten at every read: %d %q", resp.StatusCode, body)
	}
	jsonError(t, body)
}
