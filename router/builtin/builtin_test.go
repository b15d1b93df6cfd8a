package builtin

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/doraproject/dora/router/fop"
)

func step(t testing.TB, text string) fop.Step {
	t.Helper()
	r, err := fop.Parse(text)
	if err != nil || len(r.Steps) != 1 {
		t.Fatalf("fop.Parse(%q): %v", text, err)
	}
	return r.Steps[0]
}

func runBytes(t *testing.T, text string, in []byte) ([]byte, Result, error) {
	t.Helper()
	res, err := Run(context.Background(), step(t, text), Input{Body: bytes.NewReader(in), Size: int64(len(in))})
	if err != nil {
		return nil, res, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != int64(len(b)) {
		t.Fatalf("Result.Size = %d, body is %d bytes", res.Size, len(b))
	}
	return b, res, nil
}

func wantStatus(t *testing.T, err error, status int, msg string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T), want *Error %d", err, err, status)
	}
	if e.Status != status || !strings.Contains(e.Msg, msg) {
		t.Fatalf("error %d %q, want %d containing %q", e.Status, e.Msg, status, msg)
	}
}

func TestIsBuiltin(t *testing.T) {
	for name, want := range map[string]bool{"qhash": true, "imageInfo": true, "exif": true, "imageView2": true, "saveas": false, "grepd": false, "imageinfo": false} {
		if got := IsBuiltin(name); got != want {
			t.Errorf("IsBuiltin(%q) = %v", name, got)
		}
	}
	_, err := Run(context.Background(), fop.Step{Name: "grepd", Raw: "grepd"}, Input{Body: strings.NewReader("")})
	if !errors.Is(err, ErrUnknown) {
		t.Fatalf("Run(grepd) error %v, want ErrUnknown", err)
	}
}

func TestQhash(t *testing.T) {
	// Digests of "hello" from coreutils (md5sum, sha1sum, sha256sum).
	tests := []struct{ alg, want string }{
		{"md5", "5d41402abc4b2a76b9719d911017c592"},
		{"sha1", "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"},
		{"sha256", "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"},
	}
	for _, tt := range tests {
		b, res, err := runBytes(t, "qhash/"+tt.alg, []byte("hello"))
		if err != nil {
			t.Fatal(err)
		}
		want := `{"hash":"` + tt.want + `","fsize":5}`
		if string(b) != want || res.ContentType != "application/json" {
			t.Errorf("qhash/%s = %s (%s), want %s", tt.alg, b, res.ContentType, want)
		}
	}
	for _, bad := range []string{"qhash", "qhash/crc32", "qhash/md5/x"} {
		_, _, err := runBytes(t, bad, []byte("x"))
		wantStatus(t, err, http.StatusBadRequest, "qhash")
	}
}

func TestQhashStreamsLargeInput(t *testing.T) {
	// 80 MiB, more than any image cap: qhash must not buffer it.
	const n = 80 << 20
	res, err := Run(context.Background(), step(t, "qhash/sha1"), Input{Body: io.LimitReader(zeros{}, n), Size: n})
	if err != nil {
		t.Fatal(err)
	}
	var out struct{ FSize int64 }
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || out.FSize != n {
		t.Fatalf("fsize %d, err %v", out.FSize, err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Run(ctx, step(t, "qhash/md5"), Input{Body: zeros{}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
}

func twoColour(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.RGBA{255, 0, 0, 255}
			if x >= w/2 {
				c = color.RGBA{0, 0, 255, 255}
			}
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

func encJPEG(t *testing.T, img image.Image) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encPNG(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encGIF(t *testing.T, frames int, w, h int) []byte {
	g := &gif.GIF{}
	for i := 0; i < frames; i++ {
		p := image.NewPaletted(image.Rect(0, 0, w, h), palette.Plan9)
		p.SetColorIndex(i%w, 0, uint8(i+1))
		g.Image = append(g.Image, p)
		g.Delay = append(g.Delay, 10)
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, g); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestImageInfo(t *testing.T) {
	gray := image.NewGray(image.Rect(0, 0, 7, 9))
	translucent := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"jpeg", encJPEG(t, twoColour(64, 48)), `{"format":"jpeg","width":64,"height":48,"colorModel":"ycbcr"}`},
		{"png rgb", encPNG(t, twoColour(10, 20)), `{"format":"png","width":10,"height":20,"colorModel":"rgba"}`},
		{"png gray", encPNG(t, gray), `{"format":"png","width":7,"height":9,"colorModel":"gray"}`},
		{"png alpha", encPNG(t, translucent), `{"format":"png","width":3,"height":2,"colorModel":"nrgba"}`},
		{"gif", encGIF(t, 3, 5, 4), `{"format":"gif","width":5,"height":4,"colorModel":"palette","frameNumber":3}`},
		{"gif one frame", encGIF(t, 1, 5, 4), `{"format":"gif","width":5,"height":4,"colorModel":"palette","frameNumber":1}`},
	}
	for _, tt := range tests {
		b, _, err := runBytes(t, "imageInfo", tt.in)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		// Qiniu's shape starts with the file's size in bytes.
		want := `{"size":` + strconv.Itoa(len(tt.in)) + "," + tt.want[1:]
		if string(b) != want {
			t.Errorf("%s: got %s, want %s", tt.name, b, want)
		}
	}
	_, _, err := runBytes(t, "imageInfo", []byte("not an image"))
	wantStatus(t, err, http.StatusBadRequest, "not a supported image")
	g := encGIF(t, 2, 5, 4)
	_, _, err = runBytes(t, "imageInfo", g[:len(g)-3])
	wantStatus(t, err, http.StatusBadRequest, "corrupt gif")
}

// jpegWithExif builds a JPEG with an APP1 Exif segment holding a
// little-endian TIFF IFD0 with Make="DoraCam" (ASCII) and Orientation=6 (SHORT).
func jpegWithExif(t *testing.T) []byte {
	le := binary.LittleEndian
	var tiff []byte
	tiff = append(tiff, 'I', 'I', 42, 0)
	tiff = le.AppendUint32(tiff, 8)
	tiff = le.AppendUint16(tiff, 2) // entries
	// Make: tag 0x010f, type 2 (ASCII), count 8, offset 8+2+2*12+4 = 38
	tiff = le.AppendUint16(tiff, 0x010f)
	tiff = le.AppendUint16(tiff, 2)
	tiff = le.AppendUint32(tiff, 8)
	tiff = le.AppendUint32(tiff, 38)
	// Orientation: tag 0x0112, type 3 (SHORT), count 1, value 6 inline
	tiff = le.AppendUint16(tiff, 0x0112)
	tiff = le.AppendUint16(tiff, 3)
	tiff = le.AppendUint32(tiff, 1)
	tiff = le.AppendUint16(tiff, 6)
	tiff = le.AppendUint16(tiff, 0)
	tiff = le.AppendUint32(tiff, 0) // no next IFD
	tiff = append(tiff, "DoraCam\x00"...)
	payload := append([]byte("Exif\x00\x00"), tiff...)
	seg := []byte{0xff, 0xe1}
	seg = binary.BigEndian.AppendUint16(seg, uint16(len(payload)+2))
	seg = append(seg, payload...)
	j := encJPEG(t, twoColour(8, 8))
	out := append([]byte{}, j[:2]...) // SOI
	out = append(out, seg...)
	return append(out, j[2:]...)
}

func TestExif(t *testing.T) {
	b, _, err := runBytes(t, "exif", jpegWithExif(t))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]struct {
		Type int    `json:"type"`
		Val  string `json:"val"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	want := map[string]struct {
		Type int    `json:"type"`
		Val  string `json:"val"`
	}{"Make": {2, "DoraCam"}, "Orientation": {3, "6"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("exif = %s, want %v", b, want)
	}
	for name, in := range map[string][]byte{
		"plain jpeg": encJPEG(t, twoColour(8, 8)),
		"png":        encPNG(t, twoColour(8, 8)),
		"garbage":    []byte("xx"),
		"empty":      nil,
	} {
		_, _, err := runBytes(t, "exif", in)
		if err == nil {
			t.Fatalf("%s: no error", name)
		}
		wantStatus(t, err, http.StatusBadRequest, "no exif data")
	}
}

func decode(t *testing.T, b []byte) (image.Image, string) {
	t.Helper()
	img, format, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decode output: %v", err)
	}
	return img, format
}

func TestImageView2Sizes(t *testing.T) {
	tests := []struct {
		fop          string
		sw, sh       int
		wantW, wantH int
	}{
		{"imageView2/1/w/50/h/50", 200, 100, 50, 50},
		{"imageView2/1/w/80/h/20", 100, 100, 80, 20},
		{"imageView2/1/w/300/h/150", 100, 100, 100, 50}, // never enlarges: the box shrinks to fit, aspect kept
		{"imageView2/1/w/40", 100, 60, 40, 40},
		{"imageView2/2/w/50/h/50", 200, 100, 50, 25},
		{"imageView2/2/w/50/h/50", 100, 200, 25, 50},
		{"imageView2/2/h/30/w/100", 200, 100, 60, 30},
		{"imageView2/2/w/60", 200, 100, 60, 30},
		{"imageView2/2/w/100/h/100", 40, 20, 40, 20}, // never enlarged
		{"imageView2/2/w/1/h/1", 1000, 10, 1, 1},
		// Mode 0: long edge <= w, short edge <= h.
		{"imageView2/0/w/100/h/30", 200, 100, 60, 30},
		{"imageView2/0/w/100/h/30", 100, 200, 30, 60},
		{"imageView2/0/w/50", 100, 200, 25, 50},
		{"imageView2/0/h/50", 100, 200, 50, 100},
		{"imageView2/0/w/500", 100, 200, 100, 200},
		// Mode 3: width >= w and height >= h, proportional, no crop.
		{"imageView2/3/w/50/h/40", 200, 100, 80, 40},
		{"imageView2/3/w/50", 200, 100, 100, 50},
		{"imageView2/3/w/500/h/500", 200, 100, 200, 100},
		// Mode 4: long edge >= w, short edge >= h.
		{"imageView2/4/w/60/h/20", 100, 200, 30, 60},
		{"imageView2/4/w/60/h/40", 200, 100, 80, 40},
		// Mode 5: as 4, then the centre (long w, short h) is cut out,
		// oriented as the image.
		{"imageView2/5/w/60/h/20", 100, 200, 20, 60},
		{"imageView2/5/w/60/h/20", 200, 100, 60, 20},
		{"imageView2/1/w/60/h/20", 100, 200, 60, 20},
	}
	for _, tt := range tests {
		b, res, err := runBytes(t, tt.fop, encPNG(t, twoColour(tt.sw, tt.sh)))
		if err != nil {
			t.Fatalf("%s: %v", tt.fop, err)
		}
		img, format := decode(t, b)
		if got := img.Bounds().Size(); got.X != tt.wantW || got.Y != tt.wantH {
			t.Errorf("%s on %dx%d: got %v, want %dx%d", tt.fop, tt.sw, tt.sh, got, tt.wantW, tt.wantH)
		}
		if format != "png" || res.ContentType != "image/png" {
			t.Errorf("%s: format %s / %s, want png kept", tt.fop, format, res.ContentType)
		}
	}
}

func TestImageView2CropsCentre(t *testing.T) {
	// 200x100, left red right blue; mode 1 to 50x50 keeps the centre
	// 100x100, so the left quarter of the output is red, the right blue.
	b, _, err := runBytes(t, "imageView2/1/w/50/h/50", encPNG(t, twoColour(200, 100)))
	if err != nil {
		t.Fatal(err)
	}
	img, _ := decode(t, b)
	r, _, bl, _ := img.At(5, 25).RGBA()
	if r>>8 < 200 || bl>>8 > 50 {
		t.Errorf("left pixel not red: r=%d b=%d", r>>8, bl>>8)
	}
	r, _, bl, _ = img.At(45, 25).RGBA()
	if bl>>8 < 200 || r>>8 > 50 {
		t.Errorf("right pixel not blue: r=%d b=%d", r>>8, bl>>8)
	}
}

func TestImageView2Formats(t *testing.T) {
	src := map[string][]byte{
		"jpeg": encJPEG(t, twoColour(40, 30)),
		"png":  encPNG(t, twoColour(40, 30)),
		"gif":  encGIF(t, 2, 40, 30),
	}
	for inFmt, in := range src {
		for _, out := range []struct{ arg, format, ct string }{
			{"", inFmt, "image/" + inFmt},
			{"/format/jpg", "jpeg", "image/jpeg"},
			{"/format/png", "png", "image/png"},
			{"/format/gif", "gif", "image/gif"},
		} {
			b, res, err := runBytes(t, "imageView2/2/w/20/h/20"+out.arg, in)
			if err != nil {
				t.Fatalf("%s%s: %v", inFmt, out.arg, err)
			}
			img, format := decode(t, b)
			if format != out.format || res.ContentType != out.ct {
				t.Errorf("%s%s: got %s (%s), want %s", inFmt, out.arg, format, res.ContentType, out.format)
			}
			if s := img.Bounds().Size(); s.X != 20 || s.Y != 15 {
				t.Errorf("%s%s: size %v", inFmt, out.arg, s)
			}
		}
	}
}

func TestImageView2Quality(t *testing.T) {
	noisy := image.NewRGBA(image.Rect(0, 0, 64, 64))
	for i := range noisy.Pix {
		noisy.Pix[i] = uint8(i * 7919 % 251)
	}
	in := encPNG(t, noisy)
	lo, _, err := runBytes(t, "imageView2/2/w/64/h/64/format/jpg/q/10", in)
	if err != nil {
		t.Fatal(err)
	}
	def, _, err := runBytes(t, "imageView2/2/w/64/h/64/format/jpg", in)
	if err != nil {
		t.Fatal(err)
	}
	hi, _, err := runBytes(t, "imageView2/2/w/64/h/64/format/jpg/q/95", in)
	if err != nil {
		t.Fatal(err)
	}
	if !(len(lo) < len(def) && len(def) < len(hi)) {
		t.Fatalf("jpeg sizes q10=%d q75=%d q95=%d: quality not applied", len(lo), len(def), len(hi))
	}
}

func TestImageView2BadArgs(t *testing.T) {
	in := encPNG(t, twoColour(10, 10))
	for _, f := range []string{
		"imageView2", "imageView2/6/w/10/h/10", "imageView2/01/w/10", "imageView2/1", "imageView2/1/w", "imageView2/1/w/0/h/10",
		"imageView2/1/w/10000", "imageView2/1/w/-1", "imageView2/1/w/010", "imageView2/1/w/10/w/10",
		"imageView2/2/w/10/q/0", "imageView2/2/w/10/q/101", "imageView2/2/w/10/format/tiff", "imageView2/2/w/10/x/1",
		"imageView2/2/w/10/interlace/2", "imageView2/2/w/10/ignore-error/0",
		"imageView2/2/q/50",
	} {
		_, _, err := runBytes(t, f, in)
		wantStatus(t, err, http.StatusBadRequest, "imageView2")
	}
	_, _, err := runBytes(t, "imageView2/2/w/10", []byte("text"))
	wantStatus(t, err, http.StatusBadRequest, "not a supported image")
}

// pngClaiming returns a small PNG whose header claims w x h pixels.
func pngClaiming(t *testing.T, w, h uint32) []byte {
	b := encPNG(t, image.NewGray(image.Rect(0, 0, 1, 1)))
	// 8-byte signature, then IHDR: length(4) "IHDR"(4) width(4) height(4) ... crc
	binary.BigEndian.PutUint32(b[16:], w)
	binary.BigEndian.PutUint32(b[20:], h)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}

func TestLimits(t *testing.T) {
	ctx := context.Background()
	// Declared size over the cap: refused before reading.
	_, err := Run(ctx, step(t, "imageInfo"), Input{Body: zeros{}, Size: MaxImageBytes + 1})
	wantStatus(t, err, http.StatusRequestEntityTooLarge, "limit")
	// Unknown size, stream longer than the cap (small cap for the test).
	small := limits{bytes: 1000, pixels: MaxImagePixels}
	_, err = run(ctx, step(t, "imageView2/2/w/10"), Input{Body: zeros{}, Size: -1}, small)
	wantStatus(t, err, http.StatusRequestEntityTooLarge, "limit")
	_, err = run(ctx, step(t, "exif"), Input{Body: zeros{}, Size: -1}, small)
	wantStatus(t, err, http.StatusRequestEntityTooLarge, "limit")
	// A header claiming 10000x10000 pixels is refused without decoding.
	huge := pngClaiming(t, 10000, 10000)
	for _, f := range []string{"imageInfo", "imageView2/2/w/10", "imageMogr2/thumbnail/10x", "watermark/2/text/eA", "imageAve"} {
		_, _, err = runBytes(t, f, huge)
		wantStatus(t, err, http.StatusBadRequest, "pixel limit")
	}
	// An output over the pixel cap is refused too.
	_, err = run(ctx, step(t, "imageMogr2/thumbnail/!200p"), Input{Body: bytes.NewReader(encPNG(t, twoColour(30, 30))), Size: -1},
		limits{bytes: MaxImageBytes, pixels: 1000})
	wantStatus(t, err, http.StatusBadRequest, "output")
}

// TestMogrWorkBudget: each imageMogr2 operation is bounded by the pixel
// limit, but a chain of them is bounded by their sum: a request may process
// MaxMogrPixels (8 images at the pixel limit), so repeating thumbnail or
// rotate many times is a 400 before the work, while every operation once
// on an image at the limit still runs.
func TestMogrWorkBudget(t *testing.T) {
	ctx := context.Background()
	lim := limits{bytes: MaxImageBytes, pixels: 10_000} // budget: 80 000 pixels
	in := encPNG(t, twoColour(100, 100))                // 10 000 pixels
	mogr := func(chain string) (Result, error) {
		return run(ctx, step(t, "imageMogr2/"+chain), Input{Body: bytes.NewReader(in), Size: int64(len(in))}, lim)
	}
	ok := func(chain string) {
		t.Helper()
		res, err := mogr(chain)
		if err != nil {
			t.Fatalf("%s: %v", chain, err)
		}
		res.Body.Close()
	}
	ok("auto-orient/thumbnail/99x99!/gravity/Center/crop/98x98/rotate/90/blur/1x1/format/png/quality/80/strip")
	ok(strings.Repeat("rotate/90/", 8) + "format/png")
	ok(strings.Repeat("thumbnail/100x100/", 50) + "rotate/360") // no pixel changes: no work
	_, err := mogr(strings.Repeat("rotate/90/", 9) + "format/png")
	wantStatus(t, err, http.StatusBadRequest, "imageMogr2: rotate 90 of a 100x100 image would bring the pixels this request processes to 90000, over the 80000-pixel budget of one request")
	_, err = mogr(strings.Repeat("thumbnail/50x50!/thumbnail/100x100!/", 5) + "strip")
	wantStatus(t, err, http.StatusBadRequest, "imageMogr2: thumbnail 50x50! of a 100x100 image would bring the pixels this request processes to 90000, over the 80000-pixel budget")
	_, err = mogr(strings.Repeat("blur/1x1/", 9) + "strip")
	wantStatus(t, err, http.StatusBadRequest, "over the 80000-pixel budget")
	// A right angle is not an output over the edge limit: it keeps an
	// input's long edge (inputs are bounded by pixels, not edges).
	wide := encPNG(t, twoColour(MaxEdge+1, 1))
	b, _, err := runBytes(t, "imageMogr2/rotate/90/format/png", wide)
	if err != nil {
		t.Fatalf("rotate/90 of a %dx1 image: %v", MaxEdge+1, err)
	}
	if c, _, err := image.DecodeConfig(bytes.NewReader(b)); err != nil || c.Width != 1 || c.Height != MaxEdge+1 {
		t.Fatalf("rotate/90 of a %dx1 image: %+v, %v", MaxEdge+1, c, err)
	}
	// ignore-error/1 answers the original, as for any failure.
	b, _, err = runBytesLim(t, "imageMogr2/"+strings.Repeat("rotate/90/", 9)+"ignore-error/1", in, lim)
	if err != nil || !bytes.Equal(b, in) {
		t.Fatalf("over the budget with ignore-error/1: %d bytes, %v; want the original", len(b), err)
	}
}

func runBytesLim(t *testing.T, text string, in []byte, lim limits) ([]byte, Result, error) {
	t.Helper()
	res, err := run(context.Background(), step(t, text), Input{Body: bytes.NewReader(in), Size: int64(len(in))}, lim)
	if err != nil {
		return nil, res, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return b, res, err
}

// TestCropSizeLimit: Qiniu's crop sizes are 1-9999 (MaxEdge), as the
// thumbnail's; a larger one is a 400 naming it, even on an image it would
// not have cut. Offsets may go further: an input may be wider than 9999.
func TestCropSizeLimit(t *testing.T) {
	in := encPNG(t, twoColour(30, 20))
	for _, c := range []struct{ geom, msg string }{
		{"10000x", `width: "10000" is not an integer in [1, 9999]`},
		{"x10000", `height: "10000" is not an integer in [1, 9999]`},
		{"99999x99999", `width: "99999" is not an integer in [1, 9999]`},
		{"!10x10000a0a0", `height: "10000" is not an integer in [1, 9999]`},
		{"!10x10a100000a0", `x offset: "100000" is not an integer in [0, 99999]`},
	} {
		_, _, err := runBytes(t, "imageMogr2/crop/"+c.geom, in)
		wantStatus(t, err, http.StatusBadRequest, "imageMogr2: crop: "+c.msg)
	}
	for _, geom := range []string{"9999x9999", "9999x", "x9999", "!9999x9999a0a0"} {
		b, _, err := runBytes(t, "imageMogr2/crop/"+geom+"/format/png", in)
		if err != nil {
			t.Fatalf("crop/%s: %v", geom, err)
		}
		if c, _, err := image.DecodeConfig(bytes.NewReader(b)); err != nil || c.Width != 30 || c.Height != 20 {
			t.Fatalf("crop/%s of a 30x20 image: %+v, %v; want all of it", geom, c, err)
		}
	}
	wide := encPNG(t, twoColour(MaxEdge+2, 1))
	b, _, err := runBytes(t, "imageMogr2/crop/!1x1a10000a0/format/png", wide)
	if err != nil {
		t.Fatalf("crop at offset 10000 of a %dx1 image: %v", MaxEdge+2, err)
	}
	if c, _, err := image.DecodeConfig(bytes.NewReader(b)); err != nil || c.Width != 1 || c.Height != 1 {
		t.Fatalf("crop at offset 10000: %+v, %v", c, err)
	}
}

// sizedImage is a uniform image of the given bounds, allocating nothing:
// for the checks made before any pixel is read.
type sizedImage struct {
	*image.Uniform
	r image.Rectangle
}

func (s sizedImage) Bounds() image.Rectangle { return s.r }

// TestWebPOutputLimit: the WebP encoder (libwebp in WebAssembly) cannot be
// interrupted, about half a second a megapixel: a WebP output over
// MaxWebPPixels (Qiniu's own limit for one, 25 000 000) is a 400 before
// encoding, from every built-in that writes one; other formats, whose
// encoders stop with the context, keep MaxImagePixels.
func TestWebPOutputLimit(t *testing.T) {
	ctx := context.Background()
	big := sizedImage{Uniform: image.NewUniform(color.White), r: image.Rect(0, 0, 5001, 5000)}
	_, err := encodeImage(ctx, "imageMogr2", nil, big, outOpts{format: "webp"}, defaultLimits)
	wantStatus(t, err, http.StatusBadRequest, "imageMogr2: a webp output of 5001x5000 is over the 25000000-pixel limit of webp outputs")

	lim := limits{bytes: MaxImageBytes, pixels: MaxImagePixels, webpPixels: 1000}
	in := encPNG(t, twoColour(40, 30)) // 1200 pixels
	for _, c := range []struct{ fop, msg string }{
		{"imageMogr2/format/webp", "imageMogr2: a webp output of 40x30 is over the 1000-pixel limit of webp outputs"},
		{"imageView2/2/w/40/format/webp", "imageView2: a webp output of 40x30 is over the 1000-pixel limit of webp outputs"},
	} {
		_, _, err := runBytesLim(t, c.fop, in, lim)
		wantStatus(t, err, http.StatusBadRequest, c.msg)
	}
	for _, f := range []string{"imageMogr2/thumbnail/30x/format/webp", "imageView2/2/w/40/format/png", "imageMogr2/format/webp/ignore-error/1"} {
		b, res, err := runBytesLim(t, f, in, lim)
		if err != nil || len(b) == 0 {
			t.Fatalf("%s: %d bytes (%s), %v", f, len(b), res.ContentType, err)
		}
	}
}

// TestEncodeStopsWithContext: PNG (several seconds for a noisy image at
// the pixel limit), BMP and GIF write as they go and stop when the
// request's context ends, rather than running on after the answer.
func TestEncodeStopsWithContext(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 3000, 3000))
	x := uint32(1)
	for i := range img.Pix { // noise (xorshift): deflate finds nothing to shorten
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		img.Pix[i] = uint8(x)
	}
	// The context ends at its 4th check: the first writes (each a
	// check) go through, the next fails and the encoder stops there,
	// not after the ~27 MB of the whole image.
	counted := &endsAfter{Context: context.Background(), checks: 3}
	_, err := encodeImage(counted, "imageView2", nil, img, outOpts{format: "png"}, defaultLimits)
	if err != context.Canceled || counted.calls > 8 {
		t.Fatalf("png of 9 megapixels, the context ending at its 4th check: %v after %d checks, want context.Canceled at the first write after", err, counted.calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, f := range []string{"png", "bmp", "gif", "webp", "jpg"} {
		_, err := encodeImage(ctx, "imageView2", nil, img, outOpts{format: f}, defaultLimits)
		if err != context.Canceled {
			t.Fatalf("%s, context canceled before: %v, want context.Canceled", f, err)
		}
	}
}
