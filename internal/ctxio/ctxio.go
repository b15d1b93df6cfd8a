// Package ctxio stops reads when a context ends, so that a long copy
// (an upload, an untar, a hash over a stream) ends promptly once its
// request or the server is done, instead of running to the end of its
// source.
package ctxio

import (
	"context"
	"io"
)

// Reader returns r, except that every Read first checks ctx and fails with
// ctx.Err() once it is done. A Read already blocked in r is not
// interrupted; the next one fails.
func Reader(ctx context.Context, r io.Reader) io.Reader {
	return reader{ctx: ctx, r: r}
}

type reader struct {
	ctx context.Context
	r   io.Reader
}

func (c reader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
