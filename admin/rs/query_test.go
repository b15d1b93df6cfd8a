package rs_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/doraproject/dora/admin/rs"
)

// queryHost is the first domain of service svc in the first region of a
// /v3/query or /v4/query answer.
func queryHost(v any, svc string) string {
	hosts, _ := field(v, "hosts").([]any)
	if len(hosts) == 0 {
		return ""
	}
	d, _ := field(field(hosts[0], svc), "domains").([]any)
	if len(d) == 0 {
		return ""
	}
	s, _ := d[0].(string)
	return s
}

// /v3/query answers as /v4/query does; io_src is the bucket's domain
// under the configured suffix with the router's port, and IOHost itself
// for a name that is no bucket name.
func TestRegionQueryDownloadHost(t *testing.T) {
	for name, c := range map[string]struct {
		mod         func(*rs.Config)
		query, want string
	}{
		"v3":                  {nil, "/v3/query?ak=x&bucket=photos", "photos.localhost:8080"},
		"suffix":              {func(c *rs.Config) { c.DomainSuffix = "dora.example.com." }, "/v4/query?ak=x&bucket=photos", "photos.dora.example.com:8080"},
		"router without port": {func(c *rs.Config) { c.IOHost = "cdn.example.com" }, "/v4/query?ak=x&bucket=photos", "photos.localhost"},
		"no bucket":           {nil, "/v4/query?ak=x", "io.test:8080"},
		"not a bucket name":   {nil, "/v4/query?ak=x&bucket=a.b", "io.test:8080"},
		// Without a router host: the bucket's domain on port 80, and for no
		// bucket the host the client reached ("self"), never an empty domain.
		"no router host":            {func(c *rs.Config) { c.IOHost = "" }, "/v4/query?ak=x&bucket=photos", "photos.localhost"},
		"no router host, no bucket": {func(c *rs.Config) { c.IOHost = "" }, "/v4/query?ak=x", "self"},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, c.mod)
			host := strings.TrimPrefix(e.api.URL, "http://")
			if c.want == "self" {
				c.want = host
			}
			status, v := e.call(nil, alice, "GET", c.query, "")
			if status != http.StatusOK || queryHost(v, "io_src") != c.want || queryHost(v, "io") != host || queryHost(v, "rs") != host {
				t.Fatalf("%s: %d %v, want io_src %s and io, rs %s", c.query, status, v, c.want, host)
			}
		})
	}
}

// uc GET /regions (signed; the Go SDK's Pfop and Prefop ask it when no
// region is configured) names this platform's one region, every service
// at the host the client reached.
func TestRegions(t *testing.T) {
	e := newEnv(t, func(c *rs.Config) { c.Region = "z9" })
	host := strings.TrimPrefix(e.api.URL, "http://")
	for name, sign := range signers {
		t.Run(name, func(t *testing.T) {
			status, v := e.call(sign, alice, "GET", "/regions", "")
			regions, _ := field(v, "regions").([]any)
			if status != http.StatusOK || len(regions) != 1 || str(regions[0], "id") != "z9" || field(regions[0], "ttl") == nil {
				t.Fatalf("/regions: %d %v", status, v)
			}
			for _, svc := range []string{"api", "io", "up", "rs", "rsf", "uc"} {
				d, _ := field(field(regions[0], svc), "domains").([]any)
				if len(d) != 1 || d[0] != host {
					t.Errorf("/regions %s: %v, want [%s]", svc, d, host)
				}
			}
		})
	}
	if status, v := e.call(nil, alice, "GET", "/regions", ""); status != http.StatusUnauthorized {
		t.Fatalf("unsigned /regions: %d %v, want 401", status, v)
	}
}

// GET /buckets?apiVersion=v4 (BucketManager.BucketsV4) pages through the
// caller's buckets by name; plain /buckets still answers the names.
func TestBucketsV4(t *testing.T) {
	e := newEnv(t, nil)
	sign := signers["qiniu"]
	status, v := e.call(sign, alice, "GET", "/buckets?apiVersion=v4&limit=1", "")
	bs, _ := field(v, "buckets").([]any)
	if status != http.StatusOK || len(bs) != 1 || str(bs[0], "name") != "backup" || field(v, "is_truncated") != true || str(v, "next_marker") != "backup" ||
		str(bs[0], "region") == "" || field(bs[0], "private") != false || str(bs[0], "ctime") == "" {
		t.Fatalf("first page: %d %v", status, v)
	}
	status, v = e.call(sign, alice, "GET", "/buckets?apiVersion=v4&limit=1&marker=backup", "")
	bs, _ = field(v, "buckets").([]any)
	if status != http.StatusOK || len(bs) != 1 || str(bs[0], "name") != "photos" || field(v, "is_truncated") != false || str(v, "next_marker") != "" {
		t.Fatalf("second page: %d %v", status, v)
	}
	status, v = e.call(sign, alice, "GET", "/buckets?apiVersion=v4&region=elsewhere", "")
	if bs, _ := field(v, "buckets").([]any); status != http.StatusOK || len(bs) != 0 {
		t.Fatalf("another region: %d %v", status, v)
	}
	if status, v := e.call(sign, alice, "GET", "/buckets?apiVersion=v4&limit=0", ""); status != http.StatusBadRequest {
		t.Fatalf("limit 0: %d %v", status, v)
	}
	if status, v := e.call(sign, alice, "GET", "/buckets", ""); status != http.StatusOK || len(v.([]any)) != 2 {
		t.Fatalf("/buckets: %d %v", status, v)
	}
}

// Qiniu's calls Dora does not serve answer 501 naming the call, signed or
// not; paths that are not theirs (the registry's /v2/<name>/..., the
// resumable uploads' /buckets/<bucket>/objects/...) go on to the next
// handler.
func TestUnservedAPIs(t *testing.T) {
	e := newEnv(t, nil)
	for path, call := range map[string]string{
		"/prefetch/" + entry("photos", "a"):                         "Prefetch",
		"/sisyphus/fetch":                                           "AsyncFetch",
		"/sisyphus/fetch?id=x":                                      "AsyncFetch",
		"/chstatus/" + entry("photos", "a") + "/status/1":           "UpdateObjectStatus",
		"/restoreAr/" + entry("photos", "a") + "/freezeAfterDays/1": "RestoreAr",
		"/v2/list?bucket=photos":                                    "list v2",
		"/v2/domains?tbl=photos":                                    "ListBucketDomains",
		"/v3/domains?tbl=photos":                                    "ListBucketDomains",
		"/v2/bucketInfo?bucket=photos":                              "GetBucketInfo",
		"/image/photos/from/" + enc("http://example.com"):           "SetImage",
		"/mkbucketv3/new/region/z0":                                 "CreateBucket",
		"/drop/photos":                                              "DropBucket",
		"/private?bucket=photos&private=1":                          "MakeBucketPrivate",
		"/getbucketquota/photos":                                    "GetBucketQuota",
		"/lifecycle/" + entry("photos", "a") + "/toIAAfterDays/1":   "lifecycle",
	} {
		for _, sign := range []signer{nil, signers["qiniu"]} {
			status, v := e.call(sign, alice, "POST", path, "")
			if status != http.StatusNotImplemented || !strings.Contains(str(v, "error"), call) || !strings.Contains(str(v, "error"), "not served by Dora") {
				t.Errorf("%s: %d %v, want 501 naming %s", path, status, v, call)
			}
		}
	}
	for _, path := range []string{"/v2/", "/v2/list/manifests/latest", "/v2/domains/blobs/sha256:00", "/buckets/photos/objects/a/uploads", "/privates", "/v1/buckets"} {
		if status, v := e.call(nil, alice, "POST", path, ""); status != http.StatusTeapot {
			t.Errorf("%s: %d %v, want the next handler's 418", path, status, v)
		}
	}
}
