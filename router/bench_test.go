package router

import (
	"io"
	"testing"

	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/meta"
)

type staticMeta struct{ s *meta.Snapshot }

func (m staticMeta) Snapshot() *meta.Snapshot { return m.s }

// BenchmarkHandler measures the handler alone (no network): resolution,
// parsing, checks, the response stream and the access bookkeeping.
func BenchmarkHandler(b *testing.B) {
	objs := newMemOrigin()
	objs.add("photos", "dir/small.txt", "text/plain", make([]byte, 4096))
	r, err := New(Config{
		Meta: staticMeta{meta.NewSnapshot(meta.Data{
			Accounts: []dora.Account{alice},
			Buckets:  []dora.Bucket{{Name: "photos", Owner: alice.ID}},
		})},
		Objects: objs, Pool: pool.New(pool.Options{}),
	})
	if err != nil {
		b.Fatal(err)
	}
	h := r.Handler()
	for _, c := range []struct{ name, uri string }{
		{"object", "/dir/small.txt"},
		{"range", "/dir/small.txt"},
		{"qhash", "/dir/small.txt?qhash/md5"},
		{"missing", "/dir/none.txt"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var ctx fasthttp.RequestCtx
			for b.Loop() {
				ctx.Request.Reset()
				ctx.Response.Reset()
				ctx.Request.SetRequestURI(c.uri)
				ctx.Request.Header.SetHost("photos.localhost")
				if c.name == "range" {
					ctx.Request.Header.Set("Range", "bytes=0-99")
				}
				h(&ctx)
				if err := ctx.Response.BodyWriteTo(io.Discard); err != nil {
					b.Fatal(err)
				}
				ctx.Response.CloseBodyStream()
			}
		})
	}
}
