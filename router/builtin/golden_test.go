package builtin

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	xwebp "golang.org/x/image/webp"
)

// quadrants is a w x h image whose quarters are red (NW), green (NE),
// blue (SW) and white (SE).
func quadrants(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.RGBA{255, 0, 0, 255}
			switch {
			case x >= w/2 && y < h/2:
				c = color.RGBA{0, 255, 0, 255}
			case x < w/2 && y >= h/2:
				c = color.RGBA{0, 0, 255, 255}
			case x >= w/2 && y >= h/2:
				c = color.RGBA{255, 255, 255, 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

// near reports whether c is within tol of (r, g, b) on every channel.
func near(c color.Color, r, g, b uint8, tol int) bool {
	cr, cg, cb, _ := c.RGBA()
	d := func(a uint32, b uint8) bool { x := int(a>>8) - int(b); return x <= tol && x >= -tol }
	return d(cr, r) && d(cg, g) && d(cb, b)
}

func wantPixel(t *testing.T, what string, img image.Image, x, y int, r, g, b uint8, tol int) {
	t.Helper()
	c := img.At(img.Bounds().Min.X+x, img.Bounds().Min.Y+y)
	if !near(c, r, g, b, tol) {
		cr, cg, cb, _ := c.RGBA()
		t.Fatalf("%s: pixel (%d,%d) = (%d,%d,%d), want (%d,%d,%d) ±%d", what, x, y, cr>>8, cg>>8, cb>>8, r, g, b, tol)
	}
}

func wantSize(t *testing.T, what string, img image.Image, w, h int) {
	t.Helper()
	if s := img.Bounds().Size(); s.X != w || s.Y != h {
		t.Fatalf("%s: size %v, want %dx%d", what, s, w, h)
	}
}

func solid(w, h int, c color.RGBA) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	return img
}

func b64(s string) string { return base64.URLEncoding.EncodeToString([]byte(s)) }

// TestImageView2FormatsGolden: every output format decodes to the asked
// size with the picture kept (pixel checks within a tolerance).
func TestImageView2FormatsGolden(t *testing.T) {
	in := encPNG(t, quadrants(200, 100))
	for _, c := range []struct {
		format, ct, decoded string
		tol                 int
	}{
		{"jpg", "image/jpeg", "jpeg", 40}, {"png", "image/png", "png", 2}, {"gif", "image/gif", "gif", 40},
		{"webp", "image/webp", "webp", 40}, {"bmp", "image/bmp", "bmp", 2},
	} {
		t.Run(c.format, func(t *testing.T) {
			b, res, err := runBytes(t, "imageView2/2/w/100/h/100/format/"+c.format, in)
			if err != nil {
				t.Fatal(err)
			}
			if res.ContentType != c.ct {
				t.Fatalf("Content-Type %q want %q", res.ContentType, c.ct)
			}
			var img image.Image
			var format string
			if c.format == "webp" {
				img, err = xwebp.Decode(bytes.NewReader(b))
				format = "webp"
			} else {
				img, format, err = image.Decode(bytes.NewReader(b))
			}
			if err != nil || format != c.decoded {
				t.Fatalf("decode: %v (%s)", err, format)
			}
			wantSize(t, c.format, img, 100, 50)
			wantPixel(t, c.format+" NW", img, 10, 10, 255, 0, 0, c.tol)
			wantPixel(t, c.format+" NE", img, 90, 10, 0, 255, 0, c.tol)
			wantPixel(t, c.format+" SW", img, 10, 40, 0, 0, 255, c.tol)
			wantPixel(t, c.format+" SE", img, 90, 40, 255, 255, 255, c.tol)
		})
	}
}

// TestWebPInput: a WebP result is itself an input the built-ins read.
func TestWebPInput(t *testing.T) {
	w, _, err := runBytes(t, "imageView2/2/w/100/format/webp", encPNG(t, quadrants(200, 100)))
	if err != nil {
		t.Fatal(err)
	}
	b, res, err := runBytes(t, "imageView2/2/w/50", w)
	if err != nil || res.ContentType != "image/webp" {
		t.Fatalf("webp in, webp out: %v %q", err, res.ContentType)
	}
	img, err := xwebp.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	wantSize(t, "webp->webp", img, 50, 25)
	wantPixel(t, "webp->webp", img, 5, 5, 255, 0, 0, 40)
	info, _, err := runBytes(t, "imageInfo", w)
	if err != nil || !strings.Contains(string(info), `"format":"webp","width":100,"height":50`) {
		t.Fatalf("imageInfo of webp: %v %s", err, info)
	}
}

// webpClaiming is a WebP whose VP8X header declares a w x h canvas.
func webpClaiming(w, h int) []byte {
	x := []byte("VP8X")
	x = binary.LittleEndian.AppendUint32(x, 10)
	x = append(x, 0, 0, 0, 0)
	x = append(x, byte(w-1), byte((w-1)>>8), byte((w-1)>>16), byte(h-1), byte((h-1)>>8), byte((h-1)>>16))
	body := append([]byte("WEBP"), x...)
	return append(append([]byte("RIFF"), binary.LittleEndian.AppendUint32(nil, uint32(len(body)))...), body...)
}

// TestImageView2Interlace: interlace/1 writes a progressive JPEG (SOF2).
func TestImageView2Interlace(t *testing.T) {
	in := encPNG(t, quadrants(64, 64))
	b, _, err := runBytes(t, "imageView2/2/w/32/format/jpg/interlace/1", in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte{0xff, 0xc2}) {
		t.Fatal("interlace/1: no SOF2 (progressive) marker")
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	wantSize(t, "progressive", img, 32, 32)
	wantPixel(t, "progressive", img, 4, 4, 255, 0, 0, 40)
	base, _, err := runBytes(t, "imageView2/2/w/32/format/jpg/interlace/0", in)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(base, []byte{0xff, 0xc2}) || !bytes.Contains(base, []byte{0xff, 0xc0}) {
		t.Fatal("interlace/0: want a baseline JPEG (SOF0)")
	}
}

// TestIgnoreError: ignore-error/1 answers the original on a failure.
func TestIgnoreError(t *testing.T) {
	notImage := []byte("plain text, not an image")
	for _, f := range []string{"imageView2/2/w/10/ignore-error/1", "imageMogr2/thumbnail/10x/ignore-error/1", "imageView2/9/w/10/ignore-error/1", "imageMogr2/crop/x/ignore-error/1"} {
		b, _, err := runBytes(t, f, notImage)
		if err != nil || !bytes.Equal(b, notImage) {
			t.Fatalf("%s: %v %q, want the original", f, err, b)
		}
	}
	_, _, err := runBytes(t, "imageView2/2/w/10", notImage)
	wantStatus(t, err, http.StatusBadRequest, "not a supported image")
}

// TestImageMogr2Thumbnail: Qiniu's thumbnail geometries on 200x100.
func TestImageMogr2Thumbnail(t *testing.T) {
	in := encPNG(t, quadrants(200, 100))
	for _, c := range []struct {
		geom string
		w, h int
	}{
		{"!50p", 100, 50}, {"!150p", 300, 150}, {"!50px", 100, 100}, {"!x50p", 200, 50},
		{"100x", 100, 50}, {"400x", 400, 200}, {"x50", 100, 50},
		{"100x100", 100, 50}, {"400x400", 400, 200}, {"!100x100r", 200, 100}, {"!50x50r", 100, 50},
		{"100x100!", 100, 100}, {"100x100%3E", 100, 50}, {"300x300%3E", 200, 100},
		{"300x300%3C", 300, 150}, {"100x100%3C", 200, 100}, {"5000@", 100, 50}, {"50000@", 200, 100},
	} {
		t.Run(c.geom, func(t *testing.T) {
			b, _, err := runBytes(t, "imageMogr2/thumbnail/"+c.geom, in)
			if err != nil {
				t.Fatal(err)
			}
			img, _ := decode(t, b)
			wantSize(t, c.geom, img, c.w, c.h)
			if c.geom != "100x100!" && c.geom != "!50px" && c.geom != "!x50p" {
				wantPixel(t, c.geom, img, c.w/4, c.h/4, 255, 0, 0, 4)
				wantPixel(t, c.geom, img, 3*c.w/4, 3*c.h/4, 255, 255, 255, 4)
			}
		})
	}
	for _, bad := range []string{"imageMogr2/thumbnail/abc", "imageMogr2/thumbnail/100x100r", "imageMogr2/thumbnail/!0p", "imageMogr2/thumbnail/0x",
		"imageMogr2/thumbnail/10000x", "imageMogr2/thumbnail", "imageMogr2/crop/x", "imageMogr2/rotate/0", "imageMogr2/rotate/361",
		"imageMogr2/blur/5", "imageMogr2/blur/51x1", "imageMogr2/blur/5x0", "imageMogr2/gravity/Middle", "imageMogr2/format/tiff",
		"imageMogr2/quality/0", "imageMogr2/unknown/1", "imageMogr2"} {
		_, _, err := runBytes(t, bad, in)
		wantStatus(t, err, http.StatusBadRequest, "imageMogr2")
	}
}

// TestImageMogr2Operations: gravity+crop, rotate, blur, format, quality,
// strip and auto-orient, with pixel checks.
func TestImageMogr2Operations(t *testing.T) {
	in := encPNG(t, quadrants(200, 100))
	get := func(f string) image.Image {
		t.Helper()
		b, _, err := runBytes(t, f, in)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		img, _ := decode(t, b)
		return img
	}
	img := get("imageMogr2/crop/50x50")
	wantSize(t, "crop NW", img, 50, 50)
	wantPixel(t, "crop NW", img, 25, 25, 255, 0, 0, 0)
	img = get("imageMogr2/gravity/SouthEast/crop/50x50")
	wantPixel(t, "crop SE", img, 25, 25, 255, 255, 255, 0)
	img = get("imageMogr2/gravity/NorthEast/crop/60x")
	wantSize(t, "crop 60x", img, 60, 100)
	wantPixel(t, "crop NE top", img, 30, 10, 0, 255, 0, 0)
	img = get("imageMogr2/crop/!50x50a100a50")
	wantPixel(t, "crop offset", img, 25, 25, 255, 255, 255, 0)
	img = get("imageMogr2/gravity/SouthEast/crop/!50x50-100a0")
	wantPixel(t, "crop SE moved left", img, 25, 25, 0, 0, 255, 0)
	img = get("imageMogr2/thumbnail/100x/crop/!20x20a0a30") // order: thumbnail, then crop
	wantSize(t, "thumbnail then crop", img, 20, 20)
	wantPixel(t, "thumbnail then crop", img, 10, 10, 0, 0, 255, 4)

	img = get("imageMogr2/rotate/90")
	wantSize(t, "rotate 90", img, 100, 200)
	wantPixel(t, "rotate 90: top-left was bottom-left (blue)", img, 10, 10, 0, 0, 255, 0)
	wantPixel(t, "rotate 90: top-right was top-left (red)", img, 90, 10, 255, 0, 0, 0)
	img = get("imageMogr2/rotate/180")
	wantPixel(t, "rotate 180", img, 10, 10, 255, 255, 255, 0)
	img = get("imageMogr2/rotate/270")
	wantSize(t, "rotate 270", img, 100, 200)
	wantPixel(t, "rotate 270: top-left was top-right (green)", img, 10, 10, 0, 255, 0, 0)
	img = get("imageMogr2/rotate/45")
	if s := img.Bounds().Size(); s.X < 211 || s.X > 214 || s.Y < 211 || s.Y > 214 {
		t.Fatalf("rotate 45: size %v, want about 213x213", s)
	}
	// Right of the centre was up-right of it (green) before the turn.
	wantPixel(t, "rotate 45 right of centre", img, img.Bounds().Dx()/2+20, img.Bounds().Dy()/2, 0, 255, 0, 30)
	wantPixel(t, "rotate 45 left of centre", img, img.Bounds().Dx()/2-20, img.Bounds().Dy()/2, 0, 0, 255, 30)
	if _, _, _, a := img.At(0, 0).RGBA(); a != 0 {
		t.Fatalf("rotate 45: corner alpha %d, want transparent", a)
	}

	img = get("imageMogr2/blur/5x3")
	wantPixel(t, "blur far from edges", img, 50, 25, 255, 0, 0, 1)
	if c := img.At(100, 25); near(c, 255, 0, 0, 40) || near(c, 0, 255, 0, 40) {
		t.Fatalf("blur: the red/green edge is still sharp: %v", c)
	}

	b, res, err := runBytes(t, "imageMogr2/strip/thumbnail/!50p/format/jpg/quality/90", in)
	if err != nil || res.ContentType != "image/jpeg" {
		t.Fatalf("format jpg: %v %q", err, res.ContentType)
	}
	lo, _, err := runBytes(t, "imageMogr2/thumbnail/!50p/format/jpg/quality/10", in)
	if err != nil || len(lo) >= len(b) {
		t.Fatalf("quality 10 (%d bytes) not smaller than 90 (%d): %v", len(lo), len(b), err)
	}
	if _, res, err := runBytes(t, "imageMogr2/format/webp/quality/80!", in); err != nil || res.ContentType != "image/webp" {
		t.Fatalf("format webp: %v %q", err, res.ContentType)
	}
}

// jpegOriented is img as a JPEG whose EXIF Orientation is o.
func jpegOriented(t *testing.T, img image.Image, o uint16) []byte {
	le := binary.LittleEndian
	var tiff []byte
	tiff = append(tiff, 'I', 'I', 42, 0)
	tiff = le.AppendUint32(tiff, 8)
	tiff = le.AppendUint16(tiff, 1)
	tiff = le.AppendUint16(tiff, 0x0112)
	tiff = le.AppendUint16(tiff, 3)
	tiff = le.AppendUint32(tiff, 1)
	tiff = le.AppendUint16(tiff, o)
	tiff = le.AppendUint16(tiff, 0)
	tiff = le.AppendUint32(tiff, 0)
	payload := append([]byte("Exif\x00\x00"), tiff...)
	seg := []byte{0xff, 0xe1}
	seg = binary.BigEndian.AppendUint16(seg, uint16(len(payload)+2))
	seg = append(seg, payload...)
	j := encJPEG(t, img)
	out := append([]byte{}, j[:2]...)
	out = append(out, seg...)
	return append(out, j[2:]...)
}

func TestImageMogr2AutoOrient(t *testing.T) {
	// Orientation 6: the camera was turned; shown upright it is rotated
	// 90° clockwise.
	in := jpegOriented(t, quadrants(64, 32), 6)
	b, _, err := runBytes(t, "imageMogr2/auto-orient", in)
	if err != nil {
		t.Fatal(err)
	}
	img, _ := decode(t, b)
	wantSize(t, "auto-orient", img, 32, 64)
	wantPixel(t, "auto-orient: top-left was bottom-left (blue)", img, 6, 6, 0, 0, 255, 40)
	// Without auto-orient the pixels stay as stored.
	b, _, err = runBytes(t, "imageMogr2/thumbnail/!100p", in)
	if err != nil {
		t.Fatal(err)
	}
	img, _ = decode(t, b)
	wantSize(t, "no auto-orient", img, 64, 32)
}

// TestWatermarkText draws DejaVu text (Debian fonts-dejavu-core).
func TestWatermarkText(t *testing.T) {
	if _, err := os.Stat(filepath.Join(DefaultFontDir, "DejaVuSans.ttf")); err != nil {
		t.Fatalf("fonts-dejavu-core not installed (scripts/install-deps.sh): %v", err)
	}
	black := image.NewRGBA(image.Rect(0, 0, 200, 100))
	for i := 3; i < len(black.Pix); i += 4 {
		black.Pix[i] = 255
	}
	in := encPNG(t, black)
	count := func(img image.Image, r image.Rectangle) (n, maxR int) {
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				cr, cg, cb, _ := img.At(x, y).RGBA()
				if cr>>8 > 100 && cg>>8 < 60 && cb>>8 < 60 {
					n++
				}
				maxR = max(maxR, int(cr>>8))
			}
		}
		return n, maxR
	}
	f := "watermark/2/text/" + b64("Dora") + "/fill/" + b64("#FF0000") + "/fontsize/600/gravity/NorthWest/dx/0/dy/0"
	b, res, err := runBytes(t, f, in)
	if err != nil {
		t.Fatal(err)
	}
	if res.ContentType != "image/png" {
		t.Fatalf("Content-Type %q", res.ContentType)
	}
	img, _ := decode(t, b)
	wantSize(t, "watermark", img, 200, 100)
	if n, maxR := count(img, image.Rect(0, 0, 100, 50)); n < 30 || maxR < 250 {
		t.Fatalf("text: %d red pixels (max red %d) in the north-west, want the text there", n, maxR)
	}
	if n, _ := count(img, image.Rect(100, 50, 200, 100)); n != 0 {
		t.Fatalf("text: %d red pixels in the south-east, want none", n)
	}
	// Default gravity SouthEast, dissolve 50: half-strength red there.
	b, _, err = runBytes(t, "watermark/2/text/"+b64("Dora")+"/fill/"+b64("#FF0000")+"/fontsize/600/dissolve/50", in)
	if err != nil {
		t.Fatal(err)
	}
	img, _ = decode(t, b)
	if n, maxR := count(img, image.Rect(100, 50, 200, 100)); n < 30 || maxR < 110 || maxR > 145 {
		t.Fatalf("dissolve 50: %d red pixels, max red %d, want about 128", n, maxR)
	}
	for _, bad := range []string{"watermark", "watermark/3/text/eA", "watermark/2", "watermark/2/text/!!",
		"watermark/2/text/eA/fill/" + b64("teal-ish"), "watermark/2/text/eA/dissolve/0", "watermark/2/text/eA/image/eA",
		"watermark/1/image/" + b64("http://x/y.png") + "/fontsize/10"} {
		_, _, err := runBytes(t, bad, in)
		wantStatus(t, err, http.StatusBadRequest, "watermark")
	}
	// An image watermark with no Fetch is refused, not fetched.
	_, _, err = runBytes(t, "watermark/1/image/"+b64("http://example.invalid/m.png"), in)
	wantStatus(t, err, http.StatusBadRequest, "not enabled")
}

// TestWatermarkImage lays a green mark at the gravity, scaled by ws.
func TestWatermarkImage(t *testing.T) {
	mark := image.NewRGBA(image.Rect(0, 0, 20, 10))
	for i := 0; i < len(mark.Pix); i += 4 {
		mark.Pix[i+1], mark.Pix[i+3] = 255, 255
	}
	markPNG := encPNG(t, mark)
	var asked []string
	env := &Env{Fetch: func(_ context.Context, u string) (io.ReadCloser, error) {
		asked = append(asked, u)
		if u != "http://photos.localhost/mark.png" {
			return nil, &Error{Status: 400, Msg: "watermark: image: not here"}
		}
		return io.NopCloser(bytes.NewReader(markPNG)), nil
	}}
	in := encPNG(t, image.NewRGBA(image.Rect(0, 0, 200, 100)))
	run1 := func(f string) image.Image {
		t.Helper()
		res, err := Run(context.Background(), step(t, f), Input{Body: bytes.NewReader(in), Size: int64(len(in)), Env: env})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		b, _ := io.ReadAll(res.Body)
		img, _ := decode(t, b)
		return img
	}
	u := b64("http://photos.localhost/mark.png")
	img := run1("watermark/1/image/" + u)
	// SouthEast, 10px margins: the mark covers x 170-189, y 80-89.
	wantPixel(t, "mark", img, 175, 85, 0, 255, 0, 0)
	wantPixel(t, "outside the mark", img, 165, 85, 0, 0, 0, 0)
	wantPixel(t, "margin", img, 195, 95, 0, 0, 0, 0)
	img = run1("watermark/1/image/" + u + "/gravity/NorthWest/dx/0/dy/0/ws/0.5/dissolve/50")
	// ws 0.5 of the short edge (100): the mark's short edge becomes 50 -> 100x50.
	wantPixel(t, "scaled mark", img, 90, 40, 0, 128, 0, 3)
	wantPixel(t, "beyond the scaled mark", img, 110, 40, 0, 0, 0, 0)
	if len(asked) != 2 {
		t.Fatalf("fetched %v", asked)
	}
	_, err := Run(context.Background(), step(t, "watermark/1/image/"+b64("http://elsewhere/x.png")), Input{Body: bytes.NewReader(in), Size: -1, Env: env})
	wantStatus(t, err, http.StatusBadRequest, "not here")
}

func TestImageAve(t *testing.T) {
	for _, c := range []struct {
		img  image.Image
		want string
	}{
		{twoColour(100, 50), `{"RGB":"0x800080"}`},
		{quadrants(64, 64), `{"RGB":"0x808080"}`},
		{solid(10, 10, color.RGBA{0x12, 0x34, 0x56, 255}), `{"RGB":"0x123456"}`},
	} {
		b, res, err := runBytes(t, "imageAve", encPNG(t, c.img))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != c.want || res.ContentType != "application/json" {
			t.Fatalf("imageAve = %s (%s), want %s", b, res.ContentType, c.want)
		}
	}
	// JPEG: within a tolerance.
	b, _, err := runBytes(t, "imageAve", encJPEG(t, twoColour(64, 64)))
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ RGB string }
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(v.RGB, "0x"), 16, 32)
	if err != nil || !near(color.RGBA{uint8(n >> 16), uint8(n >> 8), uint8(n), 255}, 128, 0, 128, 12) {
		t.Fatalf("imageAve of a JPEG = %s", b)
	}
	_, _, err = runBytes(t, "imageAve/x", encPNG(t, twoColour(4, 4)))
	wantStatus(t, err, http.StatusBadRequest, "no arguments")
}

// bombPNG writes, without holding the pixels, a w x h grey PNG of zeros:
// a few hundred KiB that would decode to w*h bytes.
func bombPNG(t *testing.T, w, h int) []byte {
	var out bytes.Buffer
	out.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&out, binary.BigEndian, uint32(len(data)))
		out.WriteString(typ)
		out.Write(data)
		crc := crc32.NewIEEE()
		crc.Write([]byte(typ))
		crc.Write(data)
		binary.Write(&out, binary.BigEndian, crc.Sum32())
	}
	ihdr := binary.BigEndian.AppendUint32(nil, uint32(w))
	ihdr = binary.BigEndian.AppendUint32(ihdr, uint32(h))
	ihdr = append(ihdr, 8, 0, 0, 0, 0) // 8-bit greyscale
	chunk("IHDR", ihdr)
	var z bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&z, zlib.BestSpeed)
	row := make([]byte, w+1)
	for y := 0; y < h; y++ {
		zw.Write(row)
	}
	zw.Close()
	chunk("IDAT", z.Bytes())
	chunk("IEND", nil)
	return out.Bytes()
}

// TestDecompressionBomb: a small file declaring 64 M pixels is a 400 for
// every image built-in, decided from the header: nothing near its decoded
// size is allocated.
func TestDecompressionBomb(t *testing.T) {
	bomb := bombPNG(t, 8000, 8000)
	if len(bomb) > 1<<20 {
		t.Fatalf("bomb is %d bytes", len(bomb))
	}
	// It is a real image: with the limit raised it decodes.
	if cfg, err := png.DecodeConfig(bytes.NewReader(bomb)); err != nil || cfg.Width != 8000 {
		t.Fatalf("bomb header: %v %v", cfg, err)
	}
	// A WebP header declaring 16000x16000 is refused the same way.
	_, _, err := runBytes(t, "imageView2/2/w/10", webpClaiming(16000, 16000))
	wantStatus(t, err, http.StatusBadRequest, "image of 16000x16000 is over the 50000000-pixel limit")
	for _, f := range []string{"imageInfo", "imageView2/2/w/10", "imageMogr2/thumbnail/10x", "watermark/2/text/eA", "imageAve"} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, _, err := runBytes(t, f, bomb)
		runtime.ReadMemStats(&after)
		wantStatus(t, err, http.StatusBadRequest, "over the 50000000-pixel limit")
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
			t.Fatalf("%s: allocated %d MiB refusing a bomb", f, grew>>20)
		}
	}
}

// TestAvinfo probes a one-second video made by ffmpeg, streamed through
// ffprobe's stdin, and answers Qiniu's streams/format shape.
func TestAvinfo(t *testing.T) {
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Fatalf("ffmpeg not installed (Debian ffmpeg, scripts/install-deps.sh): %v", err)
	}
	if _, err := exec.LookPath("ffprobe"); err != nil {
		t.Fatalf("ffprobe not installed (Debian ffmpeg): %v", err)
	}
	dir := t.TempDir()
	video := filepath.Join(dir, "t.mp4")
	out, err := exec.Command(ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=1:size=64x48:rate=5",
		"-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-shortest", video).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v %s", err, out)
	}
	f, err := os.Open(video)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	res, err := Run(context.Background(), step(t, "avinfo"), Input{Body: f, Size: st.Size(), MimeType: "video/mp4"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.ContentType != "application/json" {
		t.Fatalf("Content-Type %q", res.ContentType)
	}
	var info struct {
		Streams []struct {
			CodecType string `json:"codec_type"`
			CodecName string `json:"codec_name"`
			Width     int    `json:"width"`
			Height    int    `json:"height"`
			Duration  string `json:"duration"`
		} `json:"streams"`
		Format struct {
			FormatName string `json:"format_name"`
			Duration   string `json:"duration"`
			Size       string `json:"size"`
			NbStreams  int    `json:"nb_streams"`
			Filename   *string
		} `json:"format"`
	}
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	var sawVideo, sawAudio bool
	for _, s := range info.Streams {
		switch s.CodecType {
		case "video":
			sawVideo = s.CodecName == "h264" && s.Width == 64 && s.Height == 48
		case "audio":
			sawAudio = s.CodecName == "aac"
		}
	}
	if !sawVideo || !sawAudio || info.Format.NbStreams != 2 {
		t.Fatalf("streams: %s", b)
	}
	d, err := strconv.ParseFloat(info.Format.Duration, 64)
	if err != nil || d < 0.9 || d > 1.1 || !strings.Contains(info.Format.FormatName, "mp4") {
		t.Fatalf("format: %s", b)
	}
	if info.Format.Size != strconv.FormatInt(st.Size(), 10) || info.Format.Filename != nil {
		t.Fatalf("format size/filename: %s", b)
	}
	_, _, err = runBytes(t, "avinfo", []byte("not a video at all"))
	wantStatus(t, err, http.StatusBadRequest, "avinfo")
	_, _, err = runBytes(t, "avinfo/x", []byte("x"))
	wantStatus(t, err, http.StatusBadRequest, "no arguments")
	// A missing ffprobe is the server's fault, said plainly.
	_, err = Run(context.Background(), step(t, "avinfo"), Input{Body: strings.NewReader("x"), Size: 1, Env: &Env{FFprobe: filepath.Join(dir, "no-ffprobe")}})
	wantStatus(t, err, http.StatusInternalServerError, "ffprobe")
}

// TestGIFFrameOnScreen: a GIF's first frame may cover only part of its
// logical screen (the size imageInfo reports); the image operations see
// the frame where it lies on that screen, transparent around it, as a
// viewer shows it.
func TestGIFFrameOnScreen(t *testing.T) {
	pal := color.Palette{color.RGBA{255, 0, 0, 255}, color.RGBA{0, 0, 255, 255}}
	frame := image.NewPaletted(image.Rect(50, 50, 60, 60), pal)
	for i := range frame.Pix {
		frame.Pix[i] = 1 // blue
	}
	var in bytes.Buffer
	g := &gif.GIF{Image: []*image.Paletted{frame}, Delay: []int{0}, Config: image.Config{Width: 100, Height: 100, ColorModel: pal}}
	if err := gif.EncodeAll(&in, g); err != nil {
		t.Fatal(err)
	}
	transparent := func(what string, img image.Image, x, y int) {
		t.Helper()
		if _, _, _, a := img.At(img.Bounds().Min.X+x, img.Bounds().Min.Y+y).RGBA(); a != 0 {
			t.Fatalf("%s: pixel (%d,%d) has alpha %d, want transparent", what, x, y, a>>8)
		}
	}
	for _, c := range []struct {
		fop            string
		w, h           int
		blueX, blueY   int // inside the frame
		clearX, clearY int // outside it
	}{
		{"imageView2/2/w/50/format/png", 50, 50, 27, 27, 5, 5},
		{"imageView2/1/w/50/h/40/format/png", 50, 40, 27, 22, 1, 1},
		{"imageMogr2/thumbnail/50x/format/png", 50, 50, 27, 27, 5, 5},
		{"imageMogr2/gravity/Center/crop/20x20/format/png", 20, 20, 15, 15, 1, 1},
		{"imageMogr2/format/png", 100, 100, 55, 55, 5, 95},
	} {
		out, _, err := runBytes(t, c.fop, in.Bytes())
		if err != nil {
			t.Fatalf("%s: %v", c.fop, err)
		}
		img, _, err := image.Decode(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("%s: %v", c.fop, err)
		}
		wantSize(t, c.fop, img, c.w, c.h)
		wantPixel(t, c.fop, img, c.blueX, c.blueY, 0, 0, 255, 8)
		transparent(c.fop, img, c.clearX, c.clearY)
	}
	out, _, err := runBytes(t, "watermark/2/text/eA", in.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	img, _, err := image.Decode(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	wantSize(t, "watermark", img, 100, 100)
}

// TestBlurMemory: a blur keeps only the rows its vertical pass needs
// (2*radius+1) of the horizontal pass, not a float copy of the whole
// image (16 bytes a pixel: 800 MB for a 50-megapixel input).
func TestBlurMemory(t *testing.T) {
	src := quadrants(1000, 1000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	img, err := gaussianBlur(context.Background(), src, 50, 20)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	wantSize(t, "blur", img, 1000, 1000)
	// The result (4 MB) and the rows (101 x 16 kB): under 8 MB.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 2*uint64(len(src.Pix)) {
		t.Fatalf("blur of a 1000x1000 image allocated %d MiB", grew>>20)
	}
	wantPixel(t, "blur far from edges", img, 100, 100, 255, 0, 0, 1)
	wantPixel(t, "blur across the NW/SE corner", img, 500, 500, 128, 128, 128, 64)
}

// TestGIFEncodeStopsWithContext: writing a GIF quantizes every pixel to a
// 256-colour palette (about a second a few megapixels); it stops when the
// request's context ends instead of running on after the answer: at the
// first band after the context says so, not after the whole image.
func TestGIFEncodeStopsWithContext(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 3000, 3000))
	for i := range img.Pix {
		img.Pix[i] = uint8(i*7919 + i/13)
	}
	ctx := &endsAfter{Context: context.Background(), checks: 3}
	if _, err := paletted(ctx, img); err != context.Canceled || ctx.calls != 4 {
		t.Fatalf("quantizing 47 bands, the context ending at its 4th check: %v after %d checks, want context.Canceled after 4", err, ctx.calls)
	}
	ctx = &endsAfter{Context: context.Background(), checks: 5}
	if _, err := encodeImage(ctx, "imageView2", nil, img, outOpts{format: "gif"}, defaultLimits); err != context.Canceled || ctx.calls > 8 {
		t.Fatalf("gif of 9 megapixels, the context ending at its 6th check: %v after %d checks, want context.Canceled within a band or two", err, ctx.calls)
	}
}

// endsAfter is a context that reports itself cancelled from its
// checks+1st Err call on: where a loop checks it is counted, not timed.
type endsAfter struct {
	context.Context
	checks, calls int
}

func (c *endsAfter) Err() error {
	c.calls++
	if c.calls > c.checks {
		return context.Canceled
	}
	return nil
}
