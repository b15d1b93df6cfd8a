package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/origin/local"
)

func TestBuckets(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	var b dora.Bucket
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets",
		map[string]any{"name": "photos", "domains": []string{"IMG.example.com", "img.example.com"}, "mirror": "https://origin.example.com/"}, &b)
	if b.Owner != alice.ID || len(b.Domains) != 1 || b.Domains[0] != "img.example.com" || b.Mirror == "" {
		t.Fatalf("bucket %+v", b)
	}
	if kv, err := e.st.Get(context.Background(), store.DomainKey("img.example.com")); err != nil || string(kv.Value) != "photos" {
		t.Fatalf("domain key: %v %q", err, kv.Value)
	}

	cases := []struct {
		name string
		body map[string]any
		want int
	}{
		{"bad name", map[string]any{"name": "Bad_Name"}, http.StatusBadRequest},
		{"too short", map[string]any{"name": "ab"}, http.StatusBadRequest},
		{"bad domain", map[string]any{"name": "docs", "domains": []string{"http://x.com"}}, http.StatusBadRequest},
		{"bad mirror", map[string]any{"name": "docs", "mirror": "ftp://x"}, http.StatusBadRequest},
		{"name taken", map[string]any{"name": "photos"}, http.StatusConflict},
		{"domain taken", map[string]any{"name": "videos", "domains": []string{"new.example.com", "img.example.com"}}, http.StatusConflict},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.req(bob, "POST", "/v1/buckets", tc.body)
			if r.Status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.want, r.Body)
			}
		})
	}
	// Nothing half-created: the failed "videos" left neither its bucket nor its free domain.
	for _, k := range []string{store.BucketKey("videos"), store.DomainKey("new.example.com")} {
		if _, err := e.st.Get(context.Background(), k); err == nil {
			t.Errorf("%s exists after a failed create", k)
		}
	}

	var list []dora.Bucket
	e.must(http.StatusOK, bob, "GET", "/v1/buckets", nil, &list)
	if len(list) != 0 {
		t.Errorf("bob sees %+v", list)
	}
	e.must(http.StatusOK, alice, "GET", "/v1/buckets", nil, &list)
	if len(list) != 1 {
		t.Errorf("alice sees %+v", list)
	}
	e.must(http.StatusOK, alice, "GET", "/v1/buckets/photos", nil, nil)
	e.must(http.StatusForbidden, bob, "GET", "/v1/buckets/photos", nil, nil)
	e.must(http.StatusNotFound, bob, "GET", "/v1/buckets/nothere", nil, nil)

	e.must(http.StatusCreated, bob, "POST", "/v1/buckets", map[string]any{"name": "videos"}, nil)
	e.must(http.StatusConflict, bob, "POST", "/v1/buckets/videos/domains", map[string]any{"domain": "img.example.com"}, nil)
	e.must(http.StatusForbidden, bob, "POST", "/v1/buckets/photos/domains", map[string]any{"domain": "x.example.com"}, nil)
	e.must(http.StatusOK, alice, "POST", "/v1/buckets/photos/domains", map[string]any{"domain": "cdn.example.com"}, &b)
	if len(b.Domains) != 2 {
		t.Fatalf("domains %v", b.Domains)
	}

	// Delete: 409 while it holds objects, then 204 and the domains are free.
	e.must(http.StatusOK, alice, "PUT", "/v1/objects/photos/a.txt", []byte("hi"), nil)
	e.must(http.StatusConflict, alice, "DELETE", "/v1/buckets/photos", nil, nil)
	e.must(http.StatusForbidden, bob, "DELETE", "/v1/buckets/photos", nil, nil)
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/objects/photos/a.txt", nil, nil)
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/buckets/photos", nil, nil)
	kvs, err := e.st.List(context.Background(), store.PrefixDomains)
	if err != nil || len(kvs) != 0 {
		t.Fatalf("domains left: %v %v", kvs, err)
	}
	e.must(http.StatusOK, bob, "POST", "/v1/buckets/videos/domains", map[string]any{"domain": "img.example.com"}, nil)
}

func TestObjects(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "photos"}, nil)

	key := "dir/a b/ü.txt"
	path := "/v1/objects/photos/" + escapeKey(key)
	var obj origin.Object
	e.must(http.StatusOK, alice, "PUT", path, []byte("hello"), &obj)
	if obj.Key != key || obj.Size != 5 || obj.Bucket != "photos" {
		t.Fatalf("put = %+v", obj)
	}
	r := e.must(http.StatusOK, alice, "GET", path, nil, nil)
	etag, _, err := local.ETag(strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Body) != "hello" || r.Header.Get("ETag") != `"`+etag+`"` || r.Header.Get("Content-Length") != "5" || obj.ETag != etag {
		t.Fatalf("get = %q %v", r.Body, r.Header)
	}
	e.must(http.StatusOK, alice, "GET", "/v1/stat/photos/"+escapeKey(key), nil, &obj)
	if obj.Size != 5 {
		t.Fatalf("stat = %+v", obj)
	}

	// Content-Type is recorded unless octet-stream.
	e.must(http.StatusOK, alice, "PUT", "/v1/objects/photos/page", typed{"text/html", "<p>"}, &obj)
	if obj.MimeType != "text/html" {
		t.Errorf("mime %q", obj.MimeType)
	}

	// A JSON upload is an object like any other: its body is not signed
	// (the etag checks it), nor capped like a JSON request.
	e.must(http.StatusOK, alice, "PUT", "/v1/objects/photos/data.json", typed{"application/json", `{"a":1}`}, &obj)
	if obj.MimeType != "application/json" || obj.Size != int64(len(`{"a":1}`)) {
		t.Errorf("json upload = %+v", obj)
	}
	big := typed{"application/json", `"` + strings.Repeat("x", MaxJSONBytes) + `"`}
	e.must(http.StatusOK, alice, "PUT", "/v1/objects/photos/data.json", big, &obj)
	if obj.Size != int64(len(big.data)) {
		t.Errorf("big json upload = %+v", obj)
	}

	// Insert-only.
	r = e.reqWith(alice, "PUT", path, []byte("again"), func(r *http.Request) { r.Header.Set("X-Dora-Insert-Only", "1") })
	if r.Status != http.StatusConflict {
		t.Fatalf("insert-only over an existing key: %d", r.Status)
	}

	var list struct {
		Items []origin.Object `json:"items"`
	}
	e.must(http.StatusOK, alice, "GET", "/v1/list/photos?prefix=dir/&limit=10", nil, &list)
	if len(list.Items) != 1 || list.Items[0].Key != key {
		t.Fatalf("list = %+v", list)
	}
	e.must(http.StatusOK, alice, "GET", "/v1/list/photos", nil, &list)
	if len(list.Items) != 3 {
		t.Fatalf("list all = %+v", list)
	}
	e.must(http.StatusBadRequest, alice, "GET", "/v1/list/photos?limit=0", nil, nil)
	e.must(http.StatusBadRequest, alice, "GET", "/v1/list/photos?limit=1001", nil, nil)

	badKeys := []struct{ name, path string }{
		{"dot segment", "/v1/objects/photos/a/%2E/b"},
		{"dotdot segment", "/v1/objects/photos/a/%2E%2E/b"},
		{"nul", "/v1/objects/photos/a%00b"},
		{"too long", "/v1/objects/photos/" + strings.Repeat("k", dora.MaxKeyBytes+1)},
		{"bad utf8", "/v1/objects/photos/%FF%FE"},
	}
	for _, bk := range badKeys {
		t.Run(bk.name, func(t *testing.T) {
			if r := e.req(alice, "PUT", bk.path, []byte("x")); r.Status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", r.Status, r.Body)
			}
		})
	}

	// Another account's bucket, a missing bucket, a missing object.
	e.must(http.StatusForbidden, bob, "PUT", path, []byte("x"), nil)
	e.must(http.StatusForbidden, bob, "GET", path, nil, nil)
	e.must(http.StatusForbidden, bob, "GET", "/v1/list/photos", nil, nil)
	e.must(http.StatusNotFound, alice, "PUT", "/v1/objects/nobucket/k", []byte("x"), nil)
	e.must(http.StatusNotFound, alice, "GET", "/v1/objects/photos/missing", nil, nil)
	e.must(http.StatusNotFound, alice, "GET", "/v1/stat/photos/missing", nil, nil)
	e.must(http.StatusNoContent, alice, "DELETE", path, nil, nil)
	e.must(http.StatusNotFound, alice, "DELETE", path, nil, nil)
}

func escapeKey(key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// A bucket may bind only a host name of its own: not an address the router
// answers to, not localhost, not a name under the platform's suffix that
// belongs to another account's bucket.
func TestDomainBindingRefusesShadowingNames(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DomainSuffix = "dora.example.net" })
	alice := e.user("alice", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "mine"}, nil)
	for _, d := range []string{
		"127.0.0.1", "10.1.2.3", "::1", "[::1]", "fe80::1", "127.1", "0x7f.1",
		"localhost", "LOCALHOST.", "victim.localhost", "a.b.localhost",
		"dora.example.net", "victim.dora.example.net", "Victim.Dora.Example.Net.",
		"intranet",
	} {
		r := e.req(alice, "POST", "/v1/buckets/mine/domains", map[string]any{"domain": d})
		if r.Status != http.StatusBadRequest {
			t.Errorf("bind %q: %d %s, want 400", d, r.Status, r.Body)
		}
		r = e.req(alice, "POST", "/v1/buckets", map[string]any{"name": "other", "domains": []string{d}})
		if r.Status != http.StatusBadRequest {
			t.Errorf("create with %q: %d %s, want 400", d, r.Status, r.Body)
		}
	}
	if kvs, err := e.st.List(context.Background(), store.PrefixDomains); err != nil || len(kvs) != 0 {
		t.Fatalf("domains bound: %v %v", kvs, err)
	}
	for _, d := range []string{"img.example.com", "x.localhost.example.com", "dora.example.net.evil.com", "cdn1.example.io"} {
		e.must(http.StatusOK, alice, "POST", "/v1/buckets/mine/domains", map[string]any{"domain": d}, nil)
	}
	// The default suffix is localhost.
	e2 := newEnv(t)
	bob := e2.user("bob", 0)
	r := e2.req(bob, "POST", "/v1/buckets", map[string]any{"name": "b1", "domains": []string{"victim.localhost"}})
	if r.Status != http.StatusBadRequest {
		t.Fatalf("victim.localhost with the default suffix: %d %s", r.Status, r.Body)
	}
}

// A mirror may not point at the platform's own network unless the
// operator allows it (development).
func TestMirrorRefusesPrivateAddresses(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	bad := []string{
		"http://127.0.0.1:9000/", "http://127.0.0.1/", "http://localhost:8080/", "http://LocalHost./x/",
		"http://db.localhost/", "http://10.0.0.5/", "http://172.16.1.1/", "http://192.168.1.1/",
		"http://169.254.169.254/latest/meta-data/", "http://0.0.0.0/", "http://[::1]:80/", "http://[::]/",
		"http://[fe80::1]/", "http://[fd00::1]/", "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/",
		"http://127.1/", "http://2130706433/", "http://0x7f.0x1/",
	}
	for i, m := range bad {
		r := e.req(alice, "POST", "/v1/buckets", map[string]any{"name": fmt.Sprintf("mirror%d", i), "mirror": m})
		if r.Status != http.StatusBadRequest || !strings.Contains(r.errMsg(), "mirror") {
			t.Errorf("mirror %q: %d %s, want 400", m, r.Status, r.Body)
		}
	}
	for i, m := range []string{"https://origin.example.com/", "http://93.184.216.34/files/", "http://[2606:4700::1111]/"} {
		e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": fmt.Sprintf("okay%d", i), "mirror": m}, nil)
	}
	dev := newEnv(t, func(c *Config) { c.AllowPrivateMirror = true })
	bob := dev.user("bob", 0)
	dev.must(http.StatusCreated, bob, "POST", "/v1/buckets", map[string]any{"name": "devm", "mirror": "http://127.0.0.1:9000/"}, nil)
	// Link-local and metadata addresses stay refused with private allowed.
	for i, m := range []string{"http://169.254.169.254/latest/", "http://[fe80::1]/", "http://100.100.100.200/"} {
		r := dev.req(bob, "POST", "/v1/buckets", map[string]any{"name": fmt.Sprintf("meta%d", i), "mirror": m})
		if r.Status != http.StatusBadRequest || !strings.Contains(r.errMsg(), "metadata") {
			t.Errorf("dev mirror %q: %d %s, want 400", m, r.Status, r.Body)
		}
	}
}
