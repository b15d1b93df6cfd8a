package router

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
)

// BenchmarkCacheHit measures a result-cache hit (the pipeline's 4 KiB
// result already cached): "handler" is the handler alone (no network: a
// remembered route, the object's revalidation, the lookup and the
// response), "handler-full" the same through the full path (a URL too
// long to be remembered: resolution and parsing per request), "loopback"
// a client GET through the router over loopback. The instance is reached
// once, to fill the cache.
func BenchmarkCacheHit(b *testing.B) {
	objs := newMemOrigin()
	objs.add("photos", "small", "application/octet-stream", make([]byte, 4<<10))
	r := benchRouter(b, objs, dora.Release{Cache: &dora.CachePolicy{Enabled: true, TTL: time.Hour}})
	h := r.Handler()
	get := func(ctx *fasthttp.RequestCtx, uri string) string {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.SetRequestURI(uri)
		ctx.Request.Header.SetHost("photos.localhost")
		h(ctx)
		if err := ctx.Response.BodyWriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
		ctx.Response.CloseBodyStream()
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("status %d", ctx.Response.StatusCode())
		}
		return string(ctx.Response.Header.Peek("X-Dora-Cache"))
	}
	const uri = "/small?passthru"
	var fill fasthttp.RequestCtx
	if c := get(&fill, uri); c != "miss" {
		b.Fatalf("first request: X-Dora-Cache %q", c)
	}
	if c := get(&fill, uri); c != "hit" {
		b.Fatalf("second request: X-Dora-Cache %q", c)
	}

	for _, bc := range []struct{ name, uri string }{
		{"handler", uri},
		{"handler-full", uri + "&pad=" + strings.Repeat("p", hotIDMax)}, // an ignored parameter
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			var ctx fasthttp.RequestCtx
			defer cpuClock(b)()
			for b.Loop() {
				if c := get(&ctx, bc.uri); c != "hit" {
					b.Fatalf("X-Dora-Cache %q", c)
				}
			}
		})
	}
	b.Run("loopback", func(b *testing.B) {
		hc := benchServe(b, r)
		b.SetBytes(4 << 10)
		b.ReportAllocs()
		benchGets(b, hc, "/small?passthru", func(resp *fasthttp.Response) error {
			if err := checkBody(resp, 4<<10); err != nil {
				return err
			}
			if c := resp.Header.Peek("X-Dora-Cache"); string(c) != "hit" {
				return fmt.Errorf("X-Dora-Cache %q", c)
			}
			return nil
		})
	})
}
