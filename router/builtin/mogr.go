package builtin

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/draw"
	"math"
	"net/http"
	"regexp"

	"github.com/rwcarlsen/goexif/exif"
	xdraw "golang.org/x/image/draw"
	"golang.org/x/image/math/f64"

	"github.com/doraproject/dora/router/fop"
)

// mogrOp is one imageMogr2 operation, applied in the order of the URL.
type mogrOp struct {
	key string
	val string
	// apply transforms the image (nil for output settings).
	apply func(ctx context.Context, st *mogrState) error
}

// mogrState is the image being worked on and the settings so far.
type mogrState struct {
	img     image.Image
	raw     []byte
	format  string
	gravity string
	lim     limits
	work    int64 // pixels processed so far (spend)
}

// spend charges the work of operation op (key and value, for the error)
// turning the current image into a w x h one: the larger of the two pixel
// counts. Over the request's budget, mogrBudgetImages times the pixel
// limit (MaxMogrPixels), it is a 400 and the work is not done.
func (st *mogrState) spend(op string, w, h int) error {
	b := st.img.Bounds()
	n := max(int64(b.Dx())*int64(b.Dy()), int64(w)*int64(h))
	budget := mogrBudgetImages * st.lim.pixels
	if st.work+n > budget {
		return errorf(http.StatusBadRequest, "imageMogr2: %s of a %dx%d image would bring the pixels this request processes to %d, over the %d-pixel budget of one request",
			op, b.Dx(), b.Dy(), st.work+n, budget)
	}
	st.work += n
	return nil
}

// gravities are Qiniu's anchor names.
var gravities = map[string]bool{
	"NorthWest": true, "North": true, "NorthEast": true, "West": true, "Center": true,
	"East": true, "SouthWest": true, "South": true, "SouthEast": true,
}

// anchor places a w x h box in a W x H image at gravity g, moved by dx, dy
// (dx, dy are margins from the anchoring edges, shifts for centred axes).
func anchor(g string, W, H, w, h, dx, dy int) image.Point {
	x, y := (W-w)/2+dx, (H-h)/2+dy
	switch g {
	case "NorthWest", "West", "SouthWest":
		x = dx
	case "NorthEast", "East", "SouthEast":
		x = W - w - dx
	}
	switch g {
	case "NorthWest", "North", "NorthEast":
		y = dy
	case "SouthWest", "South", "SouthEast":
		y = H - h - dy
	}
	return image.Pt(x, y)
}

var (
	reScaleBoth = regexp.MustCompile(`^!([0-9]+)p$`)
	reScaleW    = regexp.MustCompile(`^!([0-9]+)px$`)
	reScaleH    = regexp.MustCompile(`^!x([0-9]+)p$`)
	reWidth     = regexp.MustCompile(`^([0-9]+)x$`)
	reHeight    = regexp.MustCompile(`^x([0-9]+)$`)
	reBox       = regexp.MustCompile(`^(!?)([0-9]+)x([0-9]+)([!<>r]?)$`)
	reArea      = regexp.MustCompile(`^([0-9]+)@$`)
	reCrop      = regexp.MustCompile(`^([0-9]*)x([0-9]*)$`)
	reCropOff   = regexp.MustCompile(`^!([0-9]*)x([0-9]*)([a-])([0-9]+)([a-])([0-9]+)$`)
	reBlur      = regexp.MustCompile(`^([0-9]+)x([0-9]+)$`)
)

// thumbSize is a parsed thumbnail geometry: the output size for a source.
type thumbSize func(sw, sh int) (int, int)

func num(s string, lo, hi int) (int, error) { return parseInt("value", s, lo, hi) }

// parseThumb reads Qiniu's thumbnail geometries: !<P>p, !<P>px, !x<P>p,
// <W>x, x<H>, <W>x<H> (fit), !<W>x<H>r (cover), <W>x<H>! (exact),
// <W>x<H>> (shrink only), <W>x<H>< (enlarge only), <Area>@.
func parseThumb(g string) (thumbSize, error) {
	scale := func(sw, sh int, s float64) (int, int) { return round(float64(sw) * s), round(float64(sh) * s) }
	if m := reScaleBoth.FindStringSubmatch(g); m != nil {
		p, err := num(m[1], 1, 1000)
		if err != nil {
			return nil, err
		}
		return func(sw, sh int) (int, int) { return scale(sw, sh, float64(p)/100) }, nil
	}
	if m := reScaleW.FindStringSubmatch(g); m != nil {
		p, err := num(m[1], 1, 1000)
		if err != nil {
			return nil, err
		}
		return func(sw, sh int) (int, int) { return round(float64(sw) * float64(p) / 100), sh }, nil
	}
	if m := reScaleH.FindStringSubmatch(g); m != nil {
		p, err := num(m[1], 1, 1000)
		if err != nil {
			return nil, err
		}
		return func(sw, sh int) (int, int) { return sw, round(float64(sh) * float64(p) / 100) }, nil
	}
	if m := reWidth.FindStringSubmatch(g); m != nil {
		w, err := num(m[1], 1, MaxEdge)
		if err != nil {
			return nil, err
		}
		return func(sw, sh int) (int, int) { return w, round(float64(sh) * float64(w) / float64(sw)) }, nil
	}
	if m := reHeight.FindStringSubmatch(g); m != nil {
		h, err := num(m[1], 1, MaxEdge)
		if err != nil {
			return nil, err
		}
		return func(sw, sh int) (int, int) { return round(float64(sw) * float64(h) / float64(sh)), h }, nil
	}
	if m := reArea.FindStringSubmatch(g); m != nil {
		a, err := num(m[1], 1, 1_000_000_000)
		if err != nil {
			return nil, err
		}
		return func(sw, sh int) (int, int) {
			if float64(sw)*float64(sh) <= float64(a) {
				return sw, sh
			}
			s := math.Sqrt(float64(a) / (float64(sw) * float64(sh)))
			w, h := max(1, int(float64(sw)*s)), max(1, int(float64(sh)*s)) // floor: stay within the area
			return w, h
		}, nil
	}
	if m := reBox.FindStringSubmatch(g); m != nil {
		w, err := num(m[2], 1, MaxEdge)
		if err != nil {
			return nil, err
		}
		h, err := num(m[3], 1, MaxEdge)
		if err != nil {
			return nil, err
		}
		bang, suffix := m[1] == "!", m[4]
		if bang != (suffix == "r") {
			return nil, fmt.Errorf("want !<W>x<H>r for a cover, got %q", g)
		}
		fit := func(sw, sh int) (int, int) {
			return scale(sw, sh, min(float64(w)/float64(sw), float64(h)/float64(sh)))
		}
		switch suffix {
		case "":
			return fit, nil
		case "r":
			return func(sw, sh int) (int, int) {
				return scale(sw, sh, max(float64(w)/float64(sw), float64(h)/float64(sh)))
			}, nil
		case "!":
			return func(int, int) (int, int) { return w, h }, nil
		case ">":
			return func(sw, sh int) (int, int) {
				if sw > w || sh > h {
					return fit(sw, sh)
				}
				return sw, sh
			}, nil
		case "<":
			return func(sw, sh int) (int, int) {
				if sw < w && sh < h {
					return fit(sw, sh)
				}
				return sw, sh
			}, nil
		}
	}
	return nil, fmt.Errorf("unsupported geometry %q", g)
}

// maxCropOffset bounds a crop's offsets. They are not output sizes: an
// input may be wider or taller than MaxEdge (it is bounded by pixels).
const maxCropOffset = 99999

// parseCrop reads <W>x<H>, <W>x, x<H> and !<W>x<H>{a|-}<dx>{a|-}<dy>
// ('a' moves right/down, '-' left/up): the box for a source, placed at
// the gravity then moved. W and H are 1-MaxEdge, as Qiniu's; dx and dy
// 0-maxCropOffset.
func parseCrop(g string) (func(sw, sh int, grav string) image.Rectangle, error) {
	var ws, hs string
	dx, dy := 0, 0
	if m := reCrop.FindStringSubmatch(g); m != nil {
		ws, hs = m[1], m[2]
	} else if m := reCropOff.FindStringSubmatch(g); m != nil {
		ws, hs = m[1], m[2]
		var err error
		if dx, err = parseInt("x offset", m[4], 0, maxCropOffset); err != nil {
			return nil, err
		}
		if dy, err = parseInt("y offset", m[6], 0, maxCropOffset); err != nil {
			return nil, err
		}
		if m[3] == "-" {
			dx = -dx
		}
		if m[5] == "-" {
			dy = -dy
		}
	} else {
		return nil, fmt.Errorf("unsupported crop %q", g)
	}
	if ws == "" && hs == "" {
		return nil, fmt.Errorf("crop %q: want a width or a height", g)
	}
	w, h := 0, 0
	var err error
	if ws != "" {
		if w, err = parseInt("width", ws, 1, MaxEdge); err != nil {
			return nil, err
		}
	}
	if hs != "" {
		if h, err = parseInt("height", hs, 1, MaxEdge); err != nil {
			return nil, err
		}
	}
	return func(sw, sh int, grav string) image.Rectangle {
		cw, ch := w, h
		if cw == 0 || cw > sw {
			cw = sw
		}
		if ch == 0 || ch > sh {
			ch = sh
		}
		p := anchor(grav, sw, sh, cw, ch, 0, 0).Add(image.Pt(dx, dy))
		return image.Rectangle{Min: p, Max: p.Add(image.Pt(cw, ch))}.Intersect(image.Rect(0, 0, sw, sh))
	}, nil
}

// parseMogr reads imageMogr2's operations: auto-orient, strip (no value);
// thumbnail, gravity, crop, rotate, blur (applied in order); format,
// quality, interlace, ignore-error (output settings).
func parseMogr(args []string) ([]mogrOp, outOpts, error) {
	var ops []mogrOp
	var out outOpts
	if len(args) == 0 {
		return nil, out, errors.New("want imageMogr2/<operation>/<value>...")
	}
	for i := 0; i < len(args); i++ {
		k := args[i]
		switch k {
		case "auto-orient":
			ops = append(ops, mogrOp{key: k, apply: autoOrient})
			continue
		case "strip":
			continue // results never carry the input's metadata
		}
		if i+1 >= len(args) {
			return nil, out, fmt.Errorf("%q needs a value", k)
		}
		v := args[i+1]
		i++
		switch k {
		case "thumbnail":
			ts, err := parseThumb(v)
			if err != nil {
				return nil, out, fmt.Errorf("thumbnail: %w", err)
			}
			ops = append(ops, mogrOp{key: k, val: v, apply: func(ctx context.Context, st *mogrState) error {
				b := st.img.Bounds()
				w, h := ts(b.Dx(), b.Dy())
				if err := checkOutput("imageMogr2", w, h, st.lim); err != nil {
					return err
				}
				if w == b.Dx() && h == b.Dy() {
					return nil
				}
				if err := st.spend("thumbnail "+v, w, h); err != nil {
					return err
				}
				dst := image.NewRGBA(image.Rect(0, 0, w, h))
				xdraw.CatmullRom.Scale(dst, dst.Bounds(), st.img, b, xdraw.Src, nil)
				st.img = dst
				return nil
			}})
		case "gravity":
			if !gravities[v] {
				return nil, out, fmt.Errorf("gravity %q: want NorthWest, North, NorthEast, West, Center, East, SouthWest, South or SouthEast", v)
			}
			ops = append(ops, mogrOp{key: k, val: v, apply: func(_ context.Context, st *mogrState) error {
				st.gravity = v
				return nil
			}})
		case "crop":
			box, err := parseCrop(v)
			if err != nil {
				return nil, out, fmt.Errorf("crop: %w", err)
			}
			ops = append(ops, mogrOp{key: k, val: v, apply: func(_ context.Context, st *mogrState) error {
				b := st.img.Bounds()
				r := box(b.Dx(), b.Dy(), st.gravity)
				if r.Empty() {
					return errorf(http.StatusBadRequest, "imageMogr2: crop %q leaves nothing of a %dx%d image", v, b.Dx(), b.Dy())
				}
				if err := st.spend("crop "+v, r.Dx(), r.Dy()); err != nil {
					return err
				}
				dst := image.NewRGBA(image.Rect(0, 0, r.Dx(), r.Dy()))
				draw.Draw(dst, dst.Bounds(), st.img, r.Min.Add(b.Min), draw.Src)
				st.img = dst
				return nil
			}})
		case "rotate":
			deg, err := parseInt("rotate", v, 1, 360)
			if err != nil {
				return nil, out, err
			}
			ops = append(ops, mogrOp{key: k, val: v, apply: func(_ context.Context, st *mogrState) error {
				if deg == 360 {
					return nil
				}
				b := st.img.Bounds()
				w, h := rotatedSize(b.Dx(), b.Dy(), deg)
				if deg%90 != 0 { // a right angle keeps the pixels (and an input's long edge)
					if err := checkOutput("imageMogr2", w, h, st.lim); err != nil {
						return err
					}
				}
				if err := st.spend("rotate "+v, w, h); err != nil {
					return err
				}
				st.img = rotate(st.img, deg)
				return nil
			}})
		case "blur":
			m := reBlur.FindStringSubmatch(v)
			if m == nil {
				return nil, out, fmt.Errorf("blur %q: want <radius>x<sigma>", v)
			}
			r, err := parseInt("blur radius", m[1], 1, 50)
			if err != nil {
				return nil, out, err
			}
			sigma, err := parseInt("blur sigma", m[2], 1, 50)
			if err != nil {
				return nil, out, err
			}
			ops = append(ops, mogrOp{key: k, val: v, apply: func(ctx context.Context, st *mogrState) error {
				b := st.img.Bounds()
				if err := st.spend("blur "+v, b.Dx(), b.Dy()); err != nil {
					return err
				}
				img, err := gaussianBlur(ctx, st.img, r, float64(sigma))
				st.img = img
				return err
			}})
		case "format":
			if !outFormats[v] {
				return nil, out, fmt.Errorf("format %q: want jpg, png, gif, webp or bmp", v)
			}
			out.format = v
		case "quality":
			q, err := parseQuality(v)
			if err != nil {
				return nil, out, err
			}
			out.quality = q
		case "interlace":
			n, err := parseInt(k, v, 0, 1)
			if err != nil {
				return nil, out, err
			}
			out.interlace = n == 1
		case "ignore-error":
			if _, err := parseInt(k, v, 1, 1); err != nil {
				return nil, out, err
			}
		default:
			return nil, out, fmt.Errorf("unknown operation %q", k)
		}
	}
	return ops, out, nil
}

// imageMogr2 runs the advanced image operations in URL order.
func imageMogr2(ctx context.Context, step fop.Step, in Input, lim limits) (Result, error) {
	ignore := ignoreError(step.Args)
	ops, out, perr := parseMogr(step.Args)
	if perr != nil && !ignore {
		return Result{}, errorf(http.StatusBadRequest, "imageMogr2: %v", perr)
	}
	b, cfg, format, err := readImage(ctx, "imageMogr2", in, lim)
	fail := func(err error) (Result, error) {
		if ignore && b != nil && ctx.Err() == nil {
			return originalResult(b, in), nil
		}
		return Result{}, err
	}
	if err != nil {
		return fail(err)
	}
	if perr != nil {
		return fail(errorf(http.StatusBadRequest, "imageMogr2: %v", perr))
	}
	src, err := decodeBytes(ctx, "imageMogr2", b, cfg, format)
	if err != nil {
		return fail(err)
	}
	st := &mogrState{img: src.img, raw: b, format: format, gravity: "NorthWest", lim: lim}
	for _, op := range ops {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		if err := op.apply(ctx, st); err != nil {
			return fail(err)
		}
	}
	if out.format == "" {
		out.format = outName(format)
	}
	res, err := encodeImage(ctx, "imageMogr2", in.Env, st.img, out, lim)
	if err != nil {
		return fail(err)
	}
	return res, nil
}

// autoOrient turns the image upright by its EXIF Orientation (JPEG).
func autoOrient(_ context.Context, st *mogrState) error {
	if st.format != "jpeg" {
		return nil
	}
	x, err := decodeExif(st.raw)
	if err != nil || x == nil {
		return nil
	}
	tag, err := x.Get(exif.Orientation)
	if err != nil {
		return nil
	}
	o, err := tag.Int(0)
	if err != nil || o < 2 || o > 8 {
		return nil
	}
	b := st.img.Bounds()
	if err := st.spend("auto-orient", b.Dy(), b.Dx()); err != nil {
		return err
	}
	st.img = orient(st.img, o)
	return nil
}

// orient applies EXIF orientation o (2-8) to img.
func orient(img image.Image, o int) image.Image {
	b := img.Bounds()
	sw, sh := b.Dx(), b.Dy()
	dw, dh := sw, sh
	if o >= 5 {
		dw, dh = sh, sw
	}
	src := toRGBA(img)
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	for y := 0; y < dh; y++ {
		for x := 0; x < dw; x++ {
			var sx, sy int
			switch o {
			case 2:
				sx, sy = sw-1-x, y
			case 3:
				sx, sy = sw-1-x, sh-1-y
			case 4:
				sx, sy = x, sh-1-y
			case 5:
				sx, sy = y, x
			case 6: // 90° clockwise
				sx, sy = y, sh-1-x
			case 7:
				sx, sy = sw-1-y, sh-1-x
			case 8: // 90° counter-clockwise
				sx, sy = sw-1-y, x
			}
			si, di := src.PixOffset(sx, sy), dst.PixOffset(x, y)
			copy(dst.Pix[di:di+4], src.Pix[si:si+4])
		}
	}
	return dst
}

// toRGBA returns img as an *image.RGBA with bounds at the origin.
func toRGBA(img image.Image) *image.RGBA {
	if r, ok := img.(*image.RGBA); ok && r.Bounds().Min == (image.Point{}) {
		return r
	}
	b := img.Bounds()
	dst := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(dst, dst.Bounds(), img, b.Min, draw.Src)
	return dst
}

// rotatedSize is the canvas rotate turns a w x h image onto.
func rotatedSize(w, h, deg int) (int, int) {
	switch deg {
	case 90, 270:
		return h, w
	case 180, 360:
		return w, h
	}
	rad := float64(deg) * math.Pi / 180
	sin, cos := math.Abs(math.Sin(rad)), math.Abs(math.Cos(rad))
	fw, fh := float64(w), float64(h)
	return int(math.Ceil(fw*cos + fh*sin)), int(math.Ceil(fw*sin + fh*cos))
}

// rotate turns img clockwise by deg degrees; other than right angles the
// canvas grows to hold the turned image (rotatedSize, which the caller
// has checked against the limits) and the corners are transparent (white
// once written as JPEG).
func rotate(img image.Image, deg int) image.Image {
	switch deg {
	case 360:
		return img
	case 90:
		return orient(img, 6)
	case 180:
		return orient(img, 3)
	case 270:
		return orient(img, 8)
	}
	b := img.Bounds()
	rad := float64(deg) * math.Pi / 180
	sin, cos := math.Sin(rad), math.Cos(rad)
	fw, fh := float64(b.Dx()), float64(b.Dy())
	dw, dh := rotatedSize(b.Dx(), b.Dy(), deg)
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	// Source point p maps to centre_d + R(p - centre_s), R clockwise in
	// image coordinates (y down).
	cx, cy := fw/2+float64(b.Min.X), fh/2+float64(b.Min.Y)
	dx, dy := float64(dw)/2, float64(dh)/2
	m := f64.Aff3{
		cos, -sin, dx - cos*cx + sin*cy,
		sin, cos, dy - sin*cx - cos*cy,
	}
	xdraw.BiLinear.Transform(dst, m, img, b, xdraw.Over, nil)
	return dst
}

// gaussianBlur blurs img with a (2r+1)-tap Gaussian of the given sigma,
// horizontally then vertically, on premultiplied RGBA. Of the horizontal
// pass it keeps only the rows the vertical one needs, 2r+1 of them in a
// ring, not the whole image in floats. It stops when ctx ends.
func gaussianBlur(ctx context.Context, img image.Image, r int, sigma float64) (image.Image, error) {
	src := toRGBA(img)
	w, h := src.Bounds().Dx(), src.Bounds().Dy()
	k := make([]float64, 2*r+1)
	sum := 0.0
	for i := -r; i <= r; i++ {
		k[i+r] = math.Exp(-float64(i*i) / (2 * sigma * sigma))
		sum += k[i+r]
	}
	for i := range k {
		k[i] /= sum
	}
	n := min(2*r+1, h)             // rows in the ring: row j is at j%n
	ring := make([]float32, n*w*4) // horizontally blurred rows
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	next := 0 // the next source row to blur horizontally
	for y := 0; y < h; y++ {
		if y%64 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		for ; next <= min(y+r, h-1); next++ {
			row := ring[next%n*w*4:][:w*4]
			in := src.Pix[next*src.Stride:][:w*4]
			for x := 0; x < w; x++ {
				var acc [4]float64
				for i := -r; i <= r; i++ {
					o := min(max(x+i, 0), w-1) * 4
					for c := 0; c < 4; c++ {
						acc[c] += k[i+r] * float64(in[o+c])
					}
				}
				for c := 0; c < 4; c++ {
					row[x*4+c] = float32(acc[c])
				}
			}
		}
		out := dst.Pix[y*dst.Stride:][:w*4]
		for x := 0; x < w; x++ {
			var acc [4]float64
			for i := -r; i <= r; i++ {
				o := min(max(y+i, 0), h-1)%n*w*4 + x*4
				for c := 0; c < 4; c++ {
					acc[c] += k[i+r] * float64(ring[o+c])
				}
			}
			for c := 0; c < 4; c++ {
				out[x*4+c] = uint8(min(255, max(0, math.Floor(acc[c]+0.5))))
			}
		}
	}
	return dst, nil
}
