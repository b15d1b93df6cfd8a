package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/api"
)

// The wire types of the admin API, defined once in internal/api and named here
// for the client's callers.
type (
	// Region is one deployment region offered by the platform.
	Region = api.Region
	// BucketSpec is what CreateBucket sends.
	BucketSpec = api.BucketSpec
	// UfopInfo is a ufop as `qdoractl info` shows it.
	UfopInfo = api.UfopInfo
	// Image is a pushed OCI image or a successful build.
	Image = api.Image
	// HealthCheckConfig is dora.yaml's health_check.
	HealthCheckConfig = api.HealthCheckConfig
	// EnvConfig is dora.yaml's env.
	EnvConfig = api.EnvConfig
	// TimeoutsConfig is dora.yaml's timeouts.
	TimeoutsConfig = api.TimeoutsConfig
	// ReleaseConfig is dora.yaml, sent as JSON to POST /v1/releases.
	ReleaseConfig = api.ReleaseConfig
	// Releases is a ufop's mode, releases and deployments.
	Releases = api.Releases
	// DeployRequest is POST /v1/ufops/{name}/deployments.
	DeployRequest = api.DeployRequest
	// DeploymentInfo is one deployment with its instances.
	DeploymentInfo = api.DeploymentInfo
	// ScaleEvent is one autoscaler decision on a deployment.
	ScaleEvent = api.ScaleEvent
	// InstanceStatus is one instance of a deployment.
	InstanceStatus = api.InstanceStatus
	// Object describes a stored object.
	Object = api.Object
	// CacheConfig is dora.yaml's cache: {enabled: true, ttl: "10m"}.
	CacheConfig = api.CacheConfig
)

// LogQuery selects lines of a release's log files (`qdoractl log`).
type LogQuery struct {
	Version  string
	Region   string
	Instance int // 0: all
	From, To time.Time
	Keyword  string
}

// Whoami returns the caller's account (without its secret key); a cheap way
// to check a key pair.
func (c *Client) Whoami(ctx context.Context) (dora.Account, error) {
	var a dora.Account
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/whoami"}, &a)
	return a, err
}

// CreateAccount creates an account (root only) and returns it with its SK.
func (c *Client) CreateAccount(ctx context.Context, name string, instanceLimit int) (dora.Account, error) {
	var a dora.Account
	body := map[string]any{"name": name, "instanceLimit": instanceLimit}
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/accounts", json: body}, &a)
	return a, err
}

// ListAccounts lists every account (root only).
func (c *Client) ListAccounts(ctx context.Context) ([]dora.Account, error) {
	var as []dora.Account
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/accounts"}, &as)
	return as, err
}

// DisableAccount disables an account by id (root only).
func (c *Client) DisableAccount(ctx context.Context, id string) (dora.Account, error) {
	var a dora.Account
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/accounts/" + seg(id) + "/disable", json: struct{}{}}, &a)
	return a, err
}

// Regions lists the deployment regions.
func (c *Client) Regions(ctx context.Context) ([]Region, error) {
	var rs []Region
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/regions"}, &rs)
	return rs, err
}

// Flavors lists the instance sizes.
func (c *Client) Flavors(ctx context.Context) ([]dora.Flavor, error) {
	var fs []dora.Flavor
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/flavors"}, &fs)
	return fs, err
}

// CreateBucket creates a bucket owned by the caller.
func (c *Client) CreateBucket(ctx context.Context, spec BucketSpec) (dora.Bucket, error) {
	var b dora.Bucket
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/buckets", json: spec}, &b)
	return b, err
}

// ListBuckets lists the caller's buckets.
func (c *Client) ListBuckets(ctx context.Context) ([]dora.Bucket, error) {
	var bs []dora.Bucket
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/buckets"}, &bs)
	return bs, err
}

// GetBucket returns one of the caller's buckets.
func (c *Client) GetBucket(ctx context.Context, name string) (dora.Bucket, error) {
	var b dora.Bucket
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/buckets/" + seg(name)}, &b)
	return b, err
}

// AddDomain binds a host name to a bucket.
func (c *Client) AddDomain(ctx context.Context, bucket, domain string) (dora.Bucket, error) {
	var b dora.Bucket
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/buckets/" + seg(bucket) + "/domains",
		json: map[string]string{"domain": domain}}, &b)
	return b, err
}

// DeleteBucket removes an empty bucket.
func (c *Client) DeleteBucket(ctx context.Context, name string) error {
	return c.call(ctx, request{method: http.MethodDelete, path: "/v1/buckets/" + seg(name)}, nil)
}

// PutOption qualifies PutObject.
type PutOption func(*putOptions)

type putOptions struct {
	progress   func(written int64)
	insertOnly bool
}

// WithProgress calls fn with the number of bytes sent so far, as they go.
func WithProgress(fn func(written int64)) PutOption {
	return func(o *putOptions) { o.progress = fn }
}

// InsertOnly makes PutObject fail with 409 when the key exists.
func InsertOnly() PutOption { return func(o *putOptions) { o.insertOnly = true } }

// progressReader reports the bytes read through it.
type progressReader struct {
	r  io.Reader
	n  int64
	fn func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.n += int64(n)
		p.fn(p.n)
	}
	return n, err
}

// PutObject streams r (size bytes, -1 when unknown) to bucket/key. An empty
// contentType lets the server detect it. A key the platform's rule refuses
// (dora.ValidateKey: an empty, "." or ".." segment, a leading "/"...) is
// refused, wrapping dora.ErrBadKey, before anything is sent; so are the
// keys of GetObject, DeleteObject and StatObject.
func (c *Client) PutObject(ctx context.Context, bucket, key string, r io.Reader, size int64, contentType string, opts ...PutOption) (api.Object, error) {
	if err := dora.ValidateKey(key); err != nil {
		return api.Object{}, fmt.Errorf("put %s/%s: %w", bucket, key, err)
	}
	var o putOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.progress != nil {
		r = &progressReader{r: r, fn: o.progress}
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	h := http.Header{}
	if o.insertOnly {
		h.Set("X-Dora-Insert-Only", "1")
	}
	var obj api.Object
	err := c.call(ctx, request{method: http.MethodPut, path: "/v1/objects/" + seg(bucket) + "/" + keyPath(key),
		body: io.NopCloser(r), size: size, contentType: contentType, header: h}, &obj)
	if err != nil {
		return api.Object{}, fmt.Errorf("put %s/%s: %w", bucket, key, err)
	}
	return obj, nil
}

// GetObject opens an object. The returned Object carries what the headers
// say (size, type, etag); the caller closes the body.
func (c *Client) GetObject(ctx context.Context, bucket, key string) (io.ReadCloser, api.Object, error) {
	if err := dora.ValidateKey(key); err != nil {
		return nil, api.Object{}, fmt.Errorf("get %s/%s: %w", bucket, key, err)
	}
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/objects/" + seg(bucket) + "/" + keyPath(key)})
	if err != nil {
		return nil, api.Object{}, fmt.Errorf("get %s/%s: %w", bucket, key, err)
	}
	obj := api.Object{Bucket: bucket, Key: key, Size: resp.ContentLength,
		MimeType: resp.Header.Get("Content-Type"), ETag: trimQuotes(resp.Header.Get("ETag"))}
	if t, err := http.ParseTime(resp.Header.Get("Last-Modified")); err == nil {
		obj.Modified = t
	}
	return resp.Body, obj, nil
}

func trimQuotes(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// DeleteObject removes an object.
func (c *Client) DeleteObject(ctx context.Context, bucket, key string) error {
	if err := dora.ValidateKey(key); err != nil {
		return fmt.Errorf("delete %s/%s: %w", bucket, key, err)
	}
	err := c.call(ctx, request{method: http.MethodDelete, path: "/v1/objects/" + seg(bucket) + "/" + keyPath(key)}, nil)
	if err != nil {
		return fmt.Errorf("delete %s/%s: %w", bucket, key, err)
	}
	return nil
}

// StatObject describes an object.
func (c *Client) StatObject(ctx context.Context, bucket, key string) (api.Object, error) {
	if err := dora.ValidateKey(key); err != nil {
		return api.Object{}, fmt.Errorf("stat %s/%s: %w", bucket, key, err)
	}
	var obj api.Object
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/stat/" + seg(bucket) + "/" + keyPath(key)}, &obj)
	if err != nil {
		return obj, fmt.Errorf("stat %s/%s: %w", bucket, key, err)
	}
	return obj, nil
}

// ListObjects lists a bucket's objects under prefix, sorted by key; limit 0
// takes the server's default.
func (c *Client) ListObjects(ctx context.Context, bucket, prefix string, limit int) ([]api.Object, error) {
	q := url.Values{}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out api.ObjectList
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/list/" + seg(bucket), query: q}, &out)
	return out.Items, err
}

// RegisterUfop registers a ufop name owned by the caller.
func (c *Client) RegisterUfop(ctx context.Context, name, desc string, mode dora.Mode) (dora.Ufop, error) {
	var u dora.Ufop
	body := map[string]any{"name": name, "desc": desc, "mode": mode}
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/ufops", json: body}, &u)
	return u, err
}

// SetUfopMode changes the mode of one of the caller's ufops.
func (c *Client) SetUfopMode(ctx context.Context, name string, mode dora.Mode) (UfopInfo, error) {
	var u UfopInfo
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/ufops/" + seg(name) + "/mode", json: map[string]any{"mode": mode}}, &u)
	return u, err
}

// ListUfops lists the caller's ufops and those it may use.
func (c *Client) ListUfops(ctx context.Context) ([]UfopInfo, error) {
	var us []UfopInfo
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/ufops"}, &us)
	return us, err
}

// GetUfop returns one ufop.
func (c *Client) GetUfop(ctx context.Context, name string) (UfopInfo, error) {
	var u UfopInfo
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/ufops/" + seg(name)}, &u)
	return u, err
}

// DeleteUfop unregisters a ufop: its deployments stop, its releases and
// builds go.
func (c *Client) DeleteUfop(ctx context.Context, name string) error {
	return c.call(ctx, request{method: http.MethodDelete, path: "/v1/ufops/" + seg(name)}, nil)
}

// ApplyUfop adds a protected ufop to the caller's list.
func (c *Client) ApplyUfop(ctx context.Context, name string) (dora.Account, error) {
	var a dora.Account
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/ufops/" + seg(name) + "/apply", json: struct{}{}}, &a)
	return a, err
}

// UnapplyUfop removes a ufop from the caller's list.
func (c *Client) UnapplyUfop(ctx context.Context, name string) (dora.Account, error) {
	var a dora.Account
	err := c.call(ctx, request{method: http.MethodDelete, path: "/v1/ufops/" + seg(name) + "/apply"}, &a)
	return a, err
}

// UploadBuild sends an already packed tar.gz (size -1 when unknown) as a new
// build of the ufop; the build runs in the background.
func (c *Client) UploadBuild(ctx context.Context, ufop string, tarGz io.Reader, size int64) (dora.Build, error) {
	var b dora.Build
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/ufops/" + seg(ufop) + "/builds",
		body: tarGz, size: size, contentType: "application/gzip"}, &b)
	if err != nil {
		return b, fmt.Errorf("build %s: %w", ufop, err)
	}
	return b, nil
}

// Builds lists a ufop's builds by number.
func (c *Client) Builds(ctx context.Context, ufop string) ([]dora.Build, error) {
	var bs []dora.Build
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/ufops/" + seg(ufop) + "/builds"}, &bs)
	return bs, err
}

// GetBuild returns build n of a ufop.
func (c *Client) GetBuild(ctx context.Context, ufop string, n int) (dora.Build, error) {
	var b dora.Build
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/ufops/" + seg(ufop) + "/builds/" + strconv.Itoa(n)}, &b)
	return b, err
}

// BuildLog streams build n's log; the caller closes it.
func (c *Client) BuildLog(ctx context.Context, ufop string, n int) (io.ReadCloser, error) {
	return c.stream(ctx, request{method: http.MethodGet, path: "/v1/ufops/" + seg(ufop) + "/builds/" + strconv.Itoa(n) + "/log"})
}

// FollowBuildLog streams build n's log as the build writes it; the stream
// ends once the build has ended and its whole log is sent. The caller
// closes it (ending the follow early).
func (c *Client) FollowBuildLog(ctx context.Context, ufop string, n int) (io.ReadCloser, error) {
	return c.stream(ctx, request{method: http.MethodGet, path: "/v1/ufops/" + seg(ufop) + "/builds/" + strconv.Itoa(n) + "/log",
		query: url.Values{"follow": {"1"}}})
}

// WaitBuild polls build n every interval until it is no longer RUNNING or
// ctx ends; onPoll (may be nil) sees every status read.
func (c *Client) WaitBuild(ctx context.Context, ufop string, n int, interval time.Duration, onPoll func(dora.Build)) (dora.Build, error) {
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		b, err := c.GetBuild(ctx, ufop, n)
		if err != nil {
			return b, err
		}
		if onPoll != nil {
			onPoll(b)
		}
		if b.Status != dora.BuildRunning {
			return b, nil
		}
		select {
		case <-ctx.Done():
			return b, fmt.Errorf("wait for build %s #%d: %w", ufop, n, ctx.Err())
		case <-t.C:
		}
	}
}

// SetVersion makes the release of build n the active version of the ufop
// (`ufopver <ufop> -c n`), creating release v<n> when absent with the given
// instance protocol ("dora" or "ufop"; "" for the server's default).
func (c *Client) SetVersion(ctx context.Context, ufop string, build int, protocol string) (UfopInfo, error) {
	var u UfopInfo
	body := map[string]any{"build": build}
	if protocol != "" {
		body["protocol"] = protocol
	}
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/ufops/" + seg(ufop) + "/version", json: body}, &u)
	return u, err
}

// Images lists the caller's pushed images and successful builds.
func (c *Client) Images(ctx context.Context) ([]Image, error) {
	var is []Image
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/images"}, &is)
	return is, err
}

// CreateRelease creates a release from a dora.yaml.
func (c *Client) CreateRelease(ctx context.Context, cfg ReleaseConfig) (dora.Release, error) {
	var r dora.Release
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/releases", json: cfg}, &r)
	return r, err
}

// Releases lists a ufop's mode, releases and deployments.
func (c *Client) Releases(ctx context.Context, ufop string) (Releases, error) {
	var r Releases
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/ufops/" + seg(ufop) + "/releases"}, &r)
	return r, err
}

// Deploy runs a release in a region with a floor and a ceiling of instances.
func (c *Client) Deploy(ctx context.Context, ufop string, req DeployRequest) (dora.Deployment, error) {
	var d dora.Deployment
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/ufops/" + seg(ufop) + "/deployments", json: req}, &d)
	return d, err
}

// Deployments lists a ufop's deployments.
func (c *Client) Deployments(ctx context.Context, ufop string) ([]dora.Deployment, error) {
	var ds []dora.Deployment
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/ufops/" + seg(ufop) + "/deployments"}, &ds)
	return ds, err
}

// Deployment returns one deployment with its instances.
func (c *Client) Deployment(ctx context.Context, ufop, id string) (DeploymentInfo, error) {
	var d DeploymentInfo
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/ufops/" + seg(ufop) + "/deployments/" + seg(id)}, &d)
	return d, err
}

// DeploymentEvents lists a deployment's scaling events, newest last.
func (c *Client) DeploymentEvents(ctx context.Context, ufop, id string) ([]ScaleEvent, error) {
	var es []ScaleEvent
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/ufops/" + seg(ufop) + "/deployments/" + seg(id) + "/events"}, &es)
	return es, err
}

// Resize sets the active version's instance floor in a region ("" for the
// server's default region).
func (c *Client) Resize(ctx context.Context, ufop string, num int, region string) (dora.Deployment, error) {
	var d dora.Deployment
	body := map[string]any{"num": num}
	if region != "" {
		body["region"] = region
	}
	err := c.call(ctx, request{method: http.MethodPost, path: "/v1/ufops/" + seg(ufop) + "/resize", json: body}, &d)
	return d, err
}

// Instances lists the active version's instances in a region (every
// deployment's when all).
func (c *Client) Instances(ctx context.Context, ufop, region string, all bool) ([]api.InstanceStatus, error) {
	q := url.Values{}
	if region != "" {
		q.Set("region", region)
	}
	if all {
		q.Set("all", "1")
	}
	var is []api.InstanceStatus
	err := c.call(ctx, request{method: http.MethodGet, path: "/v1/ufops/" + seg(ufop) + "/instances", query: q}, &is)
	return is, err
}

type instancesBody struct {
	Region  string `json:"region,omitempty"`
	Indexes []int  `json:"indexes"`
}

// StopInstances stops the given 1-based instances (all when empty).
func (c *Client) StopInstances(ctx context.Context, ufop, region string, indexes []int) error {
	return c.call(ctx, request{method: http.MethodPost, path: "/v1/ufops/" + seg(ufop) + "/instances/stop",
		json: instancesBody{Region: region, Indexes: nonNil(indexes)}}, nil)
}

// StartInstances starts stopped instances (all when empty).
func (c *Client) StartInstances(ctx context.Context, ufop, region string, indexes []int) error {
	return c.call(ctx, request{method: http.MethodPost, path: "/v1/ufops/" + seg(ufop) + "/instances/start",
		json: instancesBody{Region: region, Indexes: nonNil(indexes)}}, nil)
}

func nonNil(s []int) []int {
	if s == nil {
		return []int{}
	}
	return s
}

// InstanceLogs streams the last tail lines (0: the server's default) of an
// instance's stdout or stderr; the caller closes it.
func (c *Client) InstanceLogs(ctx context.Context, ufop string, index int, region, stream string, tail int) (io.ReadCloser, error) {
	return c.instanceLogs(ctx, ufop, index, region, stream, tail, false)
}

// FollowInstanceLogs is InstanceLogs that goes on with the lines the
// instance writes later, until ctx ends, the caller closes the stream or
// the instance goes away.
func (c *Client) FollowInstanceLogs(ctx context.Context, ufop string, index int, region, stream string, tail int) (io.ReadCloser, error) {
	return c.instanceLogs(ctx, ufop, index, region, stream, tail, true)
}

func (c *Client) instanceLogs(ctx context.Context, ufop string, index int, region, stream string, tail int, follow bool) (io.ReadCloser, error) {
	q := url.Values{}
	if follow {
		q.Set("follow", "1")
	}
	if region != "" {
		q.Set("region", region)
	}
	if stream != "" {
		q.Set("type", stream)
	}
	if tail > 0 {
		q.Set("tail", strconv.Itoa(tail))
	}
	return c.stream(ctx, request{method: http.MethodGet,
		path: "/v1/ufops/" + seg(ufop) + "/instances/" + strconv.Itoa(index) + "/logs", query: q})
}

// Logs streams lines of the release's log files selected by q.
func (c *Client) Logs(ctx context.Context, ufop string, lq LogQuery) (io.ReadCloser, error) {
	q := url.Values{}
	if lq.Version != "" {
		q.Set("version", lq.Version)
	}
	if lq.Region != "" {
		q.Set("region", lq.Region)
	}
	if lq.Instance > 0 {
		q.Set("instance", strconv.Itoa(lq.Instance))
	}
	if !lq.From.IsZero() {
		q.Set("from", lq.From.UTC().Format(time.RFC3339))
	}
	if !lq.To.IsZero() {
		q.Set("to", lq.To.UTC().Format(time.RFC3339))
	}
	if lq.Keyword != "" {
		q.Set("k", lq.Keyword)
	}
	return c.stream(ctx, request{method: http.MethodGet, path: "/v1/ufops/" + seg(ufop) + "/logs", query: q})
}
