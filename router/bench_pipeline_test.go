package router

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/meta"
	"github.com/doraproject/dora/router/origin"
)

// BenchmarkPipeline measures one ufop step end to end over loopback: a
// client GET through the router, the router's call to an in-process
// passthru instance (fasthttp, keep-alive), the input sent as the body
// (sizes up to the body limit) or, in the -url runs (body_limit -1),
// fetched by the instance from its one-shot input URL. ns/op and
// allocs/op cover the router, the instance and the client together (run
// with -benchmem; compare runs, not absolutes).
func BenchmarkPipeline(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) { benchPipeline(b, size, 0) })
	}
	b.Run("4KiB-url", func(b *testing.B) { benchPipeline(b, 4<<10, -1) })
	b.Run("4KiB-3steps", func(b *testing.B) { benchPipelineSteps(b, 4<<10, 0, 3) })
}

func benchPipeline(b *testing.B, size int, bodyLimit int64) {
	benchPipelineSteps(b, size, bodyLimit, 1)
}

// benchPipelineSteps runs benchPipeline's request with steps passthru
// steps in a row.
func benchPipelineSteps(b *testing.B, size int, bodyLimit int64, steps int) {
	path := "/small?passthru" + strings.Repeat("|passthru", steps-1)
	objs := newMemOrigin()
	objs.add("photos", "small", "application/octet-stream", make([]byte, size))
	hc := benchServe(b, benchRouter(b, objs, dora.Release{BodyLimit: bodyLimit}))
	// One request first: the connections' setup is not per request.
	warm := fasthttp.AcquireRequest()
	warm.SetRequestURI(path)
	warm.Header.SetHost("photos.localhost")
	if err := hc.Do(warm, &fasthttp.Response{}); err != nil {
		b.Fatal(err)
	}
	fasthttp.ReleaseRequest(warm)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	benchGets(b, hc, path, func(resp *fasthttp.Response) error { return checkBody(resp, size) })
}

// benchRouter builds a router on objs whose bucket "photos" (alice's) may
// use the ufop passthru, served by an in-process instance (benchInstance);
// rel is its release v1 (Dora protocol).
func benchRouter(b testing.TB, objs origin.Reader, rel dora.Release) *Router {
	instAddr := benchInstance(b)
	p := pool.New(pool.Options{})
	p.Update([]pool.Instance{{ID: "p0", Ufop: "passthru", Version: "v1", Region: dora.DefaultRegion, Addr: instAddr}})
	rel.Ufop, rel.Version, rel.Protocol = "passthru", "v1", dora.ProtocolDora
	r, err := New(Config{
		Meta: staticMeta{meta.NewSnapshot(meta.Data{
			Accounts: []dora.Account{alice},
			Buckets:  []dora.Bucket{{Name: "photos", Owner: alice.ID}},
			Ufops:    []dora.Ufop{{Name: "passthru", Owner: alice.ID, Mode: dora.ModePublic, ActiveVersion: "v1"}},
			Releases: []dora.Release{rel},
		})},
		Objects: objs, Pool: p,
	})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// benchServe serves r on loopback until the benchmark function returns
// (the server's graceful shutdown, about a second, runs after the clock
// has stopped) and returns a keep-alive client of it.
func benchServe(b testing.TB, r *Router) *fasthttp.HostClient {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	return serveOn(b, r, ln)
}

// serveOn is benchServe on the listener ln.
func serveOn(b testing.TB, r *Router, ln net.Listener) *fasthttp.HostClient {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Serve(ctx, ln) })
	b.Cleanup(func() { cancel(); wg.Wait() })
	// Serve sets the one-shot URLs' address (publicAddr) from ln: callers
	// that dial r.publicAddr() must not see the default before it.
	for r.public.Load() == nil {
		time.Sleep(time.Millisecond)
	}
	return &fasthttp.HostClient{Addr: ln.Addr().String(), MaxConns: 64, ReadTimeout: 10 * time.Second}
}

// benchGets times b.N GETs of path (Host photos.localhost) sent over hc by
// 8 × GOMAXPROCS goroutines, each response checked by check, and reports
// the process's CPU time per request (cpuClock).
func benchGets(b *testing.B, hc *fasthttp.HostClient, path string, check func(*fasthttp.Response) error) {
	b.SetParallelism(8)
	b.ResetTimer()
	defer cpuClock(b)()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		for pb.Next() {
			req.SetRequestURI(path)
			req.Header.SetHost("photos.localhost")
			if err := hc.Do(req, resp); err != nil {
				b.Error(err)
				return
			}
			if err := check(resp); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// checkBody checks a 200 answer of size bytes.
func checkBody(resp *fasthttp.Response, size int) error {
	if resp.StatusCode() != 200 || len(resp.Body()) != size {
		return fmt.Errorf("status %d, %d bytes: %.200s", resp.StatusCode(), len(resp.Body()), resp.Body())
	}
	return nil
}

// benchInstance serves the Dora protocol in-process as passthru does: it
// fetches url= (keep-alive client), or takes the body without one, and
// answers with the input; to cmd=grow it answers growSize zeros whatever
// the input, to cmd=stall 64 KiB and then a byte every stallEvery
// (chunked).
func benchInstance(b testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	client := &fasthttp.Client{MaxConnsPerHost: 256, ReadTimeout: 10 * time.Second}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.QueryArgs().Peek("cmd")) {
		case "grow":
			// A large answer, streamed by the router from the connection.
			ctx.SetContentType("application/octet-stream")
			ctx.SetBodyStream(io.LimitReader(zeros{}, growSize), growSize)
			return
		case "stall":
			// 64 KiB, then a byte every stallEvery (chunked) until
			// growSize bytes or a failed write: the router waits for
			// the instance most of the time.
			ctx.SetContentType("application/octet-stream")
			ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
				if _, err := w.Write(make([]byte, 64<<10)); err != nil {
					return
				}
				for n := 64 << 10; n < growSize; n++ {
					if w.Flush() != nil {
						return
					}
					time.Sleep(stallEvery)
					w.WriteByte(0)
				}
			})
			return
		}
		u := ctx.QueryArgs().Peek("url")
		if len(u) == 0 {
			ctx.SetContentType("application/octet-stream")
			ctx.SetBody(ctx.PostBody())
			return
		}
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURIBytes(u)
		if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
			ctx.Error("fetch failed", fasthttp.StatusBadGateway)
			return
		}
		ctx.SetContentType("application/octet-stream")
		ctx.SetBody(resp.Body())
	}}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

// cpuClock reports the process's CPU time (user + system) per operation as
// "cpu-ns/op" when the benchmark ends: on a shared machine it moves much
// less than ns/op, which is whatever time the other tenants leave.
func cpuClock(b *testing.B) func() {
	start := processCPU(b)
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// growSize is the size of the benchmark instance's answer to cmd=grow
// (zeros): far more than the socket buffers hold.
const growSize = 16 << 20

// stallEvery is how often the benchmark instance's answer to cmd=stall
// sends a byte after its first 64 KiB.
const stallEvery = 500 * time.Millisecond

// zeros reads zero bytes forever.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
