package router

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/router/builtin"
)

// builtinEnv is the built-ins' environment for this pipeline: the
// configured tools, and watermark images read from the router's buckets.
func (p *pipeline) builtinEnv() *builtin.Env {
	env := p.r.cfg.Builtins
	env.Fetch = func(ctx context.Context, raw string) (io.ReadCloser, error) {
		return p.r.openWatermark(ctx, p.bucket.value(), raw)
	}
	return &env
}

// openWatermark opens the image a watermark names. The router never
// fetches an address a user typed: the URL must name an object of one of
// its own buckets (by bound domain or <bucket>.<suffix>), public or owned
// by the processed bucket's owner, without a query.
func (r *Router) openWatermark(ctx context.Context, b dora.Bucket, raw string) (io.ReadCloser, error) {
	bad := func(format string, args ...any) error {
		return &builtin.Error{Status: http.StatusBadRequest, Msg: "watermark: image " + fmt.Sprintf(format, args...)}
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, bad("%q: want an http(s) URL of an object here", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, bad("%q: a query or fragment is not supported", raw)
	}
	snap := r.meta.Snapshot()
	tb, ok := snap.BucketForHost(u.Host, r.cfg.DomainSuffix)
	if !ok || r.isOwnHost(u.Host) {
		return nil, bad("%q: no bucket here answers to %s (the router fetches no outside address)", raw, u.Host)
	}
	if tb.Private && tb.Owner != b.Owner {
		return nil, bad("%q: bucket %q is private to another account", raw, tb.Name)
	}
	rawPath := u.EscapedPath()
	key, herr := objectKey(rawPath)
	if herr != nil {
		return nil, bad("%q: %s", raw, herr.msg)
	}
	if dora.ReservedKey(key) { // an upload's temporary: no object, as for a download
		return nil, bad("%q: %s", raw, errNoSuchObject().msg)
	}
	rc, _, herr := r.openObject(ctx, tb, key)
	if herr != nil {
		return nil, bad("%q: %s", raw, herr.msg)
	}
	return rc, nil
}
