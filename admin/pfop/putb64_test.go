package pfop_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"hash/crc32"
	"net/http"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/pfop"
)

// putb64Path is the path Qiniu's SDKs (Go storage.Base64Uploader) post a
// base64 upload to: /putb64/<fsize>[/key/..][/mimeType/..]/crc32/<n>[/x:var/..].
func putb64Path(fsize int, key *string, mimeType string, crc *uint32, vars map[string]string) string {
	p := fmt.Sprintf("/putb64/%d", fsize)
	if key != nil {
		p += "/key/" + b64(*key)
	}
	if mimeType != "" {
		p += "/mimeType/" + b64(mimeType)
	}
	if crc != nil {
		p += fmt.Sprintf("/crc32/%d", *crc)
	}
	for k, v := range vars {
		p += "/" + k + "/" + b64(v)
	}
	return p
}

// POST /putb64: the body is the file in base64; the token's policy
// applies as to form uploads (returnBody, insertOnly, a bucket-only scope
// storing under the etag); a wrong size or crc32, or a body that is not
// base64, stores nothing.
func TestPutB64(t *testing.T) {
	e := newEnv(t)
	e.object("photos", "exists.txt", "old")
	future := time.Now().Add(time.Hour).Unix()
	data := randomBytes(70000, 7)
	enc := []byte(base64.StdEncoding.EncodeToString(data))
	sum := crc32.ChecksumIEEE(data)
	tok := uploadToken(alice, map[string]any{
		"scope": "photos", "deadline": future,
		"returnBody": `{"key":"$(key)","hash":"$(etag)","fsize":$(fsize),"mime":"$(mimeType)","v":"$(x:foo)"}`,
	})
	status, v := e.upCall("POST", putb64Path(len(data), strp("b64.bin"), "application/x-test", &sum, map[string]string{"x:foo": "bar"}),
		tok, "application/octet-stream", enc, nil)
	if status != 200 || v["key"] != "b64.bin" || v["hash"] != qiniuETag(data) || v["fsize"] != float64(len(data)) ||
		v["mime"] != "application/x-test" || v["v"] != "bar" {
		t.Fatalf("putb64: %d %v, want etag %s", status, v, qiniuETag(data))
	}
	if got, ok := e.read("photos", "b64.bin"); !ok || got != string(data) {
		t.Fatalf("stored object differs (%d bytes)", len(got))
	}
	// No key: stored under its etag. Size -1: not declared. Line breaks
	// in the base64 text are skipped.
	small := "small file\n"
	wrapped := base64.StdEncoding.EncodeToString([]byte(small))
	wrapped = wrapped[:8] + "\r\n" + wrapped[8:]
	status, v = e.upCall("POST", "/putb64/-1", tok, "application/octet-stream", []byte(wrapped), nil)
	if status != 200 || v["key"] != qiniuETag([]byte(small)) {
		t.Fatalf("putb64 without a key: %d %v", status, v)
	}
	if got, _ := e.read("photos", qiniuETag([]byte(small))); got != small {
		t.Fatalf("stored %q", got)
	}

	bad := sum + 1
	for name, c := range map[string]struct {
		path, token string
		body        []byte
		want        int
	}{
		"no token":     {putb64Path(len(data), strp("x.bin"), "", nil, nil), "", enc, http.StatusUnauthorized},
		"crc32":        {putb64Path(len(data), strp("x.bin"), "", &bad, nil), tok, enc, http.StatusNotAcceptable},
		"fsize":        {putb64Path(len(data)+1, strp("x.bin"), "", nil, nil), tok, enc, http.StatusBadRequest},
		"not base64":   {putb64Path(4, strp("x.bin"), "", nil, nil), tok, []byte("a*b!"), http.StatusBadRequest},
		"exists":       {putb64Path(len(data), strp("exists.txt"), "", nil, nil), tok, enc, pfop.StatusFileExists},
		"bad size":     {"/putb64/x/key/" + b64("x.bin"), tok, enc, http.StatusBadRequest},
		"odd params":   {putb64Path(len(data), strp("x.bin"), "", nil, nil) + "/mimeType", tok, enc, http.StatusBadRequest},
		"bad crc text": {putb64Path(len(data), strp("x.bin"), "", nil, nil) + "/crc32/abc", tok, enc, http.StatusBadRequest},
	} {
		status, v := e.upCall("POST", c.path, c.token, "application/octet-stream", c.body, nil)
		if status != c.want {
			t.Errorf("%s: %d %v, want %d", name, status, v, c.want)
		}
		if _, ok := e.read("photos", "x.bin"); ok {
			t.Fatalf("%s: stored x.bin", name)
		}
	}
	if got, _ := e.read("photos", "exists.txt"); got != "old" {
		t.Fatalf("exists.txt now %q", got)
	}
	if status, _ := e.upCall("GET", putb64Path(len(data), strp("x.bin"), "", nil, nil), tok, "", nil, nil); status != http.StatusMethodNotAllowed {
		t.Fatalf("GET /putb64: %d", status)
	}
}

// The base64 text is bounded by what the largest file the policy admits
// encodes to (line breaks allowed for): line breaks are skipped, so a body
// of them alone decoded to nothing while the server read on without end,
// and stored an empty file.
func TestPutB64EncodedCap(t *testing.T) {
	e := newEnv(t)
	future := time.Now().Add(time.Hour).Unix()
	tok := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "fsizeLimit": 1000})
	body := append([]byte(base64.StdEncoding.EncodeToString([]byte("hi"))), bytes.Repeat([]byte("\r\n"), 100000)...)
	for _, size := range []int{-1, 2} {
		status, v := e.upCall("POST", putb64Path(size, strp("nl.bin"), "", nil, nil), tok, "application/octet-stream", body, nil)
		if status != http.StatusRequestEntityTooLarge {
			t.Fatalf("fsize %d: a body of line breaks: %d %v, want 413", size, status, v)
		}
		if _, ok := e.read("photos", "nl.bin"); ok {
			t.Fatal("stored nl.bin")
		}
	}
	// Base64 wrapped at 64 characters (PEM's lines, MIME's are 76) with
	// CRLF, of a file at the limit, is within the bound.
	data := randomBytes(1000, 3)
	enc := base64.StdEncoding.EncodeToString(data)
	var wrapped []byte
	for len(enc) > 64 {
		wrapped = append(append(wrapped, enc[:64]...), "\r\n"...)
		enc = enc[64:]
	}
	wrapped = append(append(wrapped, enc...), "\r\n"...)
	for _, size := range []int{-1, len(data)} {
		status, v := e.upCall("POST", putb64Path(size, strp("wrapped.bin"), "", nil, nil), tok, "application/octet-stream", wrapped, nil)
		if status != 200 {
			t.Fatalf("fsize %d: wrapped base64: %d %v", size, status, v)
		}
		if got, _ := e.read("photos", "wrapped.bin"); got != string(data) {
			t.Fatal("wrapped.bin differs")
		}
	}
}
