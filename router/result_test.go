package router

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/pool"
)

// countingInstance answers its input transformed by f and counts calls.
func countingInstance(t *testing.T, f func(string) string) (string, *atomic.Int64) {
	var n atomic.Int64
	addr := fakeInstance(t, func(w http.ResponseWriter, r *http.Request, in io.Reader) {
		n.Add(1)
		b, _ := io.ReadAll(in)
		w.Write([]byte(f(string(b))))
	})
	return addr, &n
}

var cacheOn = &dora.CachePolicy{Enabled: true, TTL: time.Hour}

// cacheTiers are the result cache's set-ups the cache tests run on: the
// memory tier alone, and the disk tier alone (every result above the
// memory tier's entry bound, so each hit streams from a file).
var cacheTiers = []struct {
	name string
	mod  func(t *testing.T) func(*Config)
}{
	{"memory", func(*testing.T) func(*Config) { return nil }},
	{"disk", func(t *testing.T) func(*Config) {
		dir := t.TempDir()
		return func(c *Config) { c.ResultCacheDir, c.ResultCacheEntry = dir, 1 }
	}},
}

// TestResultCache: a cacheable pipeline's second request is a hit that
// reaches no instance, with ETag, Cache-Control, Age and X-Dora-Cache;
// If-None-Match answers 304; an overwritten object, a new active version
// and a deleted ufop are never answered from the cache. On each tier.
func TestResultCache(t *testing.T) { eachTier(t, testResultCache) }

// eachTier runs test on each of the result cache's set-ups (cacheTiers).
func eachTier(t *testing.T, test func(t *testing.T, mod func(*Config))) {
	for _, tier := range cacheTiers {
		t.Run(tier.name, func(t *testing.T) { test(t, tier.mod(t)) })
	}
}

// upCacheEnv is a router (newEnv with mod) whose ufop "up" (alice's, its
// results cached for an hour) is served by a countingInstance
// upper-casing its input, at addr, and whose bucket's object "k" holds
// "abc".
func upCacheEnv(t *testing.T, mod func(*Config), bucket string) (e *env, addr string, calls *atomic.Int64) {
	e = newEnv(t, mod)
	addr, calls = countingInstance(t, strings.ToUpper)
	e.ufopRelease(dora.Ufop{Name: "up", Owner: alice.ID}, dora.Release{Protocol: dora.ProtocolDora, Cache: cacheOn})
	e.pool.Update([]pool.Instance{poolInst("u1", "up", "v1", addr)})
	e.objs.add(bucket, "k", "text/plain", []byte("abc"))
	return e, addr, calls
}

func testResultCache(t *testing.T, mod func(*Config)) {
	e, upAddr, ups := upCacheEnv(t, mod, "photos")

	resp, body := e.get("photos.localhost", "/k?up/x")
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || string(body) != "ABC" || resp.Header.Get("X-Dora-Cache") != "miss" || etag == "" ||
		resp.Header.Get("Cache-Control") != "public, max-age=3600" {
		t.Fatalf("first: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = e.get("photos.localhost", "/k?up/x")
	if resp.StatusCode != 200 || string(body) != "ABC" || resp.Header.Get("X-Dora-Cache") != "hit" ||
		resp.Header.Get("ETag") != etag || resp.Header.Get("Age") == "" || resp.Header.Get("Cache-Control") != "public, max-age=3600" {
		t.Fatalf("second: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if n := ups.Load(); n != 1 {
		t.Fatalf("the instance was called %d times, want 1 (the hit reached it)", n)
	}
	resp, body = e.do(http.MethodGet, "photos.localhost", "/k?up/x", map[string]string{"If-None-Match": etag})
	if resp.StatusCode != 304 || len(body) != 0 {
		t.Fatalf("conditional: %d %q", resp.StatusCode, body)
	}
	resp, _ = e.do(http.MethodHead, "photos.localhost", "/k?up/x", nil)
	if resp.StatusCode != 200 || resp.ContentLength != 3 || resp.Header.Get("X-Dora-Cache") != "hit" {
		t.Fatalf("HEAD: %d %d %v", resp.StatusCode, resp.ContentLength, resp.Header)
	}
	if n := ups.Load(); n != 1 {
		t.Fatalf("the instance was called %d times, want 1", n)
	}

	// Overwritten (same size): the next answer is the new object's.
	e.objs.add("photos", "k", "text/plain", []byte("xyz"))
	resp, body = e.get("photos.localhost", "/k?up/x")
	if string(body) != "XYZ" || resp.Header.Get("X-Dora-Cache") != "miss" || resp.Header.Get("ETag") == etag {
		t.Fatalf("after an overwrite: %q %v", body, resp.Header)
	}

	// A new active version: its result, not the cached one.
	v2Addr, _ := countingInstance(t, func(s string) string { return "v2:" + s })
	e.pool.Update([]pool.Instance{poolInst("u1", "up", "v1", upAddr), poolInst("u2", "up", "v2", v2Addr)})
	e.ufopRelease(dora.Ufop{Name: "up", Owner: alice.ID, ActiveVersion: "v2", PreviousVersion: "v1"},
		dora.Release{Protocol: dora.ProtocolDora, Cache: cacheOn})
	resp, body = e.get("photos.localhost", "/k?up/x")
	if string(body) != "v2:xyz" || resp.Header.Get("X-Dora-Cache") != "miss" {
		t.Fatalf("after switching the active version: %q %v", body, resp.Header)
	}
	if _, body = e.get("photos.localhost", "/k?up/x"); string(body) != "v2:xyz" {
		t.Fatalf("hit after the switch: %q", body)
	}

	// The ufop deleted: 404, cached result or not.
	if err := e.st.Delete(t.Context(), store.UfopKey("up")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "ufop gone from the snapshot", func() bool { _, ok := e.r.meta.Snapshot().Ufop("up"); return !ok })
	if resp, body := e.get("photos.localhost", "/k?up/x"); resp.StatusCode != 404 || resp.Header.Get("X-Dora-Cache") != "" {
		t.Fatalf("after deleting the ufop: %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

// TestResultCachePrivate: a private bucket's cached result still needs a
// valid token, and is marked private for shared caches. On each tier.
func TestResultCachePrivate(t *testing.T) { eachTier(t, testResultCachePrivate) }

func testResultCachePrivate(t *testing.T, mod func(*Config)) {
	e, _, n := upCacheEnv(t, mod, "secret")
	signed := strings.TrimPrefix(auth.DownloadURL("http://secret.localhost/k?up/x", alice.AccessKey, alice.SecretKey, time.Now().Unix()+3600), "http://secret.localhost")
	for i, want := range []string{"miss", "hit"} {
		resp, body := e.get("secret.localhost", signed)
		if resp.StatusCode != 200 || string(body) != "ABC" || resp.Header.Get("X-Dora-Cache") != want ||
			resp.Header.Get("Cache-Control") != "private, max-age=3600" {
			t.Fatalf("signed request %d: %d %q %v", i, resp.StatusCode, body, resp.Header)
		}
	}
	for _, pq := range []string{"/k?up/x", strings.Replace(signed, "token=", "token=x", 1)} {
		resp, body := e.get("secret.localhost", pq)
		if resp.StatusCode != 401 || strings.Contains(string(body), "ABC") || resp.Header.Get("X-Dora-Cache") != "" {
			t.Fatalf("%s without a valid token: %d %q %v", pq, resp.StatusCode, body, resp.Header)
		}
	}
	if n.Load() != 1 {
		t.Fatalf("instance called %d times", n.Load())
	}
}

// TestResultCacheOptIn: a release without cache: is never cached; a
// built-in is cached by default; saveas never is.
func TestResultCacheOptIn(t *testing.T) {
	e := newEnv(t, nil)
	addr, n := countingInstance(t, strings.ToUpper)
	e.ufop(dora.Ufop{Name: "plain", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("p1", "plain", "v1", addr)})
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	for range 2 {
		resp, body := e.get("photos.localhost", "/k?plain/x")
		if string(body) != "ABC" || resp.Header.Get("X-Dora-Cache") != "" || resp.Header.Get("Cache-Control") != "" {
			t.Fatalf("not opted in: %q %v", body, resp.Header)
		}
	}
	if n.Load() != 2 {
		t.Fatalf("instance called %d times, want 2", n.Load())
	}
	for i, want := range []string{"miss", "hit"} {
		resp, body := e.get("photos.localhost", "/k?qhash/md5")
		if resp.StatusCode != 200 || resp.Header.Get("X-Dora-Cache") != want {
			t.Fatalf("built-in %d: %d %q %v", i, resp.StatusCode, body, resp.Header)
		}
	}
	// A mixed pipeline with a ufop that did not opt in is not cached.
	if resp, _ := e.get("photos.localhost", "/k?plain/x|qhash/md5"); resp.Header.Get("X-Dora-Cache") != "" {
		t.Fatalf("mixed pipeline cached: %v", resp.Header)
	}
	resp, body := e.get("photos.localhost", signedSaveAs("photos.localhost", "/k", "qhash/md5|", "photos", "out"))
	if resp.StatusCode != 200 || resp.Header.Get("X-Dora-Cache") != "" {
		t.Fatalf("saveas: %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

// TestResultCacheBounded: under a stream of distinct results the cache
// stays within its byte bound.
func TestResultCacheBounded(t *testing.T) {
	const bound = 20 << 10
	e := newEnv(t, func(c *Config) { c.ResultCacheBytes, c.ResultCacheEntry = bound, 4<<10 })
	addr, _ := countingInstance(t, strings.ToUpper)
	e.ufopRelease(dora.Ufop{Name: "up", Owner: alice.ID}, dora.Release{Protocol: dora.ProtocolDora, Cache: cacheOn})
	e.pool.Update([]pool.Instance{poolInst("u1", "up", "v1", addr)})
	data := strings.Repeat("a", 3000)
	for i := range 50 {
		k := fmt.Sprintf("k%d", i)
		e.objs.add("photos", k, "text/plain", []byte(data))
		if resp, body := e.get("photos.localhost", "/"+k+"?up/x"); resp.StatusCode != 200 || len(body) != 3000 {
			t.Fatalf("%s: %d, %d bytes", k, resp.StatusCode, len(body))
		}
		if s := e.r.results.Stats(); s.MemBytes > bound || s.MemEntries == 0 {
			t.Fatalf("after %d results: %d entries, %d bytes (bound %d)", i+1, s.MemEntries, s.MemBytes, bound)
		}
	}
}

// TestResultCacheDisk: with a disk tier, a result larger than the memory
// tier's entry bound is kept on disk and streamed from it (never reaching
// the instance again), and survives a restart of the router on the same
// directory; a second router on the directory is refused while the first
// holds it; under a stream of distinct results the directory stays within
// its bound.
func TestResultCacheDisk(t *testing.T) {
	dir := t.TempDir()
	const diskBound = 200 << 10
	mod := func(c *Config) {
		c.ResultCacheEntry, c.ResultCacheDir, c.ResultCacheDiskBytes, c.ResultCacheDiskEntry = 1<<10, dir, diskBound, 64<<10
	}
	e := newEnv(t, mod)
	addr, n := countingInstance(t, strings.ToUpper)
	e.ufopRelease(dora.Ufop{Name: "up", Owner: alice.ID}, dora.Release{Protocol: dora.ProtocolDora, Cache: cacheOn})
	e.pool.Update([]pool.Instance{poolInst("u1", "up", "v1", addr)})
	data := strings.Repeat("abcdefgh", 5000) // 40 000 bytes: above the memory entry bound
	e.objs.add("photos", "big", "text/plain", []byte(data))
	want := strings.ToUpper(data)
	var etag string
	for i, c := range []string{"miss", "hit", "hit"} {
		resp, body := e.get("photos.localhost", "/big?up/x")
		if resp.StatusCode != 200 || string(body) != want || resp.Header.Get("X-Dora-Cache") != c ||
			(c == "hit" && resp.ContentLength != int64(len(want))) {
			t.Fatalf("request %d: %d, %d bytes, %v", i, resp.StatusCode, len(body), resp.Header)
		}
		etag = resp.Header.Get("ETag")
	}
	if s := e.r.results.Stats(); n.Load() != 1 || s.MemEntries != 0 || s.DiskEntries != 1 {
		t.Fatalf("instance called %d times; cache %+v (want the result on disk only)", n.Load(), s)
	}
	if _, err := New(Config{Meta: staticMeta{e.r.meta.Snapshot()}, Objects: e.objs, Pool: e.pool, ResultCacheDir: dir}); err == nil {
		t.Fatal("a second router opened the directory in use")
	}
	e.stop()

	e2 := newEnv(t, mod)
	e2.objs.add("photos", "big", "text/plain", []byte(data)) // the same object: the same etag
	e2.ufopRelease(dora.Ufop{Name: "up", Owner: alice.ID}, dora.Release{Protocol: dora.ProtocolDora, Cache: cacheOn})
	waitUntil(t, "ufop in the snapshot", func() bool { _, ok := e2.r.meta.Snapshot().Ufop("up"); return ok })
	resp, body := e2.get("photos.localhost", "/big?up/x")
	if resp.StatusCode != 200 || string(body) != want || resp.Header.Get("X-Dora-Cache") != "hit" || resp.Header.Get("ETag") != etag {
		t.Fatalf("after a restart: %d, %d bytes, %v", resp.StatusCode, len(body), resp.Header)
	}
	resp, body = e2.do(http.MethodGet, "photos.localhost", "/big?up/x", map[string]string{"If-None-Match": etag})
	if resp.StatusCode != 304 || len(body) != 0 {
		t.Fatalf("conditional after a restart: %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, _ = e2.do(http.MethodHead, "photos.localhost", "/big?up/x", nil)
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(want)) || resp.Header.Get("X-Dora-Cache") != "hit" {
		t.Fatalf("HEAD after a restart: %d %d %v", resp.StatusCode, resp.ContentLength, resp.Header)
	}

	e2.pool.Update([]pool.Instance{poolInst("u1", "up", "v1", addr)})
	for i := range 30 {
		k := fmt.Sprintf("k%d", i)
		e2.objs.add("photos", k, "text/plain", []byte(strings.Repeat("z", 20_000+i)))
		if resp, body := e2.get("photos.localhost", "/"+k+"?up/x"); resp.StatusCode != 200 || len(body) != 20_000+i {
			t.Fatalf("%s: %d, %d bytes", k, resp.StatusCode, len(body))
		}
		if s := e2.r.results.Stats(); s.DiskBytes > diskBound || s.DiskEntries == 0 {
			t.Fatalf("after %d results: %+v (bound %d)", i+1, s, diskBound)
		}
	}
}

// TestResultCacheRevalidateMiss: a result's ETag names its cache key, not
// an entry, so a client (or a CDN) revalidating with If-None-Match once the
// entry has expired, been evicted or lives on another router gets 304
// without the pipeline running again (RFC 9110 13.1.2: evaluated before
// the method is performed). "*" on a miss runs the pipeline (no result is
// known to exist yet), and a private bucket still wants its token first.
func TestResultCacheRevalidateMiss(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e, _, calls := upCacheEnv(t, func(c *Config) { c.Now = clock }, "photos")
	e.objs.add("secret", "k", "text/plain", []byte("abc"))
	resp, body := e.get("photos.localhost", "/k?up/x")
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || string(body) != "ABC" || etag == "" {
		t.Fatalf("first: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	mu.Lock()
	now = now.Add(time.Hour + time.Second) // the entry (an hour's TTL) expired
	mu.Unlock()
	resp, body = e.do(http.MethodGet, "photos.localhost", "/k?up/x", map[string]string{"If-None-Match": `"other", ` + etag})
	if resp.StatusCode != 304 || len(body) != 0 || resp.Header.Get("ETag") != etag || resp.Header.Get("Cache-Control") != "public, max-age=3600" {
		t.Fatalf("revalidated after the entry expired: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the instance was called %d times, want 1 (the revalidation ran the pipeline)", n)
	}
	for _, inm := range []string{`"other"`, "*"} {
		resp, body = e.do(http.MethodGet, "photos.localhost", "/k?up/x", map[string]string{"If-None-Match": inm})
		if resp.StatusCode != 200 || string(body) != "ABC" || resp.Header.Get("ETag") != etag {
			t.Fatalf("If-None-Match %s: %d %q %v", inm, resp.StatusCode, body, resp.Header)
		}
		mu.Lock()
		now = now.Add(time.Hour + time.Second)
		mu.Unlock()
	}
	// The private bucket's result's tag does not open it without a token.
	signed := strings.TrimPrefix(auth.DownloadURL("http://secret.localhost/k?up/x", alice.AccessKey, alice.SecretKey, clock().Unix()+60), "http://secret.localhost")
	resp, _ = e.get("secret.localhost", signed)
	petag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || petag == "" {
		t.Fatalf("private: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, body = e.do(http.MethodGet, "secret.localhost", "/k?up/x", map[string]string{"If-None-Match": petag}); resp.StatusCode != 401 {
		t.Fatalf("private, revalidated without a token: %d %q %v", resp.StatusCode, body, resp.Header)
	}
}

// TestResultCacheAgeNotNegative: Age is a count of seconds, never
// negative (RFC 9111 5.1), also for a request whose start precedes the
// entry's creation: one that started before another filled the entry
// and reached the lookup after it (a slow stat), or a disk tier's entry
// read after the wall clock stepped back.
func TestResultCacheAgeNotNegative(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e, _, _ := upCacheEnv(t, func(c *Config) { c.Now = clock }, "photos")
	if resp, body := e.get("photos.localhost", "/k?up/x"); resp.StatusCode != 200 || resp.Header.Get("X-Dora-Cache") != "miss" {
		t.Fatalf("first: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	mu.Lock()
	now = now.Add(-10 * time.Second)
	mu.Unlock()
	resp, body := e.get("photos.localhost", "/k?up/x")
	if resp.StatusCode != 200 || string(body) != "ABC" || resp.Header.Get("X-Dora-Cache") != "hit" || resp.Header.Get("Age") != "0" {
		t.Fatalf("a hit started before the entry's creation: %d %q, Age %q (%v)", resp.StatusCode, body, resp.Header.Get("Age"), resp.Header)
	}
}

// TestResultCacheFallbackNoValidators: while the active version has no
// healthy instance and the previous one answers (blue/green), the answer
// is not the active versions' result: it is not cached, and it carries
// neither that result's ETag nor a Cache-Control, so that no cache keeps
// the previous version's bytes under the active one's validator (a later
// revalidation would be answered 304 and keep them).
func TestResultCacheFallbackNoValidators(t *testing.T) {
	e := newEnv(t, nil)
	v1Addr, _ := countingInstance(t, func(s string) string { return "v1:" + s })
	v2Addr, _ := countingInstance(t, func(s string) string { return "v2:" + s })
	e.put(store.ReleaseKey("up", "v1"), dora.Release{Ufop: "up", Version: "v1", Protocol: dora.ProtocolDora, Cache: cacheOn})
	e.ufopRelease(dora.Ufop{Name: "up", Owner: alice.ID, ActiveVersion: "v2", PreviousVersion: "v1"}, dora.Release{Protocol: dora.ProtocolDora, Cache: cacheOn})
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	e.pool.Update([]pool.Instance{poolInst("u1", "up", "v1", v1Addr)})
	resp, body := e.get("photos.localhost", "/k?up/x")
	if resp.StatusCode != 200 || string(body) != "v1:abc" {
		t.Fatalf("during the switch: %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("ETag") != "" || resp.Header.Get("Cache-Control") != "" {
		t.Fatalf("the previous version's answer carries the active result's validators: ETag %q, Cache-Control %q",
			resp.Header.Get("ETag"), resp.Header.Get("Cache-Control"))
	}
	e.pool.Update([]pool.Instance{poolInst("u1", "up", "v1", v1Addr), poolInst("u2", "up", "v2", v2Addr)})
	for _, want := range []string{"miss", "hit"} {
		resp, body = e.get("photos.localhost", "/k?up/x")
		if resp.StatusCode != 200 || string(body) != "v2:abc" || resp.Header.Get("X-Dora-Cache") != want || resp.Header.Get("ETag") == "" {
			t.Fatalf("after the switch: %d %q %v", resp.StatusCode, body, resp.Header)
		}
	}
}

// TestResultCacheVersionMovedWhileHeld: a request held for an instance
// whose ufop's active version moves meanwhile runs on the new version
// (TestHoldFollowsVersion); its result is not the one its cache key (the
// old version's) names, so it is neither stored under that key nor sent
// with its validators: once the old version is active again (a
// rollback), its own result is answered, not the other version's.
func TestResultCacheVersionMovedWhileHeld(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.HoldTimeout = 10 * time.Minute })
	v1Addr, _ := countingInstance(t, func(s string) string { return "v1:" + s })
	v2Addr, _ := countingInstance(t, func(s string) string { return "v2:" + s })
	rel := dora.Release{Protocol: dora.ProtocolDora, Cache: cacheOn}
	e.ufopRelease(dora.Ufop{Name: "up", Owner: alice.ID}, rel)
	e.scaledToZero("d1", "up", "v1")
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	res := e.getAsync("/k?up/x")
	waitUntil(t, "request held", func() bool { return e.r.Held() == 1 })
	e.pool.Update([]pool.Instance{poolInst("u2", "up", "v2", v2Addr)})
	e.ufopRelease(dora.Ufop{Name: "up", Owner: alice.ID, ActiveVersion: "v2", PreviousVersion: "v1"}, rel)
	select {
	case r := <-res:
		if r.status != 200 || r.body != "v2:abc" {
			t.Fatalf("held request: %+v", r)
		}
	case <-time.After(time.Minute):
		t.Fatal("the held request was not answered")
	}
	// Rolled back to v1.
	e.pool.Update([]pool.Instance{poolInst("u1", "up", "v1", v1Addr), poolInst("u2", "up", "v2", v2Addr)})
	e.ufopRelease(dora.Ufop{Name: "up", Owner: alice.ID, ActiveVersion: "v1", PreviousVersion: "v2"}, rel)
	resp, body := e.get("photos.localhost", "/k?up/x")
	if resp.StatusCode != 200 || string(body) != "v1:abc" {
		t.Fatalf("after the rollback to v1: %d %q (X-Dora-Cache %q), want v1's result", resp.StatusCode, body, resp.Header.Get("X-Dora-Cache"))
	}
}

// TestResultCacheObjectOverwrittenBeforeRead: an object overwritten
// between the stat that named the cache key and the pipeline's read gives
// a result of the new bytes, which is not the result that key (the old
// etag) names: it is not stored under it nor sent with its validators, so
// once the old bytes are back (a revert: the same etag), their own result
// is answered.
func TestResultCacheObjectOverwrittenBeforeRead(t *testing.T) {
	ro := &rewritingOrigin{memOrigin: newMemOrigin()}
	e := newEnv(t, func(c *Config) { c.Objects = ro })
	addr, _ := countingInstance(t, strings.ToUpper)
	e.ufopRelease(dora.Ufop{Name: "up", Owner: alice.ID}, dora.Release{Protocol: dora.ProtocolDora, Cache: cacheOn})
	e.pool.Update([]pool.Instance{poolInst("u1", "up", "v1", addr)})
	ro.add("photos", "k", "text/plain", []byte("abc"))
	ro.rewrites.Store(1) // the next stat's object is overwritten right after it
	resp, body := e.get("photos.localhost", "/k?up/x")
	if resp.StatusCode != 200 || string(body) != strings.Repeat("B", 20) {
		t.Fatalf("overwritten after the stat: %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("ETag") != "" || resp.Header.Get("Cache-Control") != "" {
		t.Fatalf("the new bytes' result sent with the old etag's validators: %v", resp.Header)
	}
	ro.add("photos", "k", "text/plain", []byte("abc")) // reverted: the first etag again
	resp, body = e.get("photos.localhost", "/k?up/x")
	if resp.StatusCode != 200 || string(body) != "ABC" {
		t.Fatalf("after the revert: %d %q (X-Dora-Cache %q), want the result of abc", resp.StatusCode, body, resp.Header.Get("X-Dora-Cache"))
	}
}

// TestResultCacheMimeChanged: an object whose MIME type changed (chgm:
// the same bytes, the same etag) is not answered the result of its old
// type, which the step saw and which a step setting no Content-Type
// passes on. On each tier.
func TestResultCacheMimeChanged(t *testing.T) { eachTier(t, testResultCacheMimeChanged) }

func testResultCacheMimeChanged(t *testing.T, mod func(*Config)) {
	e := newEnv(t, mod)
	addr := fakeInstance(t, func(w http.ResponseWriter, r *http.Request, in io.Reader) {
		b, _ := io.ReadAll(in)
		w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
		fmt.Fprintf(w, "%s:%s", r.Header.Get("Content-Type"), b)
	})
	e.ufopRelease(dora.Ufop{Name: "mime", Owner: alice.ID}, dora.Release{Protocol: dora.ProtocolDora, Cache: cacheOn})
	e.pool.Update([]pool.Instance{poolInst("m1", "mime", "v1", addr)})
	before := e.objs.add("photos", "k", "text/plain", []byte("abc"))
	for _, want := range []string{"miss", "hit"} {
		resp, body := e.get("photos.localhost", "/k?mime")
		if resp.StatusCode != 200 || string(body) != "text/plain:abc" || resp.Header.Get("X-Dora-Cache") != want {
			t.Fatalf("text/plain, %s: %d %q %v", want, resp.StatusCode, body, resp.Header)
		}
	}
	after := e.objs.add("photos", "k", "text/csv", []byte("abc"))
	if after.ETag != before.ETag {
		t.Fatalf("the test's origin changed the etag with the type: %q %q", before.ETag, after.ETag)
	}
	resp, body := e.get("photos.localhost", "/k?mime")
	if resp.StatusCode != 200 || string(body) != "text/csv:abc" || resp.Header.Get("Content-Type") != "text/csv" ||
		resp.Header.Get("X-Dora-Cache") != "miss" {
		t.Fatalf("after the type changed: %d %q %v", resp.StatusCode, body, resp.Header)
	}
}
