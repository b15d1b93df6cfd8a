package router

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/meta"
)

// errHungUp is hangingUpWriter's error.
var errHungUp = errors.New("the client hung up")

// hangingUpWriter takes n bytes, then fails every write, as a connection
// whose peer has gone.
type hangingUpWriter struct{ n int }

func (w *hangingUpWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		m := w.n
		w.n = 0
		return m, errHungUp
	}
	w.n -= len(p)
	return len(p), nil
}

// TestStreamKeepsWriteError: a streamed answer (an object or a
// pipeline's output: countingBody; an instance's one-shot input:
// srcBody) that fasthttp fails to write (the client hung up, the write
// timed out) is logged with the write's error, of unknown size (chunked)
// too, where no byte count tells it was cut; one written whole is logged
// without an error; each exactly once. fasthttp tells the write's error
// only through CloseWithError. Written through fasthttp's own
// Response.Write, as its server does.
func TestStreamKeepsWriteError(t *testing.T) {
	log := newLifetimeLog()
	r, err := New(Config{Meta: staticMeta{meta.NewSnapshot(meta.Data{})}, Objects: newMemOrigin(),
		Pool: pool.New(pool.Options{}), Logger: slog.New(log)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	const total = 1 << 20
	seq := 0
	for _, kind := range []string{"body", "src"} {
		for _, size := range []int{-1, total} {
			for _, hangUp := range []bool{false, true} {
				seq++
				name := fmt.Sprintf("%s size %d hang-up %v", kind, size, hangUp)
				var fctx fasthttp.RequestCtx
				fctx.Request.Header.SetMethod(fasthttp.MethodGet)
				rq := r.newRequest(&fctx, time.Now())
				rq.reqid = fmt.Sprintf("writeerr%d", seq)
				in := io.NopCloser(io.LimitReader(zeros{}, total))
				if kind == "body" {
					fctx.Response.SetBodyStream(rq.stream(in, fasthttp.StatusOK, int64(size)), size)
				} else {
					rq.pipeline = "_src"
					rq.src = srcBody{e: &srcEntry{in: flow{body: in, size: int64(size)}, ctx: context.Background()}, rq: rq}
					fctx.Response.SetBodyStream(&rq.src, size)
				}
				rq.release() // the handler's reference: it has returned
				var w io.Writer = io.Discard
				if hangUp {
					w = &hangingUpWriter{n: 256 << 10}
				}
				werr := fctx.Response.Write(bufio.NewWriter(w))
				fctx.Response.Reset() // the connection's reset: nothing more to close
				l := log.line(t, fmt.Sprintf("writeerr%d", seq))
				switch {
				case hangUp && (werr == nil || l.err != errHungUp.Error()):
					t.Errorf("%s: written with %v, access line %+v: the write's error is not logged", name, werr, l)
				case !hangUp && (werr != nil || l.err != "" || l.bytes != total):
					t.Errorf("%s: written with %v, access line %+v", name, werr, l)
				}
			}
		}
	}
}
