package pfop_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"hash/crc32"
	"io"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/internal/accountstest"
)

// uploadToken builds "<AK>:<sign>:<urlsafe_base64(policy)>" from the
// policy's JSON, sign = urlsafe_base64(hmac_sha1(SK, encoded policy)).
func uploadToken(a dora.Account, policy map[string]any) string {
	b, _ := json.Marshal(policy)
	enc := base64.URLEncoding.EncodeToString(b)
	return a.AccessKey + ":" + accountstest.HMACB64(a.SecretKey, enc) + ":" + enc
}

// formUpload POSTs a multipart form as the Go SDK's form uploader does:
// token, key, x: variables, then the file (application/octet-stream).
func (e *env) formUpload(token string, key *string, xvars map[string]string, filename string, data []byte) (int, map[string]any) {
	e.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("token", token)
	if key != nil {
		mw.WriteField("key", *key)
	}
	for k, v := range xvars {
		mw.WriteField(k, v)
	}
	fw, err := mw.CreateFormFile("file", filename)
	if err != nil {
		e.t.Fatal(err)
	}
	fw.Write(data)
	mw.Close()
	req, err := http.NewRequest(http.MethodPost, e.api.URL+"/", &buf)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	status, v, _ := e.do(req)
	return status, v
}

func strp(s string) *string { return &s }

// badSign changes the first character of tok's signature ("AK:sign:policy")
// to another one (replacing a fixed position with "x" left the token valid
// whenever the signature had an "x" there: 1 run in 64).
func badSign(tok string) string {
	i := strings.IndexByte(tok, ':') + 1
	c := byte('x')
	if tok[i] == c {
		c = 'y'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

func TestFormUpload(t *testing.T) {
	e := newEnv(t)
	e.startWorker(e.q, nil)
	e.object("photos", "exists.txt", "old")
	future := time.Now().Add(time.Hour).Unix()
	png := append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{0}, 64)...)
	text := []byte("hello upload, plain text")

	cases := []struct {
		name    string
		token   string
		key     *string
		data    []byte
		status  int
		wantKey string // stored key on success
	}{
		{"scope bucket:key", uploadToken(alice, map[string]any{"scope": "photos:new.txt", "deadline": future}), strp("new.txt"), text, 200, "new.txt"},
		{"scope key fills the key", uploadToken(alice, map[string]any{"scope": "photos:fromscope.txt", "deadline": future}), nil, text, 200, "fromscope.txt"},
		{"scope bucket, any new key", uploadToken(alice, map[string]any{"scope": "photos", "deadline": future}), strp("any/new.txt"), text, 200, "any/new.txt"},
		{"prefixal scope", uploadToken(alice, map[string]any{"scope": "photos:dir/", "isPrefixalScope": 1, "deadline": future}), strp("dir/x.txt"), text, 200, "dir/x.txt"},
		{"overwrite allowed with bucket:key", uploadToken(alice, map[string]any{"scope": "photos:exists.txt", "deadline": future}), strp("exists.txt"), text, 200, "exists.txt"},
		{"mime allowed", uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "mimeLimit": "image/*;image/png"}), strp("img.png"), png, 200, "img.png"},
		{"size within limit", uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "fsizeLimit": len(text)}), strp("fits.txt"), text, 200, "fits.txt"},

		{"no token", "", strp("x.txt"), text, 401, ""},
		{"expired", uploadToken(alice, map[string]any{"scope": "photos", "deadline": time.Now().Add(-time.Minute).Unix()}), strp("late.txt"), text, 401, ""},
		{"no deadline", uploadToken(alice, map[string]any{"scope": "photos"}), strp("nodl.txt"), text, 401, ""},
		{"bad sign", badSign(uploadToken(alice, map[string]any{"scope": "photos", "deadline": future})), strp("bad.txt"), text, 401, ""},
		{"unknown AK", uploadToken(dora.Account{AccessKey: "nobody", SecretKey: "x"}, map[string]any{"scope": "photos", "deadline": future}), strp("u.txt"), text, 401, ""},
		{"wrong scope key", uploadToken(alice, map[string]any{"scope": "photos:a.txt", "deadline": future}), strp("b.txt"), text, 403, ""},
		{"outside the prefix", uploadToken(alice, map[string]any{"scope": "photos:dir/", "isPrefixalScope": 1, "deadline": future}), strp("other/x.txt"), text, 403, ""},
		{"someone else's bucket", uploadToken(alice, map[string]any{"scope": "bobs", "deadline": future}), strp("x.txt"), text, 403, ""},
		{"no such bucket", uploadToken(alice, map[string]any{"scope": "nobucket", "deadline": future}), strp("x.txt"), text, 631, ""},
		// exists.txt holds text by now: other content (png) is refused.
		{"insertOnly on an existing key", uploadToken(alice, map[string]any{"scope": "photos:exists.txt", "insertOnly": 1, "deadline": future}), strp("exists.txt"), png, 614, ""},
		{"scope bucket on an existing key", uploadToken(alice, map[string]any{"scope": "photos", "deadline": future}), strp("exists.txt"), png, 614, ""},
		{"too large", uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "fsizeLimit": 5}), strp("big.txt"), text, 413, ""},
		{"mime not allowed", uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "mimeLimit": "image/*"}), strp("t1.txt"), text, 403, ""},
		{"mime refused", uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "mimeLimit": "!text/plain"}), strp("t2.txt"), text, 403, ""},
		{"bad persistentOps", uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "persistentOps": "a||b"}), strp("t3.txt"), text, 400, ""},
		{"callbackUrl", uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "callbackUrl": "http://x/"}), strp("t4.txt"), text, 400, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, v := e.formUpload(c.token, c.key, nil, "f.bin", c.data)
			if status != c.status {
				t.Fatalf("status %d %v, want %d", status, v, c.status)
			}
			if c.status != 200 {
				if v["error"] == nil {
					t.Fatalf("no error in %v", v)
				}
				if c.key != nil && *c.key != "exists.txt" {
					if _, ok := e.read("photos", *c.key); ok {
						t.Fatalf("a refused upload stored %s", *c.key)
					}
				}
				return
			}
			if v["key"] != c.wantKey || v["hash"] != etagOf(t, string(c.data)) {
				t.Fatalf("reply %v", v)
			}
			if got, ok := e.read("photos", c.wantKey); !ok || got != string(c.data) {
				t.Fatalf("stored %q %v", got, ok)
			}
		})
	}

	t.Run("no key: the etag is the key", func(t *testing.T) {
		data := []byte("keyless content")
		status, v := e.formUpload(uploadToken(alice, map[string]any{"scope": "photos", "deadline": future}), nil, nil, "f.txt", data)
		if status != 200 || v["key"] != etagOf(t, string(data)) {
			t.Fatalf("%d %v", status, v)
		}
		if got, ok := e.read("photos", v["key"].(string)); !ok || got != string(data) {
			t.Fatalf("stored %q %v", got, ok)
		}
	})

	t.Run("returnBody", func(t *testing.T) {
		tok := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future,
			"returnBody": `{"k":"$(key)","h":"$(etag)","s":$(fsize),"m":"$(mimeType)","b":"$(bucket)","x":"$(x:foo)"}`})
		status, v := e.formUpload(tok, strp("rb.txt"), map[string]string{"x:foo": `say "hi"`}, "rb.txt", text)
		if status != 200 {
			t.Fatalf("%d %v", status, v)
		}
		want := map[string]any{"k": "rb.txt", "h": etagOf(t, string(text)), "s": float64(len(text)), "m": "text/plain; charset=utf-8", "b": "photos", "x": `say "hi"`}
		for k, w := range want {
			if v[k] != w {
				t.Fatalf("returnBody %v, want %v", v, want)
			}
		}
	})

	t.Run("persistentOps", func(t *testing.T) {
		rcv, notifyURL := newReceiver(t, 200)
		tok := uploadToken(alice, map[string]any{"scope": "photos:po.txt", "deadline": future,
			"persistentOps": "upper/p", "persistentNotifyUrl": notifyURL, "persistentPipeline": "uploads"})
		status, v := e.formUpload(tok, strp("po.txt"), nil, "po.txt", []byte("process me"))
		id, _ := v["persistentId"].(string)
		if status != 200 || id == "" || v["key"] != "po.txt" {
			t.Fatalf("%d %v", status, v)
		}
		s, _ := e.waitFinal(id)
		if s.Code != 0 || s.Pipeline != "uploads" || s.InputKey != "po.txt" {
			t.Fatalf("job %+v", s)
		}
		if got, _ := e.read("photos", s.Items[0].Key); got != "PROCESS ME" {
			t.Fatalf("result %q", got)
		}
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		if len(rcv.bodies) != 1 || rcv.bodies[0].ID != id {
			t.Fatalf("notifications %+v", rcv.bodies)
		}
	})

	t.Run("GET / is not the upload", func(t *testing.T) {
		resp, err := http.Get(e.api.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 { // the wrapped handler's answer
			t.Fatalf("GET /: %d", resp.StatusCode)
		}
	})

	// The exported token maker agrees with the SDK's shape.
	tok := pfop.UploadToken(alice.AccessKey, alice.SecretKey, pfop.PutPolicy{Scope: "photos:sdk.txt", Deadline: future})
	if status, v := e.formUpload(tok, strp("sdk.txt"), nil, "sdk.txt", text); status != 200 {
		t.Fatalf("UploadToken: %d %v", status, v)
	}
}

// Qiniu's insert-only mode (scope "<bucket>", or insertOnly): a key that
// exists with other content is 614, but the same content again is a
// success (an SDK's retry of an upload whose reply was lost must not fail).
func TestInsertOnlySameContent(t *testing.T) {
	e := newEnv(t)
	e.object("photos", "same.txt", "the content")
	future := time.Now().Add(time.Hour).Unix()
	for name, pol := range map[string]map[string]any{
		"scope bucket": {"scope": "photos", "deadline": future},
		"insertOnly":   {"scope": "photos:same.txt", "insertOnly": 1, "deadline": future},
	} {
		t.Run(name, func(t *testing.T) {
			status, v := e.formUpload(uploadToken(alice, pol), strp("same.txt"), nil, "f.txt", []byte("the content"))
			if status != 200 || v["key"] != "same.txt" || v["hash"] != etagOf(t, "the content") {
				t.Fatalf("the same content again: %d %v", status, v)
			}
			status, v = e.formUpload(uploadToken(alice, pol), strp("same.txt"), nil, "f.txt", []byte("other content"))
			if status != pfop.StatusFileExists {
				t.Fatalf("other content: %d %v, want 614", status, v)
			}
			if got, _ := e.read("photos", "same.txt"); got != "the content" {
				t.Fatalf("the object now holds %q", got)
			}
		})
	}
}

// The form's crc32 field (Qiniu's SDKs send the file's CRC32, IEEE, in
// decimal, before the file) is checked: a file that does not match is
// refused with 406 and nothing is stored.
func TestFormUploadCRC32(t *testing.T) {
	e := newEnv(t)
	tok := uploadToken(alice, map[string]any{"scope": "photos", "deadline": time.Now().Add(time.Hour).Unix()})
	data := []byte("checked content")
	sum := crc32.ChecksumIEEE(data)
	for _, c := range []struct {
		name, key, crc string
		want           int
	}{
		{"matching", "crc-ok.txt", strconv.FormatUint(uint64(sum), 10), 200},
		{"not matching", "crc-bad.txt", strconv.FormatUint(uint64(sum^1), 10), 406},
		{"not a number", "crc-nan.txt", "abc", 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, v := e.formUpload(tok, strp(c.key), map[string]string{"crc32": c.crc}, "f.txt", data)
			if status != c.want {
				t.Fatalf("crc32 %s: %d %v, want %d", c.crc, status, v, c.want)
			}
			if _, stored := e.read("photos", c.key); stored != (c.want == 200) {
				t.Fatalf("stored %v after %d", stored, status)
			}
		})
	}
}
