package builtin

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color/palette"
	"image/draw"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"os/exec"
	"strings"

	"github.com/gen2brain/webp"
	"golang.org/x/image/bmp"
)

// outOpts says how a result image is written.
type outOpts struct {
	format    string // jpg, png, gif, webp, bmp; "" = the input's
	quality   int    // 1-100, jpg and webp; 0 = 75
	interlace bool   // progressive JPEG (other formats: ignored, as Qiniu)
}

// outFormats are the formats a result can be written in.
var outFormats = map[string]bool{"jpg": true, "png": true, "gif": true, "webp": true, "bmp": true}

// outName is the output name of a decoded format.
func outName(decoded string) string {
	if decoded == "jpeg" {
		return "jpg"
	}
	return decoded
}

// parseQuality reads a quality 1-100, optionally ending in "!" (Qiniu's
// "force": here every quality is applied as given).
func parseQuality(v string) (int, error) {
	return parseInt("quality", strings.TrimSuffix(v, "!"), 1, 100)
}

// parseInt reads a canonical decimal in [lo, hi].
func parseInt(k, v string, lo, hi int) (int, error) {
	n, err := atoiStrict(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s: %q is not an integer in [%d, %d]", k, v, lo, hi)
	}
	return n, nil
}

// atoiStrict accepts an optional '-' and digits without leading zeros.
func atoiStrict(v string) (int, error) {
	neg := strings.HasPrefix(v, "-")
	d := strings.TrimPrefix(v, "-")
	if d == "" || len(d) > 9 || (len(d) > 1 && d[0] == '0') {
		return 0, fmt.Errorf("bad integer %q", v)
	}
	n := 0
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return 0, fmt.Errorf("bad integer %q", v)
		}
		n = n*10 + int(d[i]-'0')
	}
	if neg {
		n = -n
	}
	return n, nil
}

// encodeImage writes img in o's format. The encoders write into a writer
// that fails once ctx ends, so PNG, GIF and BMP stop there (JPEG's stops
// writing, not computing: about a second at the pixel limit); WebP's
// cannot be stopped, so a WebP over lim.webpPixels is refused (400).
func encodeImage(ctx context.Context, name string, env *Env, img image.Image, o outOpts, lim limits) (Result, error) {
	q := o.quality
	if q == 0 {
		q = 75
	}
	b := img.Bounds()
	if o.format == "webp" && int64(b.Dx())*int64(b.Dy()) > lim.webpPixels {
		return Result{}, errorf(http.StatusBadRequest, "%s: a webp output of %dx%d is over the %d-pixel limit of webp outputs", name, b.Dx(), b.Dy(), lim.webpPixels)
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	var buf bytes.Buffer
	w := ctxWriter{ctx: ctx, w: &buf}
	var ct string
	var err error
	switch o.format {
	case "jpg":
		// JPEG has no alpha: flatten onto white rather than black.
		flat := image.NewRGBA(b)
		draw.Draw(flat, flat.Bounds(), image.White, image.Point{}, draw.Src)
		draw.Draw(flat, flat.Bounds(), img, b.Min, draw.Over)
		err, ct = jpeg.Encode(w, flat, &jpeg.Options{Quality: q}), "image/jpeg"
		if err == nil && o.interlace {
			var p []byte
			if p, err = progressive(ctx, env, buf.Bytes()); err == nil {
				buf.Reset()
				buf.Write(p)
			}
		}
	case "png":
		err, ct = png.Encode(w, img), "image/png"
	case "gif":
		var pm *image.Paletted
		if pm, err = paletted(ctx, img); err != nil {
			return Result{}, err
		}
		err, ct = gif.Encode(w, pm, nil), "image/gif"
	case "webp":
		err, ct = webp.Encode(&buf, img, webp.Options{Quality: q}), "image/webp"
	case "bmp":
		err, ct = bmp.Encode(w, img), "image/bmp"
	default:
		return Result{}, errorf(http.StatusBadRequest, "%s: cannot write format %q", name, o.format)
	}
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}
	if err != nil {
		if e, ok := err.(*Error); ok {
			return Result{}, e
		}
		return Result{}, fmt.Errorf("%s: encode %s: %w", name, o.format, err)
	}
	return bytesResult(buf.Bytes(), ct), nil
}

// ctxWriter fails every write once ctx ends, which stops an encoder that
// returns on a write error.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// paletted returns img in at most 256 colours, as gif.Encode would make
// it (Plan 9 palette, Floyd-Steinberg), but in bands of rows with the
// context checked between them: the nearest-colour search costs about a
// second for a few megapixels, and would run on after the request ends.
// The error diffusion restarts at each band.
func paletted(ctx context.Context, img image.Image) (*image.Paletted, error) {
	if p, ok := img.(*image.Paletted); ok && len(p.Palette) <= 256 {
		return p, nil
	}
	const band = 64 // rows
	b := img.Bounds()
	pm := image.NewPaletted(b, palette.Plan9)
	for y := b.Min.Y; y < b.Max.Y; y += band {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r := image.Rect(b.Min.X, y, b.Max.X, min(y+band, b.Max.Y))
		draw.FloydSteinberg.Draw(pm, r, img, r.Min)
	}
	return pm, nil
}

// progressive rewrites a baseline JPEG as a progressive one with jpegtran
// (lossless: the coefficients are kept).
func progressive(ctx context.Context, env *Env, baseline []byte) ([]byte, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, env.jpegtran(), "-progressive", "-copy", "none")
	cmd.Stdin = bytes.NewReader(baseline)
	cmd.Stdout = &out
	cmd.Stderr = &limitedBuffer{max: 4 << 10, b: &errb}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, errorf(http.StatusInternalServerError, "interlace: jpegtran (Debian libjpeg-turbo-progs): %v %s", err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// limitedBuffer keeps the first max bytes written and drops the rest.
type limitedBuffer struct {
	max int
	b   *bytes.Buffer
	cut bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		if len(p) > room {
			l.b.Write(p[:room])
			l.cut = true
		} else {
			l.b.Write(p)
		}
	} else if len(p) > 0 {
		l.cut = true
	}
	return len(p), nil
}
