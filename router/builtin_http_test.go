package router

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testPNG(t *testing.T, w, h int, c color.RGBA) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestBuiltinsOverHTTP: the new built-ins are planned as built-ins (not
// "no such ufop"), chain in pipelines, and a watermark image is read only
// from the router's own buckets.
func TestBuiltinsOverHTTP(t *testing.T) {
	e := newEnv(t, nil)
	e.objs.add("photos", "p.png", "image/png", testPNG(t, 200, 100, color.RGBA{0, 0, 0, 255}))
	e.objs.add("photos", "mark.png", "image/png", testPNG(t, 20, 10, color.RGBA{0, 255, 0, 255}))
	e.objs.add("secret", "mark.png", "image/png", testPNG(t, 20, 10, color.RGBA{0, 0, 255, 255}))
	e.objs.add("bobs", "mark.png", "image/png", testPNG(t, 20, 10, color.RGBA{255, 0, 0, 255}))
	host := "photos.localhost"
	b64 := func(s string) string { return base64.URLEncoding.EncodeToString([]byte(s)) }

	resp, body := e.get(host, "/p.png?imageMogr2/thumbnail/!50p/format/gif|imageInfo")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"format":"gif","width":100,"height":50`) {
		t.Fatalf("imageMogr2 | imageInfo: %d %s", resp.StatusCode, body)
	}
	resp, body = e.get(host, "/p.png?imageView2/0/w/50&attname=thumb.png")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/png" ||
		resp.Header.Get("Content-Disposition") != `attachment; filename="thumb.png"; filename*=UTF-8''thumb.png` {
		t.Fatalf("imageView2 + attname: %d %v", resp.StatusCode, resp.Header)
	}
	// Browsers send '>' as %3E: a built-in decodes its arguments as a
	// program does with its cmd.
	resp, body = e.get(host, "/p.png?imageMogr2/thumbnail/100x100%3E|imageInfo")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"width":100,"height":50`) {
		t.Fatalf("thumbnail 100x100%%3E: %d %s", resp.StatusCode, body)
	}
	resp, body = e.get(host, "/p.png?imageMogr2/thumbnail/100x%ZZ")
	if resp.StatusCode != 400 || !strings.Contains(jsonError(t, body), "argument 2") {
		t.Fatalf("bad escape in an argument: %d %s", resp.StatusCode, body)
	}
	resp, body = e.get(host, "/p.png?imageAve")
	if resp.StatusCode != 200 || string(body) != `{"RGB":"0x000000"}` {
		t.Fatalf("imageAve: %d %s", resp.StatusCode, body)
	}

	for _, c := range []struct {
		name, url string
		status    int
		want      color.RGBA // pixel at the mark when 200
		errHas    string
	}{
		{"own public bucket", "http://photos.localhost/mark.png", 200, color.RGBA{0, 255, 0, 255}, ""},
		{"owner's private bucket", "http://secret.localhost/mark.png", 200, color.RGBA{0, 0, 255, 255}, ""},
		{"another account's public bucket", "http://bobs.localhost/mark.png", 200, color.RGBA{255, 0, 0, 255}, ""},
		{"bound domain", "http://img.example.com/mark.png", 200, color.RGBA{0, 255, 0, 255}, ""},
		{"outside address", "http://127.0.0.1:1/mark.png", 400, color.RGBA{}, "no bucket here answers"},
		{"no such object", "http://photos.localhost/none.png", 400, color.RGBA{}, "no such object"},
		{"not http", "file:///etc/passwd", 400, color.RGBA{}, "want an http(s) URL"},
		{"with a query", "http://photos.localhost/mark.png?imageView2/2/w/1", 400, color.RGBA{}, "query"},
	} {
		t.Run("watermark from "+c.name, func(t *testing.T) {
			resp, body := e.get(host, "/p.png?watermark/1/image/"+b64(c.url)+"/gravity/NorthWest/dx/0/dy/0")
			if resp.StatusCode != c.status {
				t.Fatalf("status %d want %d (%s)", resp.StatusCode, c.status, body)
			}
			if c.status != 200 {
				if msg := jsonError(t, body); !strings.Contains(msg, c.errHas) {
					t.Fatalf("error %q lacks %q", msg, c.errHas)
				}
				if resp.Header.Get("X-Dora-Step") != "0" {
					t.Fatalf("X-Dora-Step %q", resp.Header.Get("X-Dora-Step"))
				}
				return
			}
			img, err := png.Decode(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if got := color.RGBAModel.Convert(img.At(5, 5)).(color.RGBA); got != c.want {
				t.Fatalf("mark pixel %v want %v", got, c.want)
			}
			if got := color.RGBAModel.Convert(img.At(50, 50)).(color.RGBA); got != (color.RGBA{0, 0, 0, 255}) {
				t.Fatalf("background pixel %v", got)
			}
		})
	}

	// A private bucket of another account is refused.
	e2 := newEnv(t, nil)
	e2.objs.add("bobs", "p.png", "image/png", testPNG(t, 20, 20, color.RGBA{0, 0, 0, 255}))
	e2.objs.add("secret", "mark.png", "image/png", testPNG(t, 5, 5, color.RGBA{0, 0, 255, 255}))
	resp, body = e2.get("bobs.localhost", "/p.png?watermark/1/image/"+b64("http://secret.localhost/mark.png"))
	if resp.StatusCode != 400 || !strings.Contains(jsonError(t, body), "private to another account") {
		t.Fatalf("another account's private mark: %d %s", resp.StatusCode, body)
	}
}

// TestAvinfoOverHTTP probes a video object through the router.
func TestAvinfoOverHTTP(t *testing.T) {
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Fatalf("ffmpeg not installed (scripts/install-deps.sh): %v", err)
	}
	video := filepath.Join(t.TempDir(), "t.mp4")
	if out, err := exec.Command(ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=1:size=64x48:rate=5",
		"-pix_fmt", "yuv420p", video).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v %s", err, out)
	}
	data, err := os.ReadFile(video)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil)
	e.objs.add("photos", "v.mp4", "video/mp4", data)
	resp, body := e.get("photos.localhost", "/v.mp4?avinfo")
	if resp.StatusCode != 200 {
		t.Fatalf("avinfo: %d %s", resp.StatusCode, body)
	}
	var info struct {
		Streams []map[string]any `json:"streams"`
		Format  map[string]any   `json:"format"`
	}
	if err := json.Unmarshal(body, &info); err != nil || len(info.Streams) != 1 || info.Streams[0]["width"] != float64(64) ||
		info.Format["nb_streams"] != float64(1) {
		t.Fatalf("avinfo body %s (%v)", body, err)
	}
}

// TestWatermarkImageNotCached: the result of a watermark with an image
// depends on another object than the one processed, which the result
// cache's key does not name: it is not cached, so a mark overwritten is
// the one the next answer carries. A text watermark depends on nothing
// else and is cached like other built-ins.
func TestWatermarkImageNotCached(t *testing.T) {
	e := newEnv(t, nil)
	e.objs.add("photos", "p.png", "image/png", testPNG(t, 20, 20, color.RGBA{0, 0, 0, 255}))
	mark := func(c color.RGBA) { e.objs.add("photos", "mark.png", "image/png", testPNG(t, 5, 5, c)) }
	pq := "/p.png?watermark/1/image/" + base64.URLEncoding.EncodeToString([]byte("http://photos.localhost/mark.png")) + "/gravity/NorthWest/dx/0/dy/0"
	for _, want := range []color.RGBA{{0, 255, 0, 255}, {255, 0, 0, 255}} {
		mark(want)
		resp, body := e.get("photos.localhost", pq)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d (%s)", resp.StatusCode, body)
		}
		img, err := png.Decode(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if got := color.RGBAModel.Convert(img.At(1, 1)).(color.RGBA); got != want {
			t.Fatalf("mark pixel %v, want %v (the mark's object as it is now; X-Dora-Cache %q)", got, want, resp.Header.Get("X-Dora-Cache"))
		}
	}
	if resp, _ := e.get("photos.localhost", pq); resp.Header.Get("X-Dora-Cache") != "" || resp.Header.Get("Cache-Control") != "" {
		t.Fatalf("an image watermark's result with cache headers: %v", resp.Header)
	}
	text := "/p.png?watermark/2/text/" + base64.URLEncoding.EncodeToString([]byte("hi"))
	for _, want := range []string{"miss", "hit"} {
		if resp, body := e.get("photos.localhost", text); resp.StatusCode != 200 || resp.Header.Get("X-Dora-Cache") != want {
			t.Fatalf("text watermark: %d, X-Dora-Cache %q, want %q (%.100s)", resp.StatusCode, resp.Header.Get("X-Dora-Cache"), want, body)
		}
	}
}

// TestImageJobsBounded: image and media built-ins that decode whole images
// (each up to hundreds of MB and seconds of CPU) run at most
// Config.MaxImageJobs at once: one beyond waits for a slot, then answers
// 503 with Retry-After, naming its step; lighter built-ins (imageInfo) do
// not wait; a freed slot serves the next. Without the bound a burst of
// large images ran all at once, as many as requests arrived.
func TestImageJobsBounded(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxImageJobs = 1 })
	e.r.imageWait = 50 * time.Millisecond
	e.objs.add("photos", "p.png", "image/png", testPNG(t, 20, 20, color.RGBA{0, 0, 0, 255}))
	e.r.imageJobs <- struct{}{} // the one slot, taken

	resp, body := e.get("photos.localhost", "/p.png?imageView2/2/w/10")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || resp.Header.Get("X-Dora-Step") != "0" ||
		!strings.Contains(string(body), "busy") {
		t.Fatalf("a heavy step with no slot free: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if resp, body := e.get("photos.localhost", "/p.png?imageInfo"); resp.StatusCode != 200 {
		t.Fatalf("imageInfo waited for an image slot: %d %s", resp.StatusCode, body)
	}

	<-e.r.imageJobs                          // freed
	for _, w := range []string{"10", "11"} { // one slot serves one after the other
		if resp, body := e.get("photos.localhost", "/p.png?imageView2/2/w/"+w); resp.StatusCode != 200 {
			t.Fatalf("w/%s with the slot free: %d %s", w, resp.StatusCode, body)
		}
	}
	if n := len(e.r.imageJobs); n != 0 {
		t.Fatalf("%d slots still taken after the steps ended", n)
	}
}
