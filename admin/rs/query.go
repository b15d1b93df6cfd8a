package rs

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
)

// DefaultDomainSuffix is Config.DomainSuffix's default, the router's.
const DefaultDomainSuffix = "localhost"

// queryTTL is the lifetime, in seconds, the region query and /regions
// give their answers (the SDKs cache them that long).
const queryTTL = 86400

// queryVersion is the version of the region query path p (uc
// /v2/query, /v3/query, /v4/query), 0 for any other path.
func queryVersion(p string) int {
	switch p {
	case "/v2/query":
		return 2
	case "/v3/query":
		return 3
	case "/v4/query":
		return 4
	}
	return 0
}

// serveQuery answers the SDKs' region query (uc /v2/query, /v3/query and
// /v4/query, ?ak=&bucket=, unsigned) with this platform's own addresses.
// Every service the SDKs call by API, io included (Fetch and Prefetch go
// to the io host), is the host the client reached: the admin API. io_src,
// where the SDKs download from (the Go SDK's BucketManager.Get, other
// SDKs' source domain), is the bucket's own domain at the router
// (downloadHost). /v3/query has /v4/query's form.
func (h *Handler) serveQuery(w http.ResponseWriter, r *http.Request, version int) int {
	self := r.Host
	if version >= 3 {
		dom := func(host string) map[string]any { return map[string]any{"domains": []string{host}, "old": []string{}} }
		return writeJSON(w, http.StatusOK, map[string]any{"hosts": []map[string]any{{
			"region": h.cfg.Region, "ttl": queryTTL,
			"io": dom(self), "io_src": dom(h.downloadHost(r.URL.Query().Get("bucket"), self)),
			"up": dom(self), "uc": dom(self), "rs": dom(self), "rsf": dom(self), "api": dom(self),
		}}})
	}
	acc := func(host string) map[string]any {
		return map[string]any{"acc": map[string]any{"main": []string{host}, "backup": []string{}}}
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"region": h.cfg.Region, "ttl": queryTTL,
		"io": map[string]any{"src": map[string]any{"main": []string{self}}},
		"up": map[string]any{
			"acc": map[string]any{"main": []string{self}, "backup": []string{}},
			"src": map[string]any{"main": []string{self}, "backup": []string{}},
		},
		"uc": acc(self), "rs": acc(self), "rsf": acc(self), "api": acc(self),
	})
}

// downloadHost is the host[:port] where the router serves bucket:
// <bucket>.<DomainSuffix>, with IOHost's port when IOHost names one (none:
// the routers answer bucket domains on port 80, as behind a production
// load balancer). A name that is no bucket name (so no DNS label) gets
// IOHost itself, or self, the host the client reached, without one: never
// an empty domain, which an SDK would make URLs of.
func (h *Handler) downloadHost(bucket, self string) string {
	if dora.ValidateBucketName(bucket) != nil {
		if h.cfg.IOHost == "" {
			return self
		}
		return h.cfg.IOHost
	}
	host := bucket + "." + strings.TrimSuffix(h.cfg.DomainSuffix, ".")
	if _, port, err := net.SplitHostPort(h.cfg.IOHost); err == nil && port != "" {
		host = net.JoinHostPort(host, port)
	}
	return host
}

// serveRegions answers uc GET /regions (signed), which the Go SDK asks
// for the api host of Pfop and Prefop when no region is configured: the
// one region, every service at the host the client reached.
func (h *Handler) serveRegions(w http.ResponseWriter, r *http.Request) int {
	self := r.Host
	dom := func() map[string]any { return map[string]any{"domains": []string{self}, "old": []string{}} }
	return writeJSON(w, http.StatusOK, map[string]any{"regions": []map[string]any{{
		"id": h.cfg.Region, "description": h.cfg.Region, "ttl": queryTTL,
		"io": dom(), "up": dom(), "uc": dom(), "rs": dom(), "rsf": dom(), "api": dom(),
	}}})
}

// serveBucketsV4 answers GET /buckets?apiVersion=v4[&region=&limit=&marker=]
// (the Go SDK's BucketManager.BucketsV4): the caller's buckets by name,
// a page at a time.
func (h *Handler) serveBucketsV4(w http.ResponseWriter, ctx context.Context, acct dora.Account, q url.Values) int {
	limit := MaxListLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			return writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be 1..%d", MaxListLimit))
		}
		limit = n
	}
	if region := q.Get("region"); region != "" && region != h.cfg.Region {
		return writeJSON(w, http.StatusOK, map[string]any{"next_marker": "", "is_truncated": false, "buckets": []any{}})
	}
	kvs, err := h.cfg.Store.List(ctx, store.PrefixBuckets)
	if err != nil {
		return writeError(w, http.StatusServiceUnavailable, "metadata store: "+err.Error())
	}
	var mine []dora.Bucket
	for _, kv := range kvs {
		var b dora.Bucket
		if json.Unmarshal(kv.Value, &b) == nil && b.Owner == acct.ID && b.Name > q.Get("marker") {
			mine = append(mine, b)
		}
	}
	sort.Slice(mine, func(i, j int) bool { return mine[i].Name < mine[j].Name })
	next := ""
	if len(mine) > limit {
		mine = mine[:limit]
		next = mine[limit-1].Name
	}
	out := make([]map[string]any, len(mine))
	for i, b := range mine {
		out[i] = map[string]any{"name": b.Name, "region": h.cfg.Region, "private": b.Private, "ctime": b.Created.UTC().Format(time.RFC3339)}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"next_marker": next, "is_truncated": next != "", "buckets": out})
}

// unservedAPI names the SDK call of path p when it is one of Qiniu's rs,
// rsf, uc, io or api paths that Dora does not serve (by exact path, or
// path prefix for those ending in "/"), else "". Such a request is
// answered 501 (which the SDKs do not retry) naming the call
// (serveUnserved), rather than the admin API's 404 or, under /v2/, the
// registry's 401.
func unservedAPI(p string) string {
	for _, u := range [...]struct{ path, call string }{
		{"/prefetch/", "prefetch (BucketManager.Prefetch)"},
		{"/sisyphus/fetch", "asynchronous fetch (BucketManager.AsyncFetch)"},
		{"/chstatus/", "chstatus (BucketManager.UpdateObjectStatus)"},
		{"/restoreAr/", "restoreAr (BucketManager.RestoreAr)"},
		{"/lifecycle/", "an object's lifecycle transitions (/lifecycle; deleteAfterDays is served)"},
		{"/v2/list", "list v2 (v7.11's BucketManager.ListBucket; list v1, /list, is served)"},
		{"/image/", "bucket mirror settings (BucketManager.SetImage; a bucket's mirror is set when it is created, POST /v1/buckets)"},
		{"/unimage/", "bucket mirror settings (BucketManager.UnsetImage)"},
		{"/mkbucketv3/", "bucket creation (BucketManager.CreateBucket; qdoractl bucket create, POST /v1/buckets)"},
		{"/drop/", "bucket deletion (BucketManager.DropBucket; DELETE /v1/buckets/<name>)"},
		{"/v2/domains", "bucket domains (BucketManager.ListBucketDomains; GET /v1/buckets/<name>)"},
		{"/v3/domains", "bucket domains (BucketManager.ListBucketDomains; GET /v1/buckets/<name>)"},
		{"/v2/bucketInfo", "bucket info (BucketManager.GetBucketInfo; GET /v1/buckets/<name>)"},
		{"/v2/bucketInfos", "bucket infos (BucketManager.BucketInfosInRegion; GET /v1/buckets)"},
		{"/private", "bucket access settings (BucketManager.MakeBucketPrivate, MakeBucketPublic)"},
		{"/accessMode/", "bucket original protection (BucketManager.TurnOnBucketProtected)"},
		{"/noIndexPage", "bucket index page settings (BucketManager.TurnOnIndexPage, TurnOffIndexPage)"},
		{"/maxAge", "bucket max-age settings (BucketManager.SetBucketMaxAge)"},
		{"/referAntiLeech", "referer anti-leech settings (BucketManager.SetReferAntiLeechMode)"},
		{"/corsRules/", "bucket CORS rules (BucketManager.AddCorsRules)"},
		{"/events/", "bucket event rules (BucketManager.AddBucketEvent)"},
		{"/rules/", "bucket lifecycle rules (BucketManager.AddBucketLifeCycleRule)"},
		{"/bucketTagging", "bucket tags (BucketManager.SetTagging)"},
		{"/getbucketquota/", "bucket quota (BucketManager.GetBucketQuota)"},
		{"/setbucketquota/", "bucket quota (BucketManager.SetBucketQuota)"},
	} {
		if p == u.path || p == strings.TrimSuffix(u.path, "/") || strings.HasSuffix(u.path, "/") && strings.HasPrefix(p, u.path) {
			return u.call
		}
	}
	return ""
}

// serveUnserved answers a path unservedAPI names: 501 naming the call.
func serveUnserved(w http.ResponseWriter, r *http.Request, call string) int {
	return writeError(w, http.StatusNotImplemented,
		fmt.Sprintf("%s is not served by Dora (%s %s); docs/api.md lists the Qiniu calls it serves", call, r.Method, r.URL.Path))
}
