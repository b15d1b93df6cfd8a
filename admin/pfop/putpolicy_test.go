package pfop_test

import (
	"encoding/base64"
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
