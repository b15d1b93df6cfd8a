package builtin

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	xdraw "golang.org/x/image/draw"
	"golang.org/x/image/font"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"

	"github.com/doraproject/dora/router/fop"
)

// wmOpts are the parsed watermark arguments.
type wmOpts struct {
	mode     int // 1 image, 2 text
	imageURL string
	ws       float64 // image: scale to this share of the source's edge (wst), 0 = as is
	wst      int     // 0 short edge, 1 long edge, 2 width, 3 height
	text     string
	fontName string
	fontSize int // twips (1/20 point); 72 dpi: pixels = twips/20
	fill     color.NRGBA
	dissolve int // opacity 1-100
	gravity  string
	dx, dy   int
}

// MaxWatermarkText bounds the decoded text of a text watermark.
const MaxWatermarkText = 1024

// decodeB64 reads Qiniu's URL-safe base64, padded or not.
func decodeB64(k, v string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(v, "="))
	if err != nil {
		return "", fmt.Errorf("%s: not URL-safe base64: %v", k, err)
	}
	return string(b), nil
}

// namedColors are the colour names a fill may use.
var namedColors = map[string]color.NRGBA{
	"white": {255, 255, 255, 255}, "black": {0, 0, 0, 255}, "red": {255, 0, 0, 255},
	"green": {0, 128, 0, 255}, "blue": {0, 0, 255, 255}, "yellow": {255, 255, 0, 255},
	"gray": {128, 128, 128, 255}, "grey": {128, 128, 128, 255},
}

func parseColor(s string) (color.NRGBA, error) {
	if c, ok := namedColors[strings.ToLower(s)]; ok {
		return c, nil
	}
	h := strings.TrimPrefix(s, "#")
	if len(h) != 6 || h == s {
		return color.NRGBA{}, fmt.Errorf("fill %q: want #RRGGBB or a colour name", s)
	}
	v, err := strconv.ParseUint(h, 16, 32)
	if err != nil {
		return color.NRGBA{}, fmt.Errorf("fill %q: want #RRGGBB or a colour name", s)
	}
	return color.NRGBA{uint8(v >> 16), uint8(v >> 8), uint8(v), 255}, nil
}

// parseWatermark reads watermark/1/image/<b64 URL>[/dissolve/..][/gravity/..]
// [/dx/..][/dy/..][/ws/..][/wst/..] and watermark/2/text/<b64>[/font/<b64>]
// [/fontsize/<twips>][/fill/<b64 colour>][/dissolve/..][/gravity/..][/dx/..][/dy/..].
func parseWatermark(args []string) (wmOpts, error) {
	o := wmOpts{fontSize: 240, fill: namedColors["white"], dissolve: 100, gravity: "SouthEast", dx: 10, dy: 10}
	if len(args) == 0 || (args[0] != "1" && args[0] != "2") {
		return o, errors.New("want watermark/1/image/<encodedURL>... or watermark/2/text/<encodedText>...")
	}
	o.mode = int(args[0][0] - '0')
	err := eachParam(args[1:], func(k, v string) error {
		var err error
		switch {
		case k == "dissolve":
			o.dissolve, err = parseInt(k, v, 1, 100)
		case k == "gravity":
			if !gravities[v] {
				err = fmt.Errorf("gravity %q: want NorthWest ... SouthEast", v)
			}
			o.gravity = v
		case k == "dx":
			o.dx, err = parseInt(k, v, -MaxEdge, MaxEdge)
		case k == "dy":
			o.dy, err = parseInt(k, v, -MaxEdge, MaxEdge)
		case o.mode == 1 && k == "image":
			o.imageURL, err = decodeB64(k, v)
		case o.mode == 1 && k == "ws":
			o.ws, err = strconv.ParseFloat(v, 64)
			if err != nil || !(o.ws > 0 && o.ws <= 1) {
				err = fmt.Errorf("ws %q: want a number in (0, 1]", v)
			}
		case o.mode == 1 && k == "wst":
			o.wst, err = parseInt(k, v, 0, 3)
		case o.mode == 2 && k == "text":
			o.text, err = decodeB64(k, v)
		case o.mode == 2 && k == "font":
			o.fontName, err = decodeB64(k, v)
		case o.mode == 2 && k == "fontsize":
			o.fontSize, err = parseInt(k, v, 20, 20000)
		case o.mode == 2 && k == "fill":
			var s string
			if s, err = decodeB64(k, v); err == nil {
				o.fill, err = parseColor(s)
			}
		default:
			err = fmt.Errorf("unknown parameter %q for mode %d", k, o.mode)
		}
		return err
	})
	if err != nil {
		return o, err
	}
	switch {
	case o.mode == 1 && o.imageURL == "":
		return o, errors.New("mode 1 needs image/<encodedURL>")
	case o.mode == 2 && o.text == "":
		return o, errors.New("mode 2 needs text/<encodedText>")
	case len(o.text) > MaxWatermarkText:
		return o, fmt.Errorf("text of %d bytes, more than %d", len(o.text), MaxWatermarkText)
	}
	return o, nil
}

// watermark lays an image (mode 1) or a text (mode 2) on the input.
func watermark(ctx context.Context, step fop.Step, in Input, lim limits) (Result, error) {
	o, err := parseWatermark(step.Args)
	if err != nil {
		return Result{}, errorf(http.StatusBadRequest, "watermark: %v", err)
	}
	src, err := decodeImage(ctx, "watermark", in, lim)
	if err != nil {
		return Result{}, err
	}
	base := toRGBA(src.img)
	if base == src.img { // never draw on the decoder's image in place
		c := image.NewRGBA(base.Bounds())
		copy(c.Pix, base.Pix)
		base = c
	}
	var mark image.Image
	if o.mode == 1 {
		mark, err = watermarkImage(ctx, in.Env, o, base.Bounds().Size(), lim)
	} else {
		mark, err = watermarkText(in.Env, o)
	}
	if err != nil {
		return Result{}, err
	}
	mb := mark.Bounds()
	at := anchor(o.gravity, base.Bounds().Dx(), base.Bounds().Dy(), mb.Dx(), mb.Dy(), o.dx, o.dy)
	mask := image.NewUniform(color.Alpha{uint8(math.Floor(float64(o.dissolve)*255/100 + 0.5))})
	draw.DrawMask(base, image.Rectangle{Min: at, Max: at.Add(mb.Size())}, mark, mb.Min, mask, image.Point{}, draw.Over)
	return encodeImage(ctx, "watermark", in.Env, base, outOpts{format: outName(src.format)}, lim)
}

// watermarkImage fetches, decodes (bounded) and scales the mark.
func watermarkImage(ctx context.Context, env *Env, o wmOpts, size image.Point, lim limits) (image.Image, error) {
	if env == nil || env.Fetch == nil {
		return nil, errorf(http.StatusBadRequest, "watermark: image watermarks are not enabled here")
	}
	rc, err := env.Fetch(ctx, o.imageURL)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return nil, e
		}
		return nil, errorf(http.StatusBadRequest, "watermark: image %q: %v", o.imageURL, err)
	}
	defer rc.Close()
	m, err := decodeImage(ctx, "watermark image", Input{Body: io.Reader(rc), Size: -1}, lim)
	if err != nil {
		return nil, err
	}
	img := m.img
	if o.ws > 0 {
		ref := [4]int{min(size.X, size.Y), max(size.X, size.Y), size.X, size.Y}[o.wst]
		b := img.Bounds()
		edge := [4]int{min(b.Dx(), b.Dy()), max(b.Dx(), b.Dy()), b.Dx(), b.Dy()}[o.wst]
		s := o.ws * float64(ref) / float64(edge)
		w, h := round(float64(b.Dx())*s), round(float64(b.Dy())*s)
		if err := checkOutput("watermark", w, h, lim); err != nil {
			return nil, err
		}
		dst := image.NewRGBA(image.Rect(0, 0, w, h))
		xdraw.CatmullRom.Scale(dst, dst.Bounds(), img, b, xdraw.Src, nil)
		img = dst
	}
	return img, nil
}

// fontFile picks a DejaVu font for a requested name: Mono, Serif and Bold
// when the name says so, else DejaVu Sans (which has no CJK glyphs).
func fontFile(name string) string {
	n := strings.ToLower(name)
	family := "DejaVuSans"
	switch {
	case strings.Contains(n, "mono") || strings.Contains(n, "courier"):
		family = "DejaVuSansMono"
	case strings.Contains(n, "serif") && !strings.Contains(n, "sans") || strings.Contains(n, "times") || strings.Contains(n, "宋"):
		family = "DejaVuSerif"
	}
	if strings.Contains(n, "bold") || strings.Contains(n, "黑") {
		family += "-Bold"
	}
	return family + ".ttf"
}

// watermarkText renders the text in the fill colour on a transparent
// image just large enough to hold it.
func watermarkText(env *Env, o wmOpts) (image.Image, error) {
	path := filepath.Join(env.fontDir(), fontFile(o.fontName))
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, errorf(http.StatusInternalServerError, "watermark: font %s (Debian fonts-dejavu-core): %v", path, err)
	}
	f, err := opentype.Parse(b)
	if err != nil {
		return nil, errorf(http.StatusInternalServerError, "watermark: font %s: %v", path, err)
	}
	face, err := opentype.NewFace(f, &opentype.FaceOptions{Size: float64(o.fontSize) / 20, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "watermark: font size: %v", err)
	}
	defer face.Close()
	m := face.Metrics()
	w := font.MeasureString(face, o.text).Ceil()
	h := (m.Ascent + m.Descent).Ceil()
	if w <= 0 || h <= 0 {
		return nil, errorf(http.StatusBadRequest, "watermark: text renders empty")
	}
	if err := checkOutput("watermark", w, h, defaultLimits); err != nil {
		return nil, err
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	d := font.Drawer{Dst: dst, Src: image.NewUniform(o.fill), Face: face, Dot: fixed.Point26_6{X: 0, Y: m.Ascent}}
	d.DrawString(o.text)
	return dst, nil
}
