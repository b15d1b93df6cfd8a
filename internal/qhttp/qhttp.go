// Package qhttp holds what the Qiniu-compatible APIs served in front of
// the admin API (admin/pfop: pfop and uploads; admin/rs: the bucket APIs)
// do alike: request ids, dispatch in front of another handler, and bodies
// capped while they stream.
package qhttp

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
)

// Front serves the requests match accepts with h and passes every other
// one to next, so that several APIs share one listener (the admin's, where
// Qiniu's SDKs expect them).
func Front(match func(*http.Request) bool, h, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if match(r) {
			h.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// NewReqid returns a random request id (16 hex digits), for the X-Reqid
// header Qiniu's APIs answer with and the log line of the request.
func NewReqid() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ErrTooLarge is returned by a Cap reader once its bound is passed.
var ErrTooLarge = errors.New("too large")

// Cap returns a reader of r that fails with ErrTooLarge once more than n
// bytes were read (a negative n fails at once). It reads at most one byte
// beyond n, so a body of exactly n bytes passes.
func Cap(r io.Reader, n int64) io.Reader { return &capReader{r: r, n: n} }

type capReader struct {
	r io.Reader
	n int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.n < 0 {
		return 0, ErrTooLarge
	}
	if int64(len(p))-1 > c.n { // not len(p) > c.n+1: n may be math.MaxInt64
		p = p[:c.n+1]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	if c.n < 0 {
		return n, ErrTooLarge
	}
	return n, err
}
