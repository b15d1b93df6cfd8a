// Package builtin runs the fops the router implements natively
// (docs/builtins.md): qhash, imageInfo, exif, imageView2,
// imageMogr2, watermark, imageAve and avinfo, with Qiniu's parameters and
// output shapes. saveas is the router's own business and is not handled here.
//
// Hashing and avinfo stream their input (avinfo into ffprobe's stdin);
// image operations read at most MaxImageBytes into memory and refuse an
// image whose header declares more than MaxImagePixels before decoding it
// (a decompression bomb is a 400, never an allocation).
package builtin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/doraproject/dora/internal/ctxio"
	"github.com/doraproject/dora/router/fop"
)

// Limits of the image operations.
const (
	MaxImageBytes  = 64 << 20   // bytes of an image read into memory (413 over it)
	MaxImagePixels = 50_000_000 // width*height of an image (and of an output): 400 over it
	MaxEdge        = 9999       // width or height of an output image, as Qiniu's
	// MaxMogrPixels bounds the pixels one imageMogr2 request's operations
	// process, summed (each counts the larger of its input and output):
	// every heavy operation (auto-orient, thumbnail, crop, rotate, blur)
	// once on an image at MaxImagePixels, and three more. 400 over it.
	MaxMogrPixels = mogrBudgetImages * MaxImagePixels
	// MaxWebPPixels bounds a WebP output (400 over it), as Qiniu bounds
	// one (25 000 000 pixels): its encoder (libwebp in WebAssembly) cannot
	// be interrupted when the request ends, and takes up to about half a
	// second a megapixel. The other encoders write as they go and stop
	// with the request's context.
	MaxWebPPixels = 25_000_000
)

// mogrBudgetImages is MaxMogrPixels in images at the pixel limit.
const mogrBudgetImages = 8

// DefaultFontDir is where Debian's fonts-dejavu-core puts the fonts text
// watermarks use.
const DefaultFontDir = "/usr/share/fonts/truetype/dejavu"

// Env is what some built-ins need from outside the router's process: the
// tools and fonts of this machine, and a way to read a watermark image.
// The zero Env finds ffprobe and jpegtran on PATH, the fonts in
// DefaultFontDir, and refuses image watermarks.
type Env struct {
	// FFprobe is the ffprobe binary avinfo runs (Debian ffmpeg); "" means
	// "ffprobe" on PATH.
	FFprobe string
	// JPEGTran is the jpegtran binary (Debian libjpeg-turbo-progs) that
	// makes interlaced (progressive) JPEGs; "" means "jpegtran" on PATH.
	JPEGTran string
	// FontDir holds the DejaVu TrueType fonts; "" means DefaultFontDir.
	FontDir string
	// Fetch opens the image a watermark names by URL, or fails with an
	// *Error; nil refuses image watermarks.
	Fetch func(ctx context.Context, rawURL string) (io.ReadCloser, error)
}

func (e *Env) ffprobe() string {
	if e == nil || e.FFprobe == "" {
		return "ffprobe"
	}
	return e.FFprobe
}

func (e *Env) jpegtran() string {
	if e == nil || e.JPEGTran == "" {
		return "jpegtran"
	}
	return e.JPEGTran
}

func (e *Env) fontDir() string {
	if e == nil || e.FontDir == "" {
		return DefaultFontDir
	}
	return e.FontDir
}

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
	Env      *Env // nil: the zero Env
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
	case "qhash", "imageInfo", "exif", "imageView2", "imageMogr2", "watermark", "imageAve", "avinfo":
		return true
	}
	return false
}

// limits lets tests exercise the caps with small inputs.
type limits struct {
	bytes, pixels int64
	webpPixels    int64 // of a WebP output
}

var defaultLimits = limits{bytes: MaxImageBytes, pixels: MaxImagePixels, webpPixels: MaxWebPPixels}

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
	// A built-in decodes its own arguments, as a ufop does with its cmd:
	// a browser sends thumbnail/200x300> as thumbnail/200x300%3E.
	if len(step.Args) > 0 {
		args := make([]string, len(step.Args))
		for i, a := range step.Args {
			d, err := url.PathUnescape(a)
			if err != nil {
				return Result{}, errorf(http.StatusBadRequest, "%s: argument %d: %v", step.Name, i+1, err)
			}
			args[i] = d
		}
		step.Args = args
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
	case "imageMogr2":
		return imageMogr2(ctx, step, in, lim)
	case "watermark":
		return watermark(ctx, step, in, lim)
	case "imageAve":
		return imageAve(ctx, step, in, lim)
	case "avinfo":
		return avinfo(ctx, step, in)
	}
	return Result{}, fmt.Errorf("%q: %w", step.Name, ErrUnknown)
}

func bytesResult(b []byte, contentType string) Result {
	return Result{Body: io.NopCloser(bytes.NewReader(b)), ContentType: contentType, Size: int64(len(b))}
}

// readCapped reads the whole input, refusing more than max bytes.
func readCapped(ctx context.Context, name string, in Input, max int64) ([]byte, error) {
	if in.Size > max {
		return nil, errorf(http.StatusRequestEntityTooLarge, "%s: input of %d bytes is over the %d-byte limit", name, in.Size, max)
	}
	b, err := io.ReadAll(io.LimitReader(ctxio.Reader(ctx, in.Body), max+1))
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
