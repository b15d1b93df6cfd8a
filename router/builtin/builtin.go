// Package builtin runs the fops the router implements natively
// (PROTOCOLS.md §7): qhash, imageInfo, exif and imageView2. saveas is the
// router's own business and is not handled here.
//
// Hashing streams its input; image operations read at most MaxImageBytes
// into memory and refuse images over MaxImagePixels before decoding them.
package builtin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/doraproject/dora/router/fop"
)

// Limits of the image operations.
const (
	MaxImageBytes  = 64 << 20   // bytes of an image read into memory
	MaxImagePixels = 50_000_000 // width*height of an image (and of an output)
)

// ErrUnknown is returned (wrapped) by Run for a name that is not a built-in fop.
var ErrUnknown = errors.New("unknown built-in fop")

// Error is a failure with the HTTP status the router should answer with,
// e.g. 400 "no exif data" or 413 for an image over the limits.
type Error struct {
	Status int
	Msg    string
}

// Error returns the message.
func (e *Error) Error() string { return e.Msg }

func errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// Input is the data a built-in fop works on.
type Input struct {
	Body     io.Reader
	Size     int64 // -1 when unknown
	MimeType string
}

// Result is a built-in fop's output; the caller closes Body.
type Result struct {
	Body        io.ReadCloser
	ContentType string
	Size        int64 // -1 when unknown
}

// IsBuiltin reports whether name is a built-in fop handled by Run.
func IsBuiltin(name string) bool {
	switch name {
	case "qhash", "imageInfo", "exif", "imageView2":
		return true
	}
	return false
}

// limits lets tests exercise the caps with small inputs.
type limits struct {
	bytes, pixels int64
}

var defaultLimits = limits{bytes: MaxImageBytes, pixels: MaxImagePixels}

// Run executes one built-in step on in. Errors are *Error (with the status
// to answer), ErrUnknown, or the context's error.
func Run(ctx context.Context, step fop.Step, in Input) (Result, error) {
	return run(ctx, step, in, defaultLimits)
}

func run(ctx context.Context, step fop.Step, in Input, lim limits) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if in.Body == nil {
		return Result{}, errorf(http.StatusBadRequest, "%s: no input", step.Name)
	}
	switch step.Name {
	case "qhash":
		return qhash(ctx, step, in)
	case "imageInfo":
		return imageInfo(ctx, step, in, lim)
	case "exif":
		return exifInfo(ctx, step, in, lim)
	case "imageView2":
		return imageView2(ctx, step, in, lim)
	}
	return Result{}, fmt.Errorf("%q: %w", step.Name, ErrUnknown)
}

func bytesResult(b []byte, contentType string) Result {
	return Result{Body: io.NopCloser(bytes.NewReader(b)), ContentType: contentType, Size: int64(len(b))}
}

// ctxReader fails reads once ctx is done, so a long stream stops promptly.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// readCapped reads the whole input, refusing more than max bytes.
func readCapped(ctx context.Context, name string, in Input, max int64) ([]byte, error) {
	if in.Size > max {
		return nil, errorf(http.StatusRequestEntityTooLarge, "%s: input of %d bytes is over the %d-byte limit", name, in.Size, max)
	}
	b, err := io.ReadAll(io.LimitReader(ctxReader{ctx, in.Body}, max+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%s: read input: %w", name, err)
	}
	if int64(len(b)) > max {
		return nil, errorf(http.StatusRequestEntityTooLarge, "%s: input is over the %d-byte limit", name, max)
	}
	return b, nil
}
