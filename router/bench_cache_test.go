package router

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/meta"
)

// BenchmarkCacheHit measures a result-cache hit (the pipeline's 4 KiB
// result already cached): "handler" is the handler alone (no network:
// resolution, parsing, the object's revalidation, the lookup and the
// response), "loopback" a client GET through the router over loopback.
// The instance is reached once, to fill the cache.
func BenchmarkCacheHit(b *testing.B) {
	objs := newMemOrigin()
	objs.add("photos", "small", "application/octet-stream", make([]byte, 4<<10))
	instAddr := benchInstance(b)
	p := pool.New(pool.Options{})
	p.Update([]pool.Instance{{ID: "p0", Ufop: "passthru", Version: "v1", Region: dora.DefaultRegion, Addr: instAddr}})
	r, err := New(Config{
		Meta: staticMeta{meta.NewSnapshot(meta.Data{
			Accounts: []dora.Account{alice},
			Buckets:  []dora.Bucket{{Name: "photos", Owner: alice.ID}},
			Ufops:    []dora.Ufop{{Name: "passthru", Owner: alice.ID, Mode: dora.ModePublic, ActiveVersion: "v1"}},
			Releases: []dora.Release{{Ufop: "passthru", Version: "v1", Protocol: dora.ProtocolDora,
				Cache: &dora.CachePolicy{Enabled: true, TTL: time.Hour}}},
		})},
		Objects: objs, Pool: p,
	})
	if err != nil {
		b.Fatal(err)
	}
	h := r.Handler()
	get := func(ctx *fasthttp.RequestCtx) string {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.SetRequestURI("/small?passthru")
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
	var fill fasthttp.RequestCtx
	if c := get(&fill); c != "miss" {
		b.Fatalf("first request: X-Dora-Cache %q", c)
	}
	if c := get(&fill); c != "hit" {
		b.Fatalf("second request: X-Dora-Cache %q", c)
	}

	b.Run("handler", func(b *testing.B) {
		b.ReportAllocs()
		var ctx fasthttp.RequestCtx
		defer cpuClock(b)()
		for b.Loop() {
			get(&ctx)
		}
	})
	b.Run("loopback", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { r.Serve(ctx, ln) })
		defer func() { b.StopTimer(); cancel(); wg.Wait() }()
		hc := &fasthttp.HostClient{Addr: ln.Addr().String(), MaxConns: 64, ReadTimeout: 10 * time.Second}
		b.SetBytes(4 << 10)
		b.ReportAllocs()
		b.SetParallelism(8)
		b.ResetTimer()
		defer cpuClock(b)()
		b.RunParallel(func(pb *testing.PB) {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for pb.Next() {
				req.SetRequestURI("/small?passthru")
				req.Header.SetHost("photos.localhost")
				if err := hc.Do(req, resp); err != nil {
					b.Error(err)
					return
				}
				if resp.StatusCode() != 200 || len(resp.Body()) != 4<<10 || string(resp.Header.Peek("X-Dora-Cache")) != "hit" {
					b.Errorf("status %d, %d bytes, %q", resp.StatusCode(), len(resp.Body()), resp.Header.Peek("X-Dora-Cache"))
					return
				}
			}
		})
	})
}
