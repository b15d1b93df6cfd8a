package builtin

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"
	"net/http"

	xdraw "golang.org/x/image/draw"

	"github.com/doraproject/dora/router/fop"
)

// eachParam calls f with each key/value pair of args (the arguments after
// a command's mode) in order, and stops at f's first error: an odd count
// or a key given twice is an error.
func eachParam(args []string, f func(k, v string) error) error {
	if len(args)%2 != 0 {
		return errors.New("arguments must be key/value pairs after the mode")
	}
	seen := map[string]bool{}
	for i := 0; i < len(args); i += 2 {
		k, v := args[i], args[i+1]
		if seen[k] {
			return fmt.Errorf("duplicate %q", k)
		}
		seen[k] = true
		if err := f(k, v); err != nil {
			return err
		}
	}
	return nil
}

// viewOpts are the parsed imageView2 arguments.
type viewOpts struct {
	mode, w, h int
	out        outOpts
}

// parseView reads imageView2/<mode>[/w/<W>][/h/<H>][/q/<Q>][/format/<F>]
// [/interlace/<0|1>][/ignore-error/1]: mode 0-5, the key/value pairs in any
// order, each at most once, at least one of w and h.
func parseView(args []string) (viewOpts, error) {
	var o viewOpts
	if len(args) == 0 {
		return o, errors.New("want imageView2/<mode>/w/<W>/h/<H>")
	}
	m, err := parseInt("mode", args[0], 0, 5)
	if err != nil {
		return o, fmt.Errorf("unsupported mode %q (want 0 to 5)", args[0])
	}
	o.mode = m
	err = eachParam(args[1:], func(k, v string) error {
		var err error
		switch k {
		case "w":
			o.w, err = parseInt(k, v, 1, MaxEdge)
		case "h":
			o.h, err = parseInt(k, v, 1, MaxEdge)
		case "q":
			o.out.quality, err = parseQuality(v)
		case "format":
			if !outFormats[v] {
				err = fmt.Errorf("format %q: want jpg, png, gif, webp or bmp", v)
			}
			o.out.format = v
		case "interlace":
			var n int
			n, err = parseInt(k, v, 0, 1)
			o.out.interlace = n == 1
		case "ignore-error":
			_, err = parseInt(k, v, 1, 1)
		default:
			err = fmt.Errorf("unknown parameter %q", k)
		}
		return err
	})
	if err != nil {
		return o, err
	}
	if o.w == 0 && o.h == 0 {
		return o, errors.New("want at least one of w and h")
	}
	return o, nil
}

// ignoreError reports whether the arguments ask for ignore-error/1: on a
// failure, answer the original image.
func ignoreError(args []string) bool {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "ignore-error" && args[i+1] == "1" {
			return true
		}
	}
	return false
}

func round(f float64) int { return max(1, int(math.Floor(f+0.5))) }

// viewSize computes the output size and the source rectangle to scale,
// as Qiniu documents the modes; no mode ever enlarges:
//
//	0: long edge <= w, short edge <= h (a missing bound is free)
//	2: width <= w, height <= h (a missing bound is free)
//	3: width >= w, height >= h (a missing bound equals the other)
//	4: long edge >= w, short edge >= h (likewise)
//	1: as 3, then the centre w x h is cut out
//	5: as 4, then the centre (long w, short h) is cut out
//
// When the box of 1 or 5 is larger than the image, the box shrinks (its
// aspect kept) until it fits.
func viewSize(o viewOpts, sw, sh int) (dw, dh int, src image.Rectangle) {
	src = image.Rect(0, 0, sw, sh)
	fw, fh := float64(sw), float64(sh)
	long, short := max(fw, fh), min(fw, fh)
	w, h := float64(o.w), float64(o.h)
	switch o.mode {
	case 0, 2:
		s := 1.0
		if o.mode == 0 {
			if w > 0 {
				s = min(s, w/long)
			}
			if h > 0 {
				s = min(s, h/short)
			}
		} else {
			if w > 0 {
				s = min(s, w/fw)
			}
			if h > 0 {
				s = min(s, h/fh)
			}
		}
		return round(fw * s), round(fh * s), src
	}
	if w == 0 {
		w = h
	}
	if h == 0 {
		h = w
	}
	switch o.mode {
	case 3, 4:
		var s float64
		if o.mode == 3 {
			s = max(w/fw, h/fh)
		} else {
			s = max(w/long, h/short)
		}
		s = min(s, 1)
		return round(fw * s), round(fh * s), src
	}
	bw, bh := w, h
	if o.mode == 5 && fh > fw { // the long edge of the box follows the image's
		bw, bh = h, w
	}
	k := min(1, fw/bw, fh/bh)
	bw, bh = bw*k, bh*k
	s := max(bw/fw, bh/fh) // source to output, <= 1
	cw, ch := min(fw, bw/s), min(fh, bh/s)
	x0, y0 := (fw-cw)/2, (fh-ch)/2
	src = image.Rect(int(math.Floor(x0+0.5)), int(math.Floor(y0+0.5)), int(math.Floor(x0+cw+0.5)), int(math.Floor(y0+ch+0.5)))
	if src.Empty() {
		src = image.Rect(0, 0, 1, 1)
	}
	return round(bw), round(bh), src
}

// imageView2 makes a thumbnail (modes 0-5) in jpg, png, gif, webp or bmp.
func imageView2(ctx context.Context, step fop.Step, in Input, lim limits) (Result, error) {
	res, raw, err := imageView2Run(ctx, step, in, lim)
	if err != nil && raw != nil && ignoreError(step.Args) && ctx.Err() == nil {
		return originalResult(raw, in), nil
	}
	return res, err
}

// originalResult answers the input as it came (ignore-error/1).
func originalResult(raw []byte, in Input) Result {
	ct := in.MimeType
	if ct == "" {
		ct = http.DetectContentType(raw)
	}
	return bytesResult(raw, ct)
}

// imageView2Run does the work; raw is the input when it was read.
func imageView2Run(ctx context.Context, step fop.Step, in Input, lim limits) (Result, []byte, error) {
	o, perr := parseView(step.Args)
	if perr != nil && !ignoreError(step.Args) {
		return Result{}, nil, errorf(http.StatusBadRequest, "imageView2: %v", perr)
	}
	b, cfg, format, err := readImage(ctx, "imageView2", in, lim)
	if err != nil {
		return Result{}, b, err
	}
	if perr != nil {
		return Result{}, b, errorf(http.StatusBadRequest, "imageView2: %v", perr)
	}
	dw, dh, srcRect := viewSize(o, cfg.Width, cfg.Height)
	if err := checkOutput("imageView2", dw, dh, lim); err != nil {
		return Result{}, b, err
	}
	src, err := decodeBytes(ctx, "imageView2", b, cfg, format)
	if err != nil {
		return Result{}, b, err
	}
	srcRect = srcRect.Add(src.img.Bounds().Min)
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	xdraw.CatmullRom.Scale(dst, dst.Bounds(), src.img, srcRect, xdraw.Src, nil)
	if o.out.format == "" {
		o.out.format = outName(format)
	}
	res, err := encodeImage(ctx, "imageView2", in.Env, dst, o.out, lim)
	return res, b, err
}
