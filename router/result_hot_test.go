package router

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/pool"
)

// TestHotRoute: a cached result asked for again by a remembered route
// (serveHot: no host, query or plan work) is answered exactly as the full
// path answers it — same status, body and headers for GET, HEAD and a
// conditional GET — while the snapshot changes under concurrent hits; a
// request with attname=, one too long to remember or one of a missing
// object takes the full path;
// once the bucket turns private the remembered route is not used (401
// without a token). On each tier.
func TestHotRoute(t *testing.T) { eachTier(t, testHotRoute) }

func testHotRoute(t *testing.T, mod func(*Config)) {
	e, _, calls := upCacheEnv(t, mod, "photos")
	const host, pq = "photos.localhost", "/k?up/x"
	// The same pipeline (an ignored parameter), too long to remember.
	long := pq + "&pad=" + strings.Repeat("p", hotIDMax)

	if resp, body := e.get(host, pq); resp.StatusCode != 200 || string(body) != "ABC" || resp.Header.Get("X-Dora-Cache") != "miss" {
		t.Fatalf("first: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if !hotRemembered(e, host, pq) {
		t.Fatal("the route of a cacheable request was not remembered")
	}
	for _, c := range []struct {
		method string
		hdr    map[string]string
	}{{http.MethodGet, nil}, {http.MethodHead, nil}, {http.MethodGet, map[string]string{"If-None-Match": "*"}}} {
		full, fullBody := e.do(c.method, host, long, c.hdr)
		hot, hotBody := e.do(c.method, host, pq, c.hdr)
		if c.hdr != nil && (full.StatusCode != 304 || hot.StatusCode != 304) {
			t.Fatalf("%s %v: full path %d, remembered route %d; want 304", c.method, c.hdr, full.StatusCode, hot.StatusCode)
		}
		if full.StatusCode != hot.StatusCode || string(fullBody) != string(hotBody) || full.ContentLength != hot.ContentLength {
			t.Fatalf("%s %v: full path %d %q (%d), remembered route %d %q (%d)", c.method, c.hdr,
				full.StatusCode, fullBody, full.ContentLength, hot.StatusCode, hotBody, hot.ContentLength)
		}
		for _, h := range []string{"X-Dora-Cache", "ETag", "Cache-Control", "Content-Type", "Content-Disposition"} {
			if full.Header.Get(h) != hot.Header.Get(h) {
				t.Fatalf("%s %v: %s: full path %q, remembered route %q", c.method, c.hdr, h, full.Header.Get(h), hot.Header.Get(h))
			}
		}
		if hot.Header.Get("X-Dora-Cache") != "hit" || hot.Header.Get("Age") == "" {
			t.Fatalf("%s %v: not a hit: %v", c.method, c.hdr, hot.Header)
		}
	}
	if hotRemembered(e, host, long) {
		t.Fatal("a request longer than hotIDMax was remembered")
	}
	// A missing object: its route is not remembered (each request would
	// pay a second stat on the full path).
	if resp, _ := e.get(host, "/nope?up/x"); resp.StatusCode != 404 || hotRemembered(e, host, "/nope?up/x") {
		t.Fatalf("a missing object: %d, remembered %v", resp.StatusCode, hotRemembered(e, host, "/nope?up/x"))
	}
	att := pq + "&attname=a.txt"
	for i, want := range []string{"hit", "hit"} {
		resp, body := e.get(host, att)
		if resp.StatusCode != 200 || string(body) != "ABC" || resp.Header.Get("X-Dora-Cache") != want ||
			!strings.Contains(resp.Header.Get("Content-Disposition"), `filename="a.txt"`) {
			t.Fatalf("attname request %d: %d %q %v", i, resp.StatusCode, body, resp.Header)
		}
	}
	if hotRemembered(e, host, att) {
		t.Fatal("an attname= request was remembered")
	}

	// Concurrent hits while other records change the snapshot.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 20 {
				resp, body := e.get(host, pq)
				if resp.StatusCode != 200 || string(body) != "ABC" || resp.Header.Get("X-Dora-Cache") != "hit" {
					errs <- fmt.Errorf("concurrent hit: %d %q %v", resp.StatusCode, body, resp.Header)
					return
				}
			}
		})
	}
	for i := range 10 {
		e.put(store.BucketKey("carols"), dora.Bucket{Name: "carols", Owner: carol.ID, Domains: []string{fmt.Sprintf("c%d.example.com", i)}})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the instance was called %d times, want 1", n)
	}

	// The object deleted: 404, and its route forgotten; put back, the
	// next answer is the new object's.
	if err := e.objs.Delete(t.Context(), "photos", "k"); err != nil {
		t.Fatal(err)
	}
	if resp, body := e.get(host, pq); resp.StatusCode != 404 || hotRemembered(e, host, pq) {
		t.Fatalf("after deleting the object: %d %q, remembered %v", resp.StatusCode, body, hotRemembered(e, host, pq))
	}
	e.objs.add("photos", "k", "text/plain", []byte("xyz"))
	// The bucket writes above may still publish a snapshot (routes are
	// remembered per snapshot): the GET is made again only when one was
	// published during it.
	for try := 0; ; try++ {
		snap := e.r.meta.Snapshot()
		resp, body := e.get(host, pq)
		if resp.StatusCode != 200 || string(body) != "XYZ" {
			t.Fatalf("after putting the object back: %d %q", resp.StatusCode, body)
		}
		if hotRemembered(e, host, pq) {
			break
		}
		if e.r.meta.Snapshot() == snap || try == 20 {
			t.Fatalf("after putting the object back: route not remembered (%d tries)", try+1)
		}
	}

	// The bucket turns private: the remembered route is of an older
	// snapshot, the token is asked for.
	e.put(store.BucketKey("photos"), dora.Bucket{Name: "photos", Owner: alice.ID, Private: true})
	waitUntil(t, "photos private in the snapshot", func() bool {
		b, ok := e.r.meta.Snapshot().BucketForHost(host, "localhost")
		return ok && b.Private
	})
	if resp, body := e.get(host, pq); resp.StatusCode != 401 || strings.Contains(string(body), "ABC") || resp.Header.Get("X-Dora-Cache") != "" {
		t.Fatalf("after the bucket turned private: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if hotRemembered(e, host, pq) {
		t.Fatal("a private bucket's route was remembered")
	}
}

// hotRemembered tells whether the router's remembered routes of its
// current snapshot hold the route of host and pathQuery.
func hotRemembered(e *env, host, pathQuery string) bool {
	t := e.r.hot.t.Load()
	if t == nil || t.snap != e.r.meta.Snapshot() {
		return false
	}
	for i := range t.slots {
		if rt := t.slots[i].Load(); rt != nil && rt.id == host+"\x00"+pathQuery {
			return true
		}
	}
	return false
}

// TestResultCacheFailedMiss: a cacheable pipeline whose step fails
// answers the error without the result's validators (no ETag, no
// Cache-Control: an error is never a cacheable result), and the next
// request is a miss again, not the error from the cache. On each tier.
func TestResultCacheFailedMiss(t *testing.T) { eachTier(t, testResultCacheFailedMiss) }

func testResultCacheFailedMiss(t *testing.T, mod func(*Config)) {
	e := newEnv(t, mod)
	var fail atomic.Bool
	fail.Store(true)
	addr := fakeInstance(t, func(w http.ResponseWriter, r *http.Request, in io.Reader) {
		b, _ := io.ReadAll(in)
		if fail.Load() {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		w.Write(bytes.ToUpper(b))
	})
	e.ufopRelease(dora.Ufop{Name: "up", Owner: alice.ID}, dora.Release{Protocol: dora.ProtocolDora, Cache: cacheOn})
	e.pool.Update([]pool.Instance{poolInst("u1", "up", "v1", addr)})
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	resp, body := e.get("photos.localhost", "/k?up/x")
	if resp.StatusCode < 400 || resp.Header.Get("ETag") != "" || resp.Header.Get("Cache-Control") != "" {
		t.Fatalf("failed step: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	fail.Store(false)
	for i, want := range []string{"miss", "hit"} {
		resp, body := e.get("photos.localhost", "/k?up/x")
		if resp.StatusCode != 200 || string(body) != "ABC" || resp.Header.Get("X-Dora-Cache") != want || resp.Header.Get("ETag") == "" {
			t.Fatalf("request %d after the failure: %d %q %v", i, resp.StatusCode, body, resp.Header)
		}
	}
}

// TestCanonicalHeaderNames: the names set with SetCanonical are in
// fasthttp's normal form, so that Peek and Del (writeError) find them.
func TestCanonicalHeaderNames(t *testing.T) {
	for _, k := range [][]byte{hdrXReqid, hdrXDoraCache, hdrETag, hdrCacheControl, hdrAge} {
		var h fasthttp.ResponseHeader
		h.Set(strings.ToLower(string(k)), "v")
		var got []byte
		h.VisitAll(func(key, _ []byte) { got = append(got[:0], key...) })
		if !bytes.Equal(got, k) {
			t.Errorf("%q is stored by Set as %q", k, got)
		}
	}
}
