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
	_ "image/gif" // decoders for image.Decode
	_ "image/jpeg"
	_ "image/png"
	"net/http"
	"strconv"
	"strings"
	"unicode"

	"github.com/rwcarlsen/goexif/exif"
	"github.com/rwcarlsen/goexif/tiff"
	_ "golang.org/x/image/bmp" // decoders for image.Decode
	xwebp "golang.org/x/image/webp"

	"github.com/doraproject/dora/router/fop"
)

// readImage reads the input (capped) and checks its header: a format we
// decode and a pixel count within the limit. On a header error it still
// returns the bytes read (ignore-error/1 answers them).
func readImage(ctx context.Context, name string, in Input, lim limits) ([]byte, image.Config, string, error) {
	b, err := readCapped(ctx, name, in, lim.bytes)
	if err != nil {
		return nil, image.Config{}, "", err
	}
	cfg, format, err := decodeConfig(b)
	if err != nil {
		return b, image.Config{}, "", errorf(http.StatusBadRequest, "%s: not a supported image (jpeg, png, gif, webp, bmp): %v", name, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return b, image.Config{}, "", errorf(http.StatusBadRequest, "%s: image has no pixels", name)
	}
	if int64(cfg.Width)*int64(cfg.Height) > lim.pixels {
		return b, image.Config{}, "", errorf(http.StatusBadRequest, "%s: image of %dx%d is over the %d-pixel limit", name, cfg.Width, cfg.Height, lim.pixels)
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

// imageInfo answers Qiniu's {"size","format","width","height","colorModel"}
// (+frameNumber for gif).
func imageInfo(ctx context.Context, step fop.Step, in Input, lim limits) (Result, error) {
	if len(step.Args) != 0 {
		return Result{}, errorf(http.StatusBadRequest, "imageInfo: takes no arguments")
	}
	b, cfg, format, err := readImage(ctx, "imageInfo", in, lim)
	if err != nil {
		return Result{}, err
	}
	info := struct {
		Size        int    `json:"size"` // bytes of the file, first as in Qiniu's answer
		Format      string `json:"format"`
		Width       int    `json:"width"`
		Height      int    `json:"height"`
		ColorModel  string `json:"colorModel"`
		FrameNumber int    `json:"frameNumber,omitempty"`
	}{len(b), format, cfg.Width, cfg.Height, colorModelName(cfg.ColorModel), 0}
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
	if errors.Is(err, errExifStructure) {
		return Result{}, errorf(http.StatusBadRequest, "no exif data: %v", err)
	}
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

// decodeExif decodes the EXIF data of b (a JPEG's APP1 segment, or a
// TIFF). The decoder gets only the TIFF block checkTIFF has walked, so
// that corrupt input can make it neither loop nor allocate far beyond its
// size, and its panics on corrupt input are recovered.
func decodeExif(b []byte) (x *exif.Exif, err error) {
	defer func() {
		if r := recover(); r != nil {
			x, err = nil, fmt.Errorf("corrupt exif: %v", r)
		}
	}()
	t, ok := exifTIFF(b)
	if !ok {
		return nil, errors.New("no EXIF data")
	}
	if err := checkTIFF(t); err != nil {
		return nil, err
	}
	x, err = exif.Decode(bytes.NewReader(t))
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

// srcImage is a decoded input image.
type srcImage struct {
	raw    []byte // the input as read
	format string // image.Decode's name: jpeg, png, gif, webp, bmp
	img    image.Image
}

// decodeImage reads the input (capped), checks the header's pixel count
// against the limit, and only then decodes it.
func decodeImage(ctx context.Context, name string, in Input, lim limits) (srcImage, error) {
	b, cfg, format, err := readImage(ctx, name, in, lim)
	if err != nil {
		return srcImage{}, err
	}
	return decodeBytes(ctx, name, b, cfg, format)
}

// decodeBytes decodes an image readImage has checked (cfg is its header):
// an image of cfg's size at the origin.
func decodeBytes(ctx context.Context, name string, b []byte, cfg image.Config, format string) (srcImage, error) {
	var err error
	var img image.Image
	if format == "webp" {
		img, err = xwebp.Decode(bytes.NewReader(b))
	} else {
		img, _, err = image.Decode(bytes.NewReader(b))
	}
	if err != nil {
		return srcImage{}, errorf(http.StatusBadRequest, "%s: decode %s: %v", name, format, err)
	}
	if err := ctx.Err(); err != nil {
		return srcImage{}, err
	}
	return srcImage{raw: b, format: format, img: onScreen(img, cfg.Width, cfg.Height)}, nil
}

// onScreen places img on a w x h canvas at the origin, transparent where
// img does not cover it. image/gif decodes a GIF's first frame alone, with
// the frame's bounds, which may be a part of the logical screen (w x h,
// what the header and imageInfo say); a viewer shows it there. Any other
// image is returned as is. A paletted frame stays paletted, with a
// transparent entry added to its palette when it has none and there is
// room (a GIF output keeps its colours).
func onScreen(img image.Image, w, h int) image.Image {
	screen := image.Rect(0, 0, w, h)
	r := img.Bounds()
	if r == screen || !r.In(screen) {
		return img
	}
	if p, ok := img.(*image.Paletted); ok {
		clearIdx := -1
		for i, c := range p.Palette {
			if _, _, _, a := c.RGBA(); a == 0 {
				clearIdx = i
				break
			}
		}
		pal := p.Palette
		if clearIdx < 0 && len(pal) < 256 {
			pal = append(pal[:len(pal):len(pal)], color.RGBA{})
			clearIdx = len(pal) - 1
		}
		if clearIdx >= 0 {
			c := image.NewPaletted(screen, pal)
			if clearIdx != 0 {
				for i := range c.Pix {
					c.Pix[i] = uint8(clearIdx)
				}
			}
			for y := r.Min.Y; y < r.Max.Y; y++ {
				copy(c.Pix[c.PixOffset(r.Min.X, y):], p.Pix[p.PixOffset(r.Min.X, y):p.PixOffset(r.Min.X, y)+r.Dx()])
			}
			return c
		}
	}
	c := image.NewNRGBA(screen)
	draw.Draw(c, r, img, r.Min, draw.Src)
	return c
}

// checkOutput refuses an output over the edge or pixel limits (400).
func checkOutput(name string, w, h int, lim limits) error {
	if w > MaxEdge || h > MaxEdge {
		return errorf(http.StatusBadRequest, "%s: output of %dx%d is over the %d-pixel edge limit", name, w, h, MaxEdge)
	}
	if int64(w)*int64(h) > lim.pixels {
		return errorf(http.StatusBadRequest, "%s: output of %dx%d is over the %d-pixel limit", name, w, h, lim.pixels)
	}
	return nil
}

// isWebP reports a RIFF WEBP header.
func isWebP(b []byte) bool {
	return len(b) >= 12 && string(b[:4]) == "RIFF" && string(b[8:12]) == "WEBP"
}

// decodeConfig reads an image's header. WebP goes to golang.org/x/image/webp
// (pure Go) rather than to the encoder module's WASM decoder, which
// image.DecodeConfig would pick (it registers "webp" too).
func decodeConfig(b []byte) (image.Config, string, error) {
	if isWebP(b) {
		cfg, err := xwebp.DecodeConfig(bytes.NewReader(b))
		return cfg, "webp", err
	}
	return image.DecodeConfig(bytes.NewReader(b))
}
