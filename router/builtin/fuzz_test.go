package builtin

import (
	"bytes"
	"context"
	"errors"
	"image"
	"strings"
	"testing"
)

// FuzzImageArgs feeds arbitrary argument lists to the image built-ins'
// parsers and runs what they accept on a tiny image: no panic, and every
// failure is an *Error with a 4xx/5xx status or the context's error.
func FuzzImageArgs(f *testing.F) {
	for _, s := range []string{
		"imageView2/1/w/10/h/5", "imageView2/0/w/3/format/webp/q/50!", "imageView2/5/h/7/interlace/1/ignore-error/1",
		"imageMogr2/auto-orient/thumbnail/!50p/gravity/SouthEast/crop/!3x3a1a1/rotate/33/blur/2x1/format/gif",
		"imageMogr2/thumbnail/10x10%3E", "imageMogr2/thumbnail/100@/strip/quality/9", "imageMogr2/crop/x3", "imageMogr2/crop/!9999x10000a99999-0", "imageMogr2/crop/10000x",
		"watermark/2/text/eA/fontsize/100/fill/I0ZGMDAwMA/gravity/Center/dx/-3", "watermark/1/image/eA",
		"imageAve", "imageInfo",
	} {
		f.Add(s)
	}
	img := encPNG(f, quadrants(9, 7))
	f.Fuzz(func(t *testing.T, text string) {
		parts := strings.Split(text, "/")
		switch parts[0] {
		case "imageView2", "imageMogr2", "watermark", "imageAve", "imageInfo":
		default:
			return
		}
		if len(text) > 300 || strings.Contains(text, "|") || strings.ContainsAny(text, "\x00") {
			return
		}
		st := step(t, "x")
		st.Name, st.Args, st.Raw = parts[0], parts[1:], text
		for _, a := range st.Args {
			if a == "" {
				return
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		res, err := run(ctx, st, Input{Body: bytes.NewReader(img), Size: int64(len(img))}, limits{bytes: 1 << 20, pixels: 40_000, webpPixels: 40_000})
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Status < 400 {
				t.Fatalf("%q: error %v (%T) is not an *Error with a 4xx/5xx status", text, err, err)
			}
			return
		}
		defer res.Body.Close()
		if res.ContentType == "" || res.Size <= 0 {
			t.Fatalf("%q: result %q of %d bytes", text, res.ContentType, res.Size)
		}
		if strings.HasPrefix(res.ContentType, "image/") && res.ContentType != "image/webp" {
			b := new(bytes.Buffer)
			b.ReadFrom(res.Body)
			if _, _, err := image.DecodeConfig(b); err != nil {
				t.Fatalf("%q: output does not decode: %v", text, err)
			}
		}
	})
}

// FuzzImageInput feeds arbitrary bytes, as the object, to the built-ins
// that read an image or its EXIF: no panic, no hang, and every failure is
// an *Error with a 4xx/5xx status.
func FuzzImageInput(f *testing.F) {
	seeds := [][]byte{
		encPNG(f, quadrants(9, 7)),
		[]byte("GIF89a\x02\x00\x02\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff,\x00\x00\x00\x00\x02\x00\x02\x00\x00\x02\x02D\x01\x00;"),
		webpClaiming(3, 3),
		[]byte("II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00"),
		[]byte("BM"),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	fops := []string{"imageInfo", "exif", "imageAve", "imageView2/2/w/5", "imageMogr2/auto-orient/rotate/33", "watermark/2/text/eA"}
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, text := range fops {
			parts := strings.Split(text, "/")
			st := step(t, "x")
			st.Name, st.Args, st.Raw = parts[0], parts[1:], text
			if len(st.Args) == 0 {
				st.Args = nil
			}
			res, err := run(context.Background(), st, Input{Body: bytes.NewReader(in), Size: int64(len(in))}, limits{bytes: 1 << 20, pixels: 40_000, webpPixels: 40_000})
			if err != nil {
				var e *Error
				if !errors.As(err, &e) || e.Status < 400 {
					t.Fatalf("%s: error %v (%T) is not an *Error with a 4xx/5xx status", text, err, err)
				}
				continue
			}
			res.Body.Close()
		}
	})
}
