package pfop_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"
)

// fsizeMin: a file under it is refused with 403 (Qiniu's code) and
// nothing is stored, whichever way it arrives; at it, the upload succeeds.
func TestUploadFsizeMin(t *testing.T) {
	e := newEnv(t)
	future := time.Now().Add(time.Hour).Unix()
	tok := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "fsizeMin": 10})
	if status, v := e.formUpload(tok, strp("small.txt"), nil, "f", []byte("123456789")); status != http.StatusForbidden || !strings.Contains(v["error"].(string), "fsize too small") {
		t.Fatalf("9 bytes: %d %v, want 403 fsize too small", status, v)
	}
	sk := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "fsizeMin": 10, "saveKey": "min/$(etag)"})
	if status, v := e.formUpload(sk, nil, nil, "f", []byte("short")); status != http.StatusForbidden {
		t.Fatalf("saveKey, 5 bytes: %d %v, want 403", status, v)
	}
	small := []byte("tiny")
	if status, v := e.upCall("POST", putb64Path(len(small), strp("small.b64"), "", nil, nil), tok, "application/octet-stream", []byte(base64.StdEncoding.EncodeToString(small)), nil); status != http.StatusForbidden {
		t.Fatalf("putb64, 4 bytes: %d %v, want 403", status, v)
	}
	if status, v := e.upCall("POST", putb64Path(-1, strp("small.b64"), "", nil, nil), tok, "application/octet-stream", []byte(base64.StdEncoding.EncodeToString(small)), nil); status != http.StatusForbidden {
		t.Fatalf("putb64 without fsize, 4 bytes: %d %v, want 403", status, v)
	}
	ctxs := e.putBlocksV1(tok, small, 4)
	if status, v := e.upCall("POST", mkfilePath(len(small), strp("small.v1"), "", nil), tok, "text/plain", []byte(strings.Join(ctxs, ",")), nil); status != http.StatusForbidden {
		t.Fatalf("mkfile, 4 bytes: %d %v, want 403", status, v)
	}
	if ks := e.keys("photos"); len(ks) != 0 {
		t.Fatalf("stored %q", ks)
	}
	if status, v := e.formUpload(tok, strp("ten.txt"), nil, "f", []byte("1234567890")); status != 200 {
		t.Fatalf("10 bytes: %d %v", status, v)
	}
}

// detectMime 1: the stored type is detected from the content (the first
// 512 bytes), whatever the client declares, and mimeLimit applies to it;
// the file name's extension counts only when the content says nothing
// (application/octet-stream). 0 or absent: the declared type stands.
// -1: the declared type stands even when it is application/octet-stream.
func TestUploadDetectMime(t *testing.T) {
	e := newEnv(t)
	future := time.Now().Add(time.Hour).Unix()
	png := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 2000)...)
	text := []byte(strings.Repeat("plain text ", 100))
	binary := []byte{0, 1, 2, 3, 0xfe, 0xff}
	tok := func(p map[string]any) string {
		p["scope"], p["deadline"] = "photos", future
		p["returnBody"] = `{"key":"$(key)","mimeType":"$(mimeType)"}`
		return uploadToken(alice, p)
	}
	b64up := func(tok, key, declared string, data []byte) (int, map[string]any) {
		return e.upCall("POST", putb64Path(len(data), &key, declared, nil, nil), tok, "application/octet-stream", []byte(base64.StdEncoding.EncodeToString(data)), nil)
	}
	for _, c := range []struct {
		name, token, declared string
		data                  []byte
		want                  string
	}{
		{"detect png", tok(map[string]any{"detectMime": 1}), "text/plain", png, "image/png"},
		{"detect text", tok(map[string]any{"detectMime": 1}), "image/jpeg", text, "text/plain; charset=utf-8"},
		{"declared stands", tok(map[string]any{}), "text/plain", png, "text/plain"},
		{"detectMime 0", tok(map[string]any{"detectMime": 0}), "application/x-mine", text, "application/x-mine"},
		{"-1 keeps octet-stream", tok(map[string]any{"detectMime": -1}), "application/octet-stream", png, "application/octet-stream"},
	} {
		status, v := b64up(c.token, c.name, c.declared, c.data)
		if status != 200 || v["mimeType"] != c.want {
			t.Fatalf("%s: %d %v, want %q", c.name, status, v, c.want)
		}
		if status, st := e.stat("photos", c.name); status != 200 || st["mimeType"] != c.want {
			t.Fatalf("%s: stat %d %v, want %q", c.name, status, st, c.want)
		}
	}
	// mimeLimit judges the detected type: a text declared image/png is
	// refused by image/*, a PNG declared text/plain admitted.
	lim := tok(map[string]any{"detectMime": 1, "mimeLimit": "image/*"})
	if status, v := b64up(lim, "fake.png", "image/png", text); status != http.StatusForbidden {
		t.Fatalf("text declared image/png under image/*: %d %v, want 403", status, v)
	}
	if status, v := b64up(lim, "real.png", "text/plain", png); status != 200 {
		t.Fatalf("png declared text/plain under image/*: %d %v", status, v)
	}
	// Content that says nothing: the file name's extension.
	if status, v := e.formUpload(tok(map[string]any{"detectMime": 1}), strp("bin.pdf"), nil, "doc.pdf", binary); status != 200 || v["mimeType"] != "application/pdf" {
		t.Fatalf("binary named doc.pdf: %d %v", status, v)
	}
	if _, ok := e.read("photos", "fake.png"); ok {
		t.Fatal("stored fake.png")
	}
	// Qiniu's older text: any value but 0 detects.
	if status, v := b64up(tok(map[string]any{"detectMime": 2}), "two", "image/gif", text); status != 200 || v["mimeType"] != "text/plain; charset=utf-8" {
		t.Fatalf("detectMime 2: %d %v", status, v)
	}
}

// returnBody takes the magic variables saveKey does: $(endUser),
// $(ext), $(fprefix), $(uuid) (the saveKey's own when it has one) and the
// date variables, besides $(key), $(etag), ...
func TestReturnBodyMagicVariables(t *testing.T) {
	e := newEnv(t)
	e.withClock()
	future := time.Now().Add(time.Hour).Unix()
	tok := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "endUser": "eu\"1",
		"saveKey":    "rb/$(uuid)$(ext)",
		"returnBody": `{"key":"$(key)","endUser":"$(endUser)","ext":"$(ext)","fprefix":"$(fprefix)","uuid":"$(uuid)","date":"$(year)-$(mon)-$(day)T$(hour):$(min):$(sec)","fname":"$(fname)","x":"$(x:a)"}`})
	status, v := e.formUpload(tok, nil, map[string]string{"x:a": "A"}, "photo.v2.jpg", []byte("jpeg-ish"))
	if status != 200 {
		t.Fatalf("upload: %d %v", status, v)
	}
	want := map[string]any{"endUser": "eu\"1", "ext": ".jpg", "fprefix": "photo.v2", "date": "2026-03-04T05:06:07", "fname": "photo.v2.jpg", "x": "A"}
	for k, w := range want {
		if v[k] != w {
			t.Errorf("%s: %v, want %q (reply %v)", k, v[k], w, v)
		}
	}
	if u, _ := v["uuid"].(string); len(u) != 36 || v["key"] != "rb/"+u+".jpg" {
		t.Errorf("uuid %v, key %v: want the saveKey's uuid", v["uuid"], v["key"])
	}
	// $(ext) from the type when the name has none.
	tok2 := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "returnBody": `{"ext":"$(ext)","fprefix":"$(fprefix)"}`})
	png := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 64)...)
	if status, v := e.formUpload(tok2, strp("p"), nil, "noext", png); status != 200 || v["ext"] != ".png" || v["fprefix"] != "noext" {
		t.Fatalf("ext by type: %d %v", status, v)
	}
}

// formNoFollow posts a form upload as a browser's form would and returns
// the response as it is (redirects not followed) and its body.
func (e *env) formNoFollow(token, key string, data []byte) (*http.Response, []byte) {
	e.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("token", token)
	mw.WriteField("key", key)
	mw.WriteField("x:n", "N")
	fw, _ := mw.CreateFormFile("file", "f.txt")
	fw.Write(data)
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, e.api.URL+"/", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// returnUrl: a form upload's success is a 303 See Other to
// <returnUrl>?upload_ret=<urlsafe base64 of the reply JSON> (returnBody's
// expansion, else {"hash","key"}), as Qiniu's; a failure is answered as
// without it; other uploads ignore it; a returnUrl that is not an http(s)
// URL is 400 before anything is stored.
func TestUploadReturnURL(t *testing.T) {
	e := newEnv(t)
	future := time.Now().Add(time.Hour).Unix()
	data := []byte("browser upload")
	tok := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "returnUrl": "https://app.example/done",
		"returnBody": `{"key":"$(key)","n":"$(x:n)"}`})
	resp, _ := e.formNoFollow(tok, "r1.txt", data)
	loc := resp.Header.Get("Location")
	want := "https://app.example/done?upload_ret=" + base64.URLEncoding.EncodeToString([]byte(`{"key":"r1.txt","n":"N"}`))
	if resp.StatusCode != http.StatusSeeOther || loc != want {
		t.Fatalf("returnUrl: %d Location %q, want 303 %q", resp.StatusCode, loc, want)
	}
	if got, ok := e.read("photos", "r1.txt"); !ok || got != string(data) {
		t.Fatal("r1.txt not stored")
	}
	// No returnBody: the default reply; a returnUrl with a query gets &.
	tok2 := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "returnUrl": "http://app.example/done?from=up"})
	resp, _ = e.formNoFollow(tok2, "r2.txt", data)
	loc = resp.Header.Get("Location")
	prefix := "http://app.example/done?from=up&upload_ret="
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, prefix) {
		t.Fatalf("returnUrl with a query: %d Location %q", resp.StatusCode, loc)
	}
	raw, err := base64.URLEncoding.DecodeString(strings.TrimPrefix(loc, prefix))
	var ret map[string]any
	if err != nil || json.Unmarshal(raw, &ret) != nil || ret["key"] != "r2.txt" || ret["hash"] != qiniuETag(data) {
		t.Fatalf("upload_ret %q: %v", raw, err)
	}
	// A failure (the key exists with other content) is not redirected.
	resp, body := e.formNoFollow(tok, "r1.txt", []byte("other"))
	if resp.StatusCode != 614 || resp.Header.Get("Location") != "" {
		t.Fatalf("failure: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	// putb64 ignores returnUrl.
	status, v := e.upCall("POST", putb64Path(len(data), strp("r3.txt"), "", nil, nil), tok, "application/octet-stream", []byte(base64.StdEncoding.EncodeToString(data)), nil)
	if status != 200 || v["key"] != "r3.txt" {
		t.Fatalf("putb64 with returnUrl: %d %v", status, v)
	}
	for _, bad := range []string{"javascript:alert(1)", "/relative", "ftp://x/y", "http://"} {
		tb := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "returnUrl": bad})
		if resp, body := e.formNoFollow(tb, "bad.txt", data); resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("returnUrl %q: %d %s", bad, resp.StatusCode, body)
		}
	}
	if _, ok := e.read("photos", "bad.txt"); ok {
		t.Fatal("stored bad.txt")
	}
}
