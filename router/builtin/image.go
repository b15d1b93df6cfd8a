package builtin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/gif"
	"image/jpeg"
	"image/png"
	"net/http"
	"strconv"
	"strings"
	"unicode"

	"github.com/rwcarlsen/goexif/exif"
	"github.com/rwcarlsen/goexif/tiff"
	xdraw "golang.org/x/image/draw"

	"github.com/doraproject/dora/router/fop"
)

// readImage reads the input (capped) and checks its header: a format we
// decode and a pixel count within the limit.
func readImage(ctx context.Context, name string, in Input, lim limits) ([]byte, image.Config, string, error) {
	b, err := readCapped(ctx, name, in, lim.bytes)
	if err != nil {
		return nil, image.Config{}, "", err
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return nil, image.Config{}, "", errorf(http.StatusBadRequest, "%s: not a supported image (jpeg, png, gif): %v", name, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, image.Config{}, "", errorf(http.StatusBadRequest, "%s: image has no pixels", name)
	}
	if int64(cfg.Width)*int64(cfg.Height) > lim.pixels {
		return nil, image.Config{}, "", errorf(http.StatusRequestEntityTooLarge, "%s: image of %dx%d is over the %d-pixel limit", name, cfg.Width, cfg.Height, lim.pixels)
	}
	return b, cfg, format, nil
}

func colorModelName(m color.Model) string {
	switch m {
	case color.YCbCrModel:
		return "ycbcr"
	case color.NYCbCrAModel:
		return "nycbcra"
	case color.RGBAModel:
		return "rgba"
	case color.RGBA64Model:
		return "rgba64"
	case color.NRGBAModel:
		return "nrgba"
	case color.NRGBA64Model:
		return "nrgba64"
	case color.GrayModel:
		return "gray"
	case color.Gray16Model:
		return "gray16"
	case color.CMYKModel:
		return "cmyk"
	case color.AlphaModel:
		return "alpha"
	case color.Alpha16Model:
		return "alpha16"
	}
	if _, ok := m.(color.Palette); ok {
		return "palette"
	}
	return "unknown"
}

// imageInfo answers {"format","width","height","colorModel"} (+frameNumber for gif).
func imageInfo(ctx context.Context, step fop.Step, in Input, lim limits) (Result, error) {
	if len(step.Args) != 0 {
		return Result{}, errorf(http.StatusBadRequest, "imageInfo: takes no arguments")
	}
	b, cfg, format, err := readImage(ctx, "imageInfo", in, lim)
	if err != nil {
		return Result{}, err
	}
	info := struct {
		Format      string `json:"format"`
		Width       int    `json:"width"`
		Height      int    `json:"height"`
		ColorModel  string `json:"colorModel"`
		FrameNumber int    `json:"frameNumber,omitempty"`
	}{format, cfg.Width, cfg.Height, colorModelName(cfg.ColorModel), 0}
	if format == "gif" {
		n, err := gifFrames(b)
		if err != nil {
			return Result{}, errorf(http.StatusBadRequest, "imageInfo: %v", err)
		}
		info.FrameNumber = n
	}
	out, err := json.Marshal(info)
	if err != nil {
		return Result{}, fmt.Errorf("imageInfo: %w", err)
	}
	return bytesResult(out, "application/json"), nil
}

// gifFrames counts the image descriptors of a GIF by walking its blocks,
// without decoding any frame.
func gifFrames(b []byte) (int, error) {
	errBad := errors.New("truncated or corrupt gif")
	if len(b) < 13 {
		return 0, errBad
	}
	p := 13
	if flags := b[10]; flags&0x80 != 0 {
		p += 3 << (flags&7 + 1)
	}
	skipSubBlocks := func() bool {
		for {
			if p >= len(b) {
				return false
			}
			n := int(b[p])
			p++
			if n == 0 {
				return true
			}
			p += n
		}
	}
	frames := 0
	for {
		if p >= len(b) {
			return 0, errBad
		}
		switch b[p] {
		case 0x3b: // trailer
			return frames, nil
		case 0x21: // extension: label, then sub-blocks
			p += 2
			if !skipSubBlocks() {
				return 0, errBad
			}
		case 0x2c: // image descriptor
			if p+10 > len(b) {
				return 0, errBad
			}
			flags := b[p+9]
			p += 10
			if flags&0x80 != 0 {
				p += 3 << (flags&7 + 1)
			}
			p++ // LZW minimum code size
			if !skipSubBlocks() {
				return 0, errBad
			}
			frames++
		default:
			return 0, errBad
		}
	}
}

// exifInfo answers {"<Tag>":{"type":<tiff type>,"val":"<string>"}}; 400 when none.
func exifInfo(ctx context.Context, step fop.Step, in Input, lim limits) (res Result, err error) {
	if len(step.Args) != 0 {
		return Result{}, errorf(http.StatusBadRequest, "exif: takes no arguments")
	}
	b, err := readCapped(ctx, "exif", in, lim.bytes)
	if err != nil {
		return Result{}, err
	}
	x, err := decodeExif(b)
	if err != nil || x == nil {
		return Result{}, errorf(http.StatusBadRequest, "no exif data")
	}
	type field struct {
		Type int    `json:"type"`
		Val  string `json:"val"`
	}
	fields := map[string]field{}
	if err := x.Walk(walkFunc(func(name exif.FieldName, tag *tiff.Tag) error {
		fields[string(name)] = field{Type: int(tag.Type), Val: tagString(tag)}
		return nil
	})); err != nil {
		return Result{}, fmt.Errorf("exif: %w", err)
	}
	if len(fields) == 0 {
		return Result{}, errorf(http.StatusBadRequest, "no exif data")
	}
	out, err := json.Marshal(fields)
	if err != nil {
		return Result{}, fmt.Errorf("exif: %w", err)
	}
	return bytesResult(out, "application/json"), nil
}

// decodeExif shields the router from panics of the exif decoder on
// corrupt input.
func decodeExif(b []byte) (x *exif.Exif, err error) {
	defer func() {
		if r := recover(); r != nil {
			x, err = nil, fmt.Errorf("corrupt exif: %v", r)
		}
	}()
	x, err = exif.Decode(bytes.NewReader(b))
	if err != nil && x != nil && !exif.IsCriticalError(err) {
		return x, nil
	}
	return x, err
}

type walkFunc func(exif.FieldName, *tiff.Tag) error

func (f walkFunc) Walk(name exif.FieldName, tag *tiff.Tag) error { return f(name, tag) }

// tagString renders a tag value: text as is, numbers joined by ", ",
// rationals as "n/d".
func tagString(t *tiff.Tag) string {
	switch t.Format() {
	case tiff.StringVal:
		s, _ := t.StringVal()
		return strings.TrimRight(s, "\x00")
	case tiff.IntVal, tiff.RatVal, tiff.FloatVal:
		parts := make([]string, 0, t.Count)
		for i := 0; i < int(t.Count); i++ {
			switch t.Format() {
			case tiff.IntVal:
				v, _ := t.Int64(i)
				parts = append(parts, strconv.FormatInt(v, 10))
			case tiff.RatVal:
				n, d, _ := t.Rat2(i)
				parts = append(parts, strconv.FormatInt(n, 10)+"/"+strconv.FormatInt(d, 10))
			case tiff.FloatVal:
				v, _ := t.Float(i)
				parts = append(parts, strconv.FormatFloat(v, 'g', -1, 64))
			}
		}
		return strings.Join(parts, ", ")
	}
	v := bytes.TrimRight(t.Val, "\x00")
	printable := true
	for _, r := range string(v) {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			printable = false
			break
		}
	}
	if printable {
		return string(v)
	}
	return fmt.Sprintf("%x", t.Val)
}

// viewOpts are the parsed imageView2 arguments.
type viewOpts struct {
	mode, w, h, q int
	format        string // "" = same as input
}

const maxViewEdge = 9999

// parseView reads imageView2/<mode>/w/<W>/h/<H>[/q/<Q>][/format/<jpg|png|gif>];
// the key/value pairs may come in any order, each at most once, and at least
// one of w and h is required.
func parseView(args []string) (viewOpts, error) {
	var o viewOpts
	if len(args) == 0 {
		return o, errors.New("want imageView2/<mode>/w/<W>/h/<H>")
	}
	switch args[0] {
	case "1":
		o.mode = 1
	case "2":
		o.mode = 2
	default:
		return o, fmt.Errorf("unsupported mode %q (want 1 or 2)", args[0])
	}
	if len(args)%2 != 1 {
		return o, errors.New("arguments must be key/value pairs after the mode")
	}
	seen := map[string]bool{}
	num := func(k, v string, min, max int) (int, error) {
		n, err := strconv.Atoi(v)
		if err != nil || n < min || n > max || strconv.Itoa(n) != v {
			return 0, fmt.Errorf("%s: %q is not an integer in [%d, %d]", k, v, min, max)
		}
		return n, nil
	}
	for i := 1; i < len(args); i += 2 {
		k, v := args[i], args[i+1]
		if seen[k] {
			return o, fmt.Errorf("duplicate %q", k)
		}
		seen[k] = true
		var err error
		switch k {
		case "w":
			o.w, err = num(k, v, 1, maxViewEdge)
		case "h":
			o.h, err = num(k, v, 1, maxViewEdge)
		case "q":
			o.q, err = num(k, v, 1, 100)
		case "format":
			switch v {
			case "jpg", "png", "gif":
				o.format = v
			default:
				err = fmt.Errorf("format %q: want jpg, png or gif", v)
			}
		default:
			err = fmt.Errorf("unknown parameter %q", k)
		}
		if err != nil {
			return o, err
		}
	}
	if o.w == 0 && o.h == 0 {
		return o, errors.New("want at least one of w and h")
	}
	if o.q == 0 {
		o.q = 75
	}
	return o, nil
}

// viewSize computes the output size and the source rectangle to scale.
// Mode 1 crops the centre of the source to the target aspect and fills
// exactly WxH (a missing edge equals the other). Mode 2 fits within WxH
// keeping the aspect (a missing edge is unconstrained) and never enlarges.
func viewSize(o viewOpts, sw, sh int) (dw, dh int, src image.Rectangle) {
	src = image.Rect(0, 0, sw, sh)
	if o.mode == 1 {
		dw, dh = o.w, o.h
		if dw == 0 {
			dw = dh
		}
		if dh == 0 {
			dh = dw
		}
		// Crop the source to the dw:dh aspect.
		if int64(sw)*int64(dh) > int64(sh)*int64(dw) { // source wider
			cw := int(int64(sh) * int64(dw) / int64(dh))
			cw = max(cw, 1)
			x0 := (sw - cw) / 2
			src = image.Rect(x0, 0, x0+cw, sh)
		} else {
			ch := int(int64(sw) * int64(dh) / int64(dw))
			ch = max(ch, 1)
			y0 := (sh - ch) / 2
			src = image.Rect(0, y0, sw, y0+ch)
		}
		return dw, dh, src
	}
	scale := 1.0
	if o.w > 0 {
		scale = min(scale, float64(o.w)/float64(sw))
	}
	if o.h > 0 {
		scale = min(scale, float64(o.h)/float64(sh))
	}
	dw = max(1, int(float64(sw)*scale+0.5))
	dh = max(1, int(float64(sh)*scale+0.5))
	if o.w > 0 {
		dw = min(dw, o.w)
	}
	if o.h > 0 {
		dh = min(dh, o.h)
	}
	return dw, dh, src
}

// imageView2 makes a thumbnail (modes 1 and 2) in jpeg, png or gif.
func imageView2(ctx context.Context, step fop.Step, in Input, lim limits) (Result, error) {
	o, err := parseView(step.Args)
	if err != nil {
		return Result{}, errorf(http.StatusBadRequest, "imageView2: %v", err)
	}
	b, cfg, format, err := readImage(ctx, "imageView2", in, lim)
	if err != nil {
		return Result{}, err
	}
	dw, dh, srcRect := viewSize(o, cfg.Width, cfg.Height)
	if int64(dw)*int64(dh) > lim.pixels {
		return Result{}, errorf(http.StatusRequestEntityTooLarge, "imageView2: output of %dx%d is over the %d-pixel limit", dw, dh, lim.pixels)
	}
	src, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return Result{}, errorf(http.StatusBadRequest, "imageView2: decode %s: %v", format, err)
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	srcRect = srcRect.Add(src.Bounds().Min)
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	xdraw.CatmullRom.Scale(dst, dst.Bounds(), src, srcRect, xdraw.Src, nil)

	out := o.format
	if out == "" {
		out = map[string]string{"jpeg": "jpg", "png": "png", "gif": "gif"}[format]
	}
	var buf bytes.Buffer
	var ct string
	switch out {
	case "jpg":
		// JPEG has no alpha: flatten onto white rather than black.
		flat := image.NewRGBA(dst.Bounds())
		draw.Draw(flat, flat.Bounds(), image.White, image.Point{}, draw.Src)
		draw.Draw(flat, flat.Bounds(), dst, image.Point{}, draw.Over)
		err, ct = jpeg.Encode(&buf, flat, &jpeg.Options{Quality: o.q}), "image/jpeg"
	case "png":
		err, ct = png.Encode(&buf, dst), "image/png"
	case "gif":
		err, ct = gif.Encode(&buf, dst, nil), "image/gif"
	default:
		return Result{}, errorf(http.StatusBadRequest, "imageView2: cannot write format %q", format)
	}
	if err != nil {
		return Result{}, fmt.Errorf("imageView2: encode %s: %w", out, err)
	}
	return bytesResult(buf.Bytes(), ct), nil
}
