package rs_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/internal/accountstest"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/bolt/bolttest"
	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/origin/local"
)

var (
	alice   = accountstest.Alice
	bob     = accountstest.Bob
	signers = accountstest.Signers()
)

type signer = accountstest.Signer

type env struct {
	t    testing.TB
	st   store.Store
	objs *local.Dir
	api  *httptest.Server
	h    *rs.Handler
}

func newEnv(t testing.TB, mod func(*rs.Config)) *env {
	t.Helper()
	dir := t.TempDir()
	st := bolttest.Open(t, dir)
	ld, err := local.New(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ld.Close() })
	accountstest.Seed(t, st, dora.Bucket{Name: "photos", Owner: alice.ID}, dora.Bucket{Name: "backup", Owner: alice.ID}, dora.Bucket{Name: "bobs", Owner: bob.ID})
	cfg := rs.Config{Store: st, Objects: ld, IOHost: "io.test:8080"}
	if mod != nil {
		mod(&cfg)
	}
	h, err := rs.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, st: st, objs: ld, h: h}
	e.api = httptest.NewServer(h.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Reqid", "next")
		http.Error(w, `{"error":"next handler"}`, http.StatusTeapot)
	})))
	t.Cleanup(e.api.Close)
	return e
}

func (e *env) object(bucket, key, data string) {
	e.t.Helper()
	if _, err := e.objs.Put(context.Background(), bucket, key, strings.NewReader(data), origin.PutOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) read(bucket, key string) (string, bool) {
	rc, _, err := e.objs.Open(context.Background(), bucket, key, 0, -1)
	if err != nil {
		return "", false
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b), true
}

// --- requests signed as the SDKs sign them: accountstest ---

// call POSTs pathQuery with a form body, signed, and decodes the JSON reply.
func (e *env) call(sign signer, a dora.Account, method, pathQuery, body string) (int, any) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.api.URL+pathQuery, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if sign != nil {
		sign(req, a, body)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("X-Reqid") == "" {
		e.t.Fatalf("%s: no X-Reqid", pathQuery)
	}
	b, _ := io.ReadAll(resp.Body)
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		e.t.Fatalf("%s %s: body %q is not JSON", method, pathQuery, b)
	}
	return resp.StatusCode, v
}

func enc(s string) string        { return base64.URLEncoding.EncodeToString([]byte(s)) }
func entry(b, k string) string   { return enc(b + ":" + k) }
func field(v any, k string) any  { m, _ := v.(map[string]any); return m[k] }
func str(v any, k string) string { s, _ := field(v, k).(string); return s }

func TestStatDeleteChgmChtypeLifecycle(t *testing.T) {
	for name, sign := range signers {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.object("photos", "a/b.txt", "hello")
			status, v := e.call(sign, alice, "POST", "/stat/"+entry("photos", "a/b.txt"), "")
			if status != 200 || field(v, "fsize") != float64(5) || str(v, "hash") == "" || !strings.HasPrefix(str(v, "mimeType"), "text/plain") ||
				field(v, "putTime").(float64) < float64(time.Now().Add(-time.Hour).UnixNano()/100) || field(v, "type") != float64(0) {
				t.Fatalf("stat: %d %v", status, v)
			}
			for _, c := range []struct {
				path string
				want int
			}{
				{"/stat/" + entry("photos", "none.txt"), rs.StatusNoEntry},
				{"/stat/" + entry("nobucket", "x"), rs.StatusNoBucket},
				{"/stat/" + entry("bobs", "x"), http.StatusForbidden},
				{"/stat/" + enc("photos"), http.StatusBadRequest},
				{"/stat/@@@", http.StatusBadRequest},
				{"/chtype/" + entry("photos", "a/b.txt") + "/type/9", http.StatusBadRequest},
				{"/deleteAfterDays/" + entry("photos", "a/b.txt") + "/x", http.StatusBadRequest},
				{"/chgm/" + entry("photos", "a/b.txt"), http.StatusBadRequest},
			} {
				if status, v := e.call(sign, alice, "POST", c.path, ""); status != c.want {
					t.Errorf("%s: %d %v, want %d", c.path, status, v, c.want)
				}
			}
			// Unsigned or badly signed: 401.
			if status, _ := e.call(nil, alice, "POST", "/stat/"+entry("photos", "a/b.txt"), ""); status != 401 {
				t.Fatalf("unsigned stat: %d", status)
			}
			if status, _ := e.call(func(r *http.Request, a dora.Account, b string) { sign(r, bob, b); r.URL.Path += "x" }, bob, "POST", "/stat/"+entry("photos", "a/b.txt"), ""); status != 401 {
				t.Fatalf("tampered stat: %d", status)
			}

			if status, v := e.call(sign, alice, "POST", "/chgm/"+entry("photos", "a/b.txt")+"/mime/"+enc("application/x-hello"), ""); status != 200 {
				t.Fatalf("chgm: %d %v", status, v)
			}
			e.call(sign, alice, "POST", "/chtype/"+entry("photos", "a/b.txt")+"/type/1", "")
			e.call(sign, alice, "POST", "/deleteAfterDays/"+entry("photos", "a/b.txt")+"/7", "")
			_, v = e.call(sign, alice, "POST", "/stat/"+entry("photos", "a/b.txt"), "")
			if str(v, "mimeType") != "application/x-hello" || field(v, "type") != float64(1) || field(v, "expiration") == nil {
				t.Fatalf("stat after chgm/chtype/deleteAfterDays: %v", v)
			}
			if got, _ := e.read("photos", "a/b.txt"); got != "hello" {
				t.Fatalf("chgm changed the content: %q", got)
			}
			if status, v := e.call(sign, alice, "POST", "/delete/"+entry("photos", "a/b.txt"), ""); status != 200 {
				t.Fatalf("delete: %d %v", status, v)
			}
			if status, _ := e.call(sign, alice, "POST", "/delete/"+entry("photos", "a/b.txt"), ""); status != rs.StatusNoEntry {
				t.Fatalf("second delete: %d", status)
			}
			// A new object under the old key starts without the old metadata.
			e.object("photos", "a/b.txt", "again")
			if _, v = e.call(sign, alice, "POST", "/stat/"+entry("photos", "a/b.txt"), ""); field(v, "type") != float64(0) || field(v, "expiration") != nil {
				t.Fatalf("stat of a new object: %v", v)
			}
			// Everything else goes to the next handler.
			if status, _ := e.call(sign, alice, "GET", "/v1/whoami", ""); status != http.StatusTeapot {
				t.Fatalf("other path: %d", status)
			}
		})
	}
}

func TestMoveCopyForce(t *testing.T) {
	e := newEnv(t, nil)
	e.object("photos", "src.txt", "source")
	e.object("photos", "dst.txt", "old")
	sign := signers["qiniu"]
	cases := []struct {
		op, src, dst string
		force        string
		want         int
		dstHas       string // content at dst afterwards ("" = unchanged check skipped)
		srcGone      bool
	}{
		{"copy", "src.txt", "dst.txt", "", rs.StatusFileExists, "old", false},
		{"copy", "src.txt", "dst.txt", "/force/false", rs.StatusFileExists, "old", false},
		{"move", "src.txt", "dst.txt", "", rs.StatusFileExists, "old", false},
		{"copy", "src.txt", "dst.txt", "/force/true", 200, "source", false},
		{"copy", "src.txt", "copy2.txt", "", 200, "source", false},
		{"move", "copy2.txt", "dst.txt", "/force/true", 200, "source", true},
		{"move", "src.txt", "moved/new.txt", "", 200, "source", true},
		{"move", "src.txt", "x.txt", "", rs.StatusNoEntry, "", false},
		{"copy", "dst.txt", "dst.txt", "", rs.StatusFileExists, "source", false},
		{"move", "dst.txt", "dst.txt", "/force/true", 200, "source", false},
		{"copy", "dst.txt", "y.txt", "/force/maybe", 400, "", false},
	}
	for _, c := range cases {
		path := "/" + c.op + "/" + entry("photos", c.src) + "/" + entry("photos", c.dst) + c.force
		status, v := e.call(sign, alice, "POST", path, "")
		if status != c.want {
			t.Fatalf("%s %s → %s%s: %d %v, want %d", c.op, c.src, c.dst, c.force, status, v, c.want)
		}
		if c.dstHas != "" {
			if got, _ := e.read("photos", c.dst); got != c.dstHas {
				t.Fatalf("%s %s → %s%s: dst holds %q, want %q", c.op, c.src, c.dst, c.force, got, c.dstHas)
			}
		}
		if _, ok := e.read("photos", c.src); ok == c.srcGone && c.want == 200 {
			t.Fatalf("%s %s → %s: source present %v", c.op, c.src, c.dst, ok)
		}
	}
	// Across the caller's buckets, with the MIME type kept; never into
	// another account's bucket.
	e.object("photos", "p.png", "\x89PNG\r\n\x1a\nxxxx")
	if status, v := e.call(sign, alice, "POST", "/copy/"+entry("photos", "p.png")+"/"+entry("backup", "p.png"), ""); status != 200 {
		t.Fatalf("copy across buckets: %d %v", status, v)
	}
	if _, v := e.call(sign, alice, "POST", "/stat/"+entry("backup", "p.png"), ""); str(v, "mimeType") != "image/png" {
		t.Fatalf("copied mime: %v", v)
	}
	if status, _ := e.call(sign, alice, "POST", "/copy/"+entry("photos", "p.png")+"/"+entry("bobs", "p.png"), ""); status != 403 {
		t.Fatalf("copy into bob's bucket: %d", status)
	}
}

func TestBatchMixed(t *testing.T) {
	e := newEnv(t, nil)
	e.object("photos", "a.txt", "A")
	e.object("photos", "b.txt", "B")
	for name, sign := range signers {
		t.Run(name, func(t *testing.T) {
			ops := url.Values{"op": {
				"/stat/" + entry("photos", "a.txt"),
				"/copy/" + entry("photos", "a.txt") + "/" + entry("photos", "c-"+name+".txt"),
				"/stat/" + entry("photos", "missing.txt"),
				"/copy/" + entry("photos", "a.txt") + "/" + entry("photos", "b.txt"),
				"/chtype/" + entry("photos", "a.txt") + "/type/2",
				"/delete/" + entry("photos", "c-"+name+".txt"),
				"/stat/" + entry("bobs", "x"),
				"/frobnicate/" + entry("photos", "a.txt"),
			}}
			status, v := e.call(sign, alice, "POST", "/batch", ops.Encode())
			if status != rs.StatusPartial {
				t.Fatalf("batch: %d %v, want 298", status, v)
			}
			arr, _ := v.([]any)
			want := []int{200, 200, rs.StatusNoEntry, rs.StatusFileExists, 200, 200, 403, 400}
			if len(arr) != len(want) {
				t.Fatalf("batch reply %v", v)
			}
			for i, w := range want {
				if got := field(arr[i], "code"); got != float64(w) {
					t.Errorf("op %d: code %v, want %d (%v)", i, got, w, arr[i])
				}
			}
			if d := field(arr[0], "data"); field(d, "fsize") != float64(1) {
				t.Errorf("stat data %v", d)
			}
			if d := field(arr[2], "data"); str(d, "error") == "" {
				t.Errorf("failed op without error: %v", arr[2])
			}
			if _, ok := e.read("photos", "c-"+name+".txt"); ok {
				t.Error("the batch's delete did not run after its copy")
			}
			// All succeed: 200.
			ok := url.Values{"op": {"/stat/" + entry("photos", "a.txt"), "/stat/" + entry("photos", "b.txt")}}
			if status, v := e.call(sign, alice, "POST", "/batch", ok.Encode()); status != 200 {
				t.Fatalf("all-ok batch: %d %v", status, v)
			}
		})
	}
	if status, _ := e.call(signers["qbox"], alice, "POST", "/batch", ""); status != 400 {
		t.Fatalf("empty batch: %d", status)
	}
	// A QBox signature covers the form body: a changed body is refused.
	req, _ := http.NewRequest("POST", e.api.URL+"/batch", strings.NewReader("op=/delete/"+entry("photos", "a.txt")))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	accountstest.SignQBox(req, alice, "op=/stat/"+entry("photos", "a.txt"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("tampered batch body: %d", resp.StatusCode)
	}
	if _, ok := e.read("photos", "a.txt"); !ok {
		t.Fatal("the tampered batch deleted a.txt")
	}
}

// list v1 pages through 2 500 objects with the marker the server hands
// out, every key once, in order; prefix and delimiter roll up directories.
func TestListPaging(t *testing.T) {
	e := newEnv(t, nil)
	var want []string
	for i := range 2500 {
		k := fmt.Sprintf("k/%04d", i)
		e.object("photos", k, "x")
		want = append(want, k)
	}
	for _, k := range []string{"d/1/a", "d/1/b", "d/2/a", "d/3", "e/a"} {
		e.object("photos", k, "y")
	}
	for name, sign := range signers {
		t.Run(name, func(t *testing.T) {
			var got []string
			marker, pages := "", 0
			for {
				q := url.Values{"bucket": {"photos"}, "prefix": {"k/"}, "limit": {"1000"}}
				if marker != "" {
					q.Set("marker", marker)
				}
				status, v := e.call(sign, alice, "POST", "/list?"+q.Encode(), "")
				if status != 200 {
					t.Fatalf("list: %d %v", status, v)
				}
				pages++
				items, _ := field(v, "items").([]any)
				for _, it := range items {
					got = append(got, str(it, "key"))
					if str(it, "hash") == "" || field(it, "fsize") != float64(1) {
						t.Fatalf("item %v", it)
					}
				}
				marker = str(v, "marker")
				if marker == "" {
					break
				}
				if pages > 10 {
					t.Fatal("marker never ends")
				}
			}
			if pages != 3 || strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("%d pages, %d keys (first %v)", pages, len(got), got[:min(3, len(got))])
			}
			// Delimiter: "d/" holds 1/ and 2/ (prefixes) and d/3 (an item);
			// limit 1 pages through them one at a time.
			var seen []string
			marker = ""
			for range 10 {
				q := url.Values{"bucket": {"photos"}, "prefix": {"d/"}, "delimiter": {"/"}, "limit": {"1"}, "marker": {marker}}
				status, v := e.call(sign, alice, "GET", "/list?"+q.Encode(), "")
				if status != 200 {
					t.Fatalf("list: %d %v", status, v)
				}
				for _, p := range field(v, "commonPrefixes").([]any) {
					seen = append(seen, p.(string))
				}
				for _, it := range field(v, "items").([]any) {
					seen = append(seen, str(it, "key"))
				}
				if marker = str(v, "marker"); marker == "" {
					break
				}
			}
			if strings.Join(seen, ",") != "d/1/,d/2/,d/3" {
				t.Fatalf("delimiter listing: %v", seen)
			}
		})
	}
	for _, q := range []string{"bucket=bobs", "bucket=nope", "bucket=photos&marker=@@", "bucket=photos&limit=x"} {
		if status, v := e.call(signers["qiniu"], alice, "POST", "/list?"+q, ""); status == 200 {
			t.Errorf("list %s: %d %v", q, status, v)
		}
	}
}

func TestFetchThroughGuard(t *testing.T) {
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "fetched body")
	}))
	defer src.Close()
	sign := signers["qiniu"]
	// The default guard refuses loopback, as mirrors do.
	e := newEnv(t, nil)
	status, v := e.call(sign, alice, "POST", "/fetch/"+enc(src.URL+"/f.txt")+"/to/"+entry("photos", "f.txt"), "")
	if status != 403 || !strings.Contains(str(v, "error"), "not a public address") {
		t.Fatalf("fetch from loopback: %d %v", status, v)
	}
	if _, ok := e.read("photos", "f.txt"); ok {
		t.Fatal("a refused fetch stored something")
	}
	// Allowed (development), it streams the body into the bucket.
	e = newEnv(t, func(c *rs.Config) { c.AllowPrivateFetch = true })
	status, v = e.call(sign, alice, "POST", "/fetch/"+enc(src.URL+"/f.txt")+"/to/"+entry("photos", "f.txt"), "")
	if status != 200 || str(v, "key") != "f.txt" || field(v, "fsize") != float64(12) || str(v, "hash") == "" {
		t.Fatalf("fetch: %d %v", status, v)
	}
	if got, _ := e.read("photos", "f.txt"); got != "fetched body" {
		t.Fatalf("fetched %q", got)
	}
	// A bare bucket: the key is the etag.
	status, v = e.call(sign, alice, "POST", "/fetch/"+enc(src.URL+"/f.txt")+"/to/"+enc("photos"), "")
	if status != 200 || str(v, "key") != str(v, "hash") {
		t.Fatalf("keyless fetch: %d %v", status, v)
	}
	for name, c := range map[string]struct {
		path string
		want int
	}{
		"source 404":     {"/fetch/" + enc(src.URL+"/missing") + "/to/" + entry("photos", "m"), 404},
		"not http":       {"/fetch/" + enc("file:///etc/passwd") + "/to/" + entry("photos", "m"), 400},
		"another bucket": {"/fetch/" + enc(src.URL+"/f.txt") + "/to/" + entry("bobs", "m"), 403},
		"no /to/":        {"/fetch/" + enc(src.URL), 400},
	} {
		if status, v := e.call(sign, alice, "POST", c.path, ""); status != c.want {
			t.Errorf("%s: %d %v, want %d", name, status, v, c.want)
		}
	}
}

// The region query answers this platform's addresses, as both SDK
// generations read them: every service, io (fetch, prefetch) included,
// at the host the client reached; io_src (downloads) at the bucket's
// domain at the router.
func TestRegionQuery(t *testing.T) {
	e := newEnv(t, nil)
	host := strings.TrimPrefix(e.api.URL, "http://")
	_, v := e.call(nil, alice, "GET", "/v4/query?ak="+alice.AccessKey+"&bucket=photos", "")
	hosts, _ := field(v, "hosts").([]any)
	if len(hosts) != 1 {
		t.Fatalf("v4: %v", v)
	}
	first := func(v any, svc string) string {
		d, _ := field(field(v, svc), "domains").([]any)
		if len(d) == 0 {
			return ""
		}
		return d[0].(string)
	}
	for _, svc := range []string{"up", "rs", "rsf", "api", "uc", "io"} {
		if got := first(hosts[0], svc); got != host {
			t.Errorf("v4 %s = %q, want %q", svc, got, host)
		}
	}
	if first(hosts[0], "io_src") != "photos.localhost:8080" || field(hosts[0], "ttl") == nil {
		t.Errorf("v4 io_src/ttl: %v", hosts[0])
	}
	_, v = e.call(nil, alice, "GET", "/v2/query?ak="+alice.AccessKey+"&bucket=photos", "")
	main := func(v any, svc, kind string) string {
		m, _ := field(field(field(v, svc), kind), "main").([]any)
		if len(m) == 0 {
			return ""
		}
		return m[0].(string)
	}
	if main(v, "up", "acc") != host || main(v, "rs", "acc") != host || main(v, "rsf", "acc") != host || main(v, "io", "src") != host {
		t.Fatalf("v2: %v", v)
	}
}

// Qiniu's Go SDK (v7.27, storagev2 StatObject) stats with GET, not POST:
// the read-only stat answers either method, the other ops POST only.
func TestStatByGet(t *testing.T) {
	e := newEnv(t, nil)
	e.object("photos", "g.txt", "hello")
	for name, sign := range signers {
		t.Run(name, func(t *testing.T) {
			status, v := e.call(sign, alice, "GET", "/stat/"+entry("photos", "g.txt"), "")
			if status != 200 || field(v, "fsize") != float64(5) {
				t.Fatalf("GET stat: %d %v", status, v)
			}
			if status, v := e.call(sign, alice, "GET", "/stat/"+entry("photos", "none"), ""); status != rs.StatusNoEntry {
				t.Fatalf("GET stat of a missing key: %d %v", status, v)
			}
			if status, v := e.call(sign, alice, "GET", "/delete/"+entry("photos", "g.txt"), ""); status != http.StatusMethodNotAllowed {
				t.Fatalf("GET delete: %d %v", status, v)
			}
			if _, ok := e.read("photos", "g.txt"); !ok {
				t.Fatal("a GET deleted the object")
			}
		})
	}
}

// chgm with x-qn-meta-* pairs and no mime (the Go SDK's ChangeMeta,
// URIChangeMeta) is a valid call: the metadata is accepted and not stored
// (docs/api.md), the object and its type stay; a missing object is 612.
func TestChgmMetaOnly(t *testing.T) {
	e := newEnv(t, nil)
	e.object("photos", "m.txt", "meta")
	sign := signers["qiniu"]
	_, before := e.call(sign, alice, "POST", "/stat/"+entry("photos", "m.txt"), "")
	path := "/chgm/" + entry("photos", "m.txt") + "/x-qn-meta-color/" + enc("blue")
	if status, v := e.call(sign, alice, "POST", path, ""); status != 200 {
		t.Fatalf("chgm meta only: %d %v", status, v)
	}
	if _, after := e.call(sign, alice, "POST", "/stat/"+entry("photos", "m.txt"), ""); str(after, "mimeType") != str(before, "mimeType") || str(after, "hash") != str(before, "hash") {
		t.Fatalf("stat before %v, after %v", before, after)
	}
	if status, v := e.call(sign, alice, "POST", "/chgm/"+entry("photos", "none.txt")+"/x-qn-meta-color/"+enc("blue"), ""); status != rs.StatusNoEntry {
		t.Fatalf("chgm meta of a missing object: %d %v", status, v)
	}
	ops := url.Values{"op": {path}}
	if status, v := e.call(sign, alice, "POST", "/batch", ops.Encode()); status != 200 {
		t.Fatalf("batch chgm meta only: %d %v", status, v)
	}
}

// Qiniu's Go SDK (v7.11 BucketManager.Fetch and FetchWithoutKey) signs
// fetch with QBox and POSTs it with neither a body nor a Content-Type: the
// signature then covers everything the request carries, so it is served.
// A body without a Content-Type is still refused: QBox does not sign it.
func TestFetchQBoxWithoutContentType(t *testing.T) {
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "fetched body")
	}))
	defer src.Close()
	e := newEnv(t, func(c *rs.Config) { c.AllowPrivateFetch = true })
	send := func(path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("POST", e.api.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body == "" {
			req.Body = nil
			req.ContentLength = 0
		}
		accountstest.SignQBox(req, alice, "")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	path := "/fetch/" + enc(src.URL+"/f.txt") + "/to/" + entry("photos", "f.txt")
	if status, body := send(path, ""); status != 200 || !strings.Contains(body, `"key":"f.txt"`) {
		t.Fatalf("QBox fetch without Content-Type: %d %s", status, body)
	}
	if got, _ := e.read("photos", "f.txt"); got != "fetched body" {
		t.Fatalf("fetched %q", got)
	}
	if status, body := send("/delete/"+entry("photos", "f.txt"), "x=1"); status == 200 {
		t.Fatalf("QBox POST with an unsigned body and no Content-Type: %d %s", status, body)
	}
	if _, ok := e.read("photos", "f.txt"); !ok {
		t.Fatal("a request with an unsigned body deleted f.txt")
	}
}
