package pfop_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/internal/accountstest"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
)

// uploadClock is the time the handlers of withClock see.
var uploadClock = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// withClock serves the upload API with a handler whose clock says
// uploadClock (for saveKey's date variables), on e's store and objects.
func (e *env) withClock() {
	e.t.Helper()
	h, err := pfop.NewHandler(pfop.HandlerConfig{
		Store: e.st, Queue: e.q, Objects: e.objs, Logger: testLogger(),
		SpoolDir: filepath.Join(e.t.TempDir(), "uploads"),
		Now:      func() time.Time { return uploadClock },
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.h = h
	e.api = httptest.NewServer(h.Wrap(http.NotFoundHandler()))
	e.t.Cleanup(e.api.Close)
}

// keys lists bucket's keys, the upload temporaries included.
func (e *env) keys(bucket string) []string {
	e.t.Helper()
	ks, err := e.objs.Dir.Keys(context.Background(), bucket, "")
	if err != nil {
		e.t.Fatal(err)
	}
	slices.Sort(ks)
	return ks
}

// stat is rs's stat of bucket:key (alice's), as the SDKs read it.
func (e *env) stat(bucket, key string) (int, map[string]any) {
	e.t.Helper()
	h, err := rs.New(rs.Config{Store: e.st, Objects: e.objs, Logger: testLogger()})
	if err != nil {
		e.t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, "/stat/"+entry(bucket, key), nil)
	accountstest.SignQBox(req, alice, "")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	var v map[string]any
	json.Unmarshal(w.Body.Bytes(), &v)
	return w.Code, v
}

// saveKey and forceSaveKey through the form upload: the key is the
// template's expansion, decided once the file is stored (etag, fsize,
// the x: variables), checked against the scope and insertOnly; a bad
// template or key stores nothing.
func TestUploadSaveKey(t *testing.T) {
	e := newEnv(t)
	e.withClock()
	future := time.Now().Add(time.Hour).Unix()
	text := []byte("hello upload, plain text")
	png := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 64)...)
	tok := func(p map[string]any) string {
		p["deadline"] = future
		if p["scope"] == nil {
			p["scope"] = "photos"
		}
		return uploadToken(alice, p)
	}
	cases := []struct {
		name    string
		token   string
		key     *string
		xvars   map[string]string
		fname   string
		data    []byte
		status  int
		wantKey string
	}{
		{"date, fprefix, ext from the name", tok(map[string]any{"saveKey": "up/$(year)/$(mon)/$(day)/$(hour)$(min)$(sec)-$(fprefix)$(ext)"}),
			nil, nil, "cat.v1.txt", text, 200, "up/2026/03/04/050607-cat.v1.txt"},
		{"etag, bucket, ext from the type", tok(map[string]any{"saveKey": "$(bucket)/$(etag)$(ext)"}),
			nil, nil, "noext", png, 200, "photos/" + qiniuETag(png) + ".png"},
		{"fsize, mimeType, x: var, endUser, ${}", tok(map[string]any{"saveKey": "${x:user}/$(fsize)-$(mimeType)/$(endUser)/$(fname)", "endUser": "eu7"}),
			nil, map[string]string{"x:user": "u1"}, "a.bin", text, 200, "u1/24-text/plain/eu7/a.bin"},
		{"the client's key wins", tok(map[string]any{"saveKey": "saved/$(etag)"}),
			strp("mine.txt"), nil, "f.txt", text, 200, "mine.txt"},
		{"the scope's key wins", tok(map[string]any{"scope": "photos:scoped.txt", "saveKey": "saved/$(etag)"}),
			nil, nil, "f.txt", text, 200, "scoped.txt"},
		{"forceSaveKey wins over the client's key", tok(map[string]any{"saveKey": "forced/$(fname)", "forceSaveKey": true}),
			strp("ignored.txt"), nil, "f.txt", text, 200, "forced/f.txt"},
		{"forceSaveKey 1, literal saveKey", tok(map[string]any{"saveKey": "lit/one.txt", "forceSaveKey": 1}),
			strp("ignored2.txt"), nil, "f.txt", text, 200, "lit/one.txt"},
		{"forceSaveKey within a bucket:key scope", tok(map[string]any{"scope": "photos:fixed.txt", "saveKey": "fixed$(ext)", "forceSaveKey": true}),
			strp("fixed.txt"), nil, "x.txt", text, 200, "fixed.txt"},
		{"prefixal scope admits the expansion", tok(map[string]any{"scope": "photos:dir/", "isPrefixalScope": 1, "saveKey": "dir/$(etag)"}),
			nil, nil, "", text, 200, "dir/" + qiniuETag(text)},

		{"forceSaveKey outside a bucket:key scope", tok(map[string]any{"scope": "photos:fixed2.txt", "saveKey": "other-$(etag)", "forceSaveKey": true}),
			strp("fixed2.txt"), nil, "x.txt", text, 403, ""},
		{"literal forceSaveKey outside the scope", tok(map[string]any{"scope": "photos:fixed3.txt", "saveKey": "other.txt", "forceSaveKey": true}),
			strp("fixed3.txt"), nil, "x.txt", text, 403, ""},
		{"prefixal scope refuses the expansion", tok(map[string]any{"scope": "photos:dir/", "isPrefixalScope": 1, "saveKey": "x/$(etag)"}),
			nil, nil, "", text, 403, ""},
		{"unknown variable", tok(map[string]any{"saveKey": "a/$(key)"}), nil, nil, "f.txt", text, 400, ""},
		{"unclosed variable", tok(map[string]any{"saveKey": "a/$(etag"}), nil, nil, "f.txt", text, 400, ""},
		{"expands to an empty key", tok(map[string]any{"saveKey": "$(x:none)"}), nil, nil, "f.txt", text, 400, ""},
		{"expands to an empty segment", tok(map[string]any{"saveKey": "a//$(etag)"}), nil, nil, "f.txt", text, 400, ""},
		{"expands to a leading slash", tok(map[string]any{"saveKey": "$(x:p)$(etag)"}), nil, map[string]string{"x:p": "/"}, "f.txt", text, 400, ""},
		{"expands past 1024 bytes", tok(map[string]any{"saveKey": strings.Repeat("$(x:long)", 3)}), nil, map[string]string{"x:long": strings.Repeat("k", 400)}, "f.txt", text, 400, ""},
		{"forceSaveKey without saveKey", tok(map[string]any{"forceSaveKey": true}), strp("k.txt"), nil, "f.txt", text, 400, ""},
		{"forceSaveKey not a flag", tok(map[string]any{"saveKey": "a", "forceSaveKey": "yes"}), strp("k.txt"), nil, "f.txt", text, 401, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			status, v := e.formUpload(c.token, c.key, c.xvars, c.fname, c.data)
			if status != c.status {
				t.Fatalf("status %d %v, want %d", status, v, c.status)
			}
			if c.status != 200 {
				return
			}
			if v["key"] != c.wantKey || v["hash"] != qiniuETag(c.data) {
				t.Fatalf("reply %v, want key %q", v, c.wantKey)
			}
			if got, ok := e.read("photos", c.wantKey); !ok || got != string(c.data) {
				t.Fatalf("stored %q %v", got, ok)
			}
		})
	}
	e.t = t
	for _, k := range e.keys("photos") {
		if strings.HasPrefix(k, ".dora-upload/") || strings.Contains(k, "ignored") || strings.HasPrefix(k, "other") || strings.HasPrefix(k, "x/") {
			t.Errorf("left behind: %q (keys %q)", k, e.keys("photos"))
		}
	}

	// $(uuid): a fresh random UUID per upload.
	uuidRE := regexp.MustCompile(`^u/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	u := tok(map[string]any{"saveKey": "u/$(uuid)"})
	_, v1 := e.formUpload(u, nil, nil, "f", text)
	_, v2 := e.formUpload(u, nil, nil, "f", text)
	if k1, _ := v1["key"].(string); !uuidRE.MatchString(k1) || v1["key"] == v2["key"] {
		t.Fatalf("uuid keys %v %v", v1, v2)
	}

	// Scope "bucket" is insert-only for the expansion too: other content
	// under an existing key is 614 (and the old content stays), the same
	// content succeeds.
	ins := tok(map[string]any{"saveKey": "dup/$(fname)"})
	if status, v := e.formUpload(ins, nil, nil, "d.txt", text); status != 200 || v["key"] != "dup/d.txt" {
		t.Fatalf("first: %d %v", status, v)
	}
	if status, v := e.formUpload(ins, nil, nil, "d.txt", png); status != pfop.StatusFileExists {
		t.Fatalf("other content: %d %v", status, v)
	}
	if status, v := e.formUpload(ins, nil, nil, "d.txt", text); status != 200 || v["key"] != "dup/d.txt" {
		t.Fatalf("same content: %d %v", status, v)
	}
	if got, _ := e.read("photos", "dup/d.txt"); got != string(text) {
		t.Fatalf("dup/d.txt holds %q", got)
	}
	// A bucket:key scope with forceSaveKey overwrites unless insertOnly.
	over := tok(map[string]any{"scope": "photos:fixed.txt", "saveKey": "fixed.txt", "forceSaveKey": true, "insertOnly": 1})
	if status, v := e.formUpload(over, nil, nil, "x.txt", png); status != pfop.StatusFileExists {
		t.Fatalf("insertOnly forced key: %d %v", status, v)
	}
	for _, k := range e.keys("photos") {
		if strings.HasPrefix(k, ".dora-upload/") {
			t.Errorf("temporary left behind: %q", k)
		}
	}
}

// fileType and deleteAfterDays set the stored object's storage class and
// lifecycle, as chtype and deleteAfterDays do; an overwrite without them
// clears them; values out of range are 400 and store nothing.
func TestUploadFileTypeDeleteAfterDays(t *testing.T) {
	e := newEnv(t)
	future := time.Now().Add(time.Hour).Unix()
	text := []byte("lifecycle")
	tok := uploadToken(alice, map[string]any{"scope": "photos:life.txt", "deadline": future, "fileType": 1, "deleteAfterDays": 3})
	if status, v := e.formUpload(tok, strp("life.txt"), nil, "life.txt", text); status != 200 {
		t.Fatalf("upload: %d %v", status, v)
	}
	status, st := e.stat("photos", "life.txt")
	put := int64(st["putTime"].(float64)) * 100
	wantExp := time.Unix(0, put).Add(3 * 24 * time.Hour).Unix()
	if status != 200 || st["type"] != float64(1) || int64(st["expiration"].(float64)) != wantExp {
		t.Fatalf("stat %d %v, want type 1 and expiration %d", status, st, wantExp)
	}
	// The record names the object it was set on, so that the expiry
	// never deletes another object put over it (rs.Decide).
	meta, _, err := store.Get[rs.ObjectMeta](context.Background(), e.st, store.ObjectMetaKey("photos", "life.txt"))
	if err != nil || meta.ETag != st["hash"] {
		t.Fatalf("lifecycle record %+v, %v; want the etag %v", meta, err, st["hash"])
	}
	// Keyless, through the saveKey path: the meta is the final key's.
	tok2 := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "fileType": 3, "saveKey": "cold/$(etag)"})
	status, v := e.formUpload(tok2, nil, nil, "c.txt", text)
	if status != 200 {
		t.Fatalf("saveKey upload: %d %v", status, v)
	}
	if status, st := e.stat("photos", v["key"].(string)); status != 200 || st["type"] != float64(3) || st["expiration"] != nil {
		t.Fatalf("stat %d %v, want type 3, no expiration", status, st)
	}
	// Overwritten by an upload without them: standard, no lifecycle.
	plain := uploadToken(alice, map[string]any{"scope": "photos:life.txt", "deadline": future})
	if status, v := e.formUpload(plain, strp("life.txt"), nil, "life.txt", []byte("new")); status != 200 {
		t.Fatalf("overwrite: %d %v", status, v)
	}
	if status, st := e.stat("photos", "life.txt"); status != 200 || st["type"] != float64(0) || st["expiration"] != nil {
		t.Fatalf("stat after overwrite %d %v", status, st)
	}
	for _, p := range []map[string]any{{"fileType": 4}, {"fileType": -1}, {"deleteAfterDays": -1}, {"deleteAfterDays": 100001}} {
		p["scope"], p["deadline"] = "photos", future
		if status, v := e.formUpload(uploadToken(alice, p), strp("bad.txt"), nil, "bad.txt", text); status != 400 {
			t.Fatalf("%v: %d %v", p, status, v)
		}
	}
	if _, ok := e.read("photos", "bad.txt"); ok {
		t.Fatal("a refused policy stored bad.txt")
	}
	// A key too long for its metadata record (objmeta/photos/<key> over
	// 1024 bytes): stored without the fields, refused with them.
	long := strings.Repeat(strings.Repeat("k", 199)+"/", 5) + "end12345.txt"
	if status, v := e.formUpload(uploadToken(alice, map[string]any{"scope": "photos", "deadline": future}), &long, nil, "f", text); status != 200 {
		t.Fatalf("long key: %d %v", status, v)
	}
	long2 := strings.Replace(long, "end", "END", 1)
	withType := uploadToken(alice, map[string]any{"scope": "photos:" + long2, "deadline": future, "fileType": 1})
	if status, v := e.formUpload(withType, &long2, nil, "f", text); status != 400 {
		t.Fatalf("long key with fileType: %d %v", status, v)
	}
	if _, ok := e.read("photos", long2); ok {
		t.Fatal("a long key with fileType was stored")
	}
}

// The same fields through resumable v1 (mkfile), v2 (complete) and putb64.
func TestResumableSaveKey(t *testing.T) {
	e := newEnv(t)
	e.withClock()
	future := time.Now().Add(time.Hour).Unix()
	data := randomBytes(5<<20, 7)
	etag := qiniuETag(data)
	tok := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "forceSaveKey": true,
		"saveKey": "r/$(year)$(mon)$(day)/$(x:who)/$(etag)-$(fsize)$(ext)", "fileType": 2, "deleteAfterDays": 1})

	// v1: the path's key is ignored (forceSaveKey), mimeType gives $(ext).
	ctxs := e.putBlocksV1(tok, data, 1<<20)
	status, v := e.upCall("POST", mkfilePath(len(data), strp("ignored.bin"), "video/mp4", map[string]string{"x:who": "v1"}), tok, "text/plain", []byte(strings.Join(ctxs, ",")), nil)
	want := "r/20260304/v1/" + etag + "-5242880.mp4"
	if status != 200 || v["key"] != want || v["hash"] != etag {
		t.Fatalf("mkfile: %d %v, want key %q", status, v, want)
	}
	if got, ok := e.read("photos", want); !ok || got != string(data) {
		t.Fatal("mkfile: stored content differs")
	}
	if status, st := e.stat("photos", want); status != 200 || st["type"] != float64(2) || st["expiration"] == nil {
		t.Fatalf("mkfile stat %d %v", status, st)
	}
	if _, ok := e.read("photos", "ignored.bin"); ok {
		t.Fatal("mkfile stored the client's key")
	}

	// v2: keyless upload ("~"), the expansion from customVars and fname.
	tok2 := uploadToken(alice, map[string]any{"scope": "photos:v2/", "isPrefixalScope": 1, "deadline": future,
		"saveKey": "v2/$(x:who)/$(fprefix)$(ext)", "deleteAfterDays": 5})
	base := "/buckets/photos/objects/~/uploads"
	status, v = e.upCall("POST", base, tok2, "", nil, nil)
	id, _ := v["uploadId"].(string)
	if status != 200 || id == "" {
		t.Fatalf("initiate: %d %v", status, v)
	}
	parts := e.partsV2(base+"/"+id, tok2, data, 4<<20)
	body, _ := json.Marshal(map[string]any{"parts": parts, "fname": "movie.mkv", "customVars": map[string]string{"x:who": "v2user"}})
	status, v = e.upCall("POST", base+"/"+id, tok2, "application/json", body, nil)
	if status != 200 || v["key"] != "v2/v2user/movie.mkv" || v["hash"] != etag {
		t.Fatalf("complete: %d %v", status, v)
	}
	if got, ok := e.read("photos", "v2/v2user/movie.mkv"); !ok || got != string(data) {
		t.Fatal("complete: stored content differs")
	}
	if status, st := e.stat("photos", "v2/v2user/movie.mkv"); status != 200 || st["type"] != float64(0) || st["expiration"] == nil {
		t.Fatalf("complete stat %d %v", status, st)
	}

	// v2 again, the expansion outside the prefixal scope: 403, the parts
	// stay (the upload may be completed again) and nothing is stored.
	status, v = e.upCall("POST", base, tok2, "", nil, nil)
	id, _ = v["uploadId"].(string)
	parts = e.partsV2(base+"/"+id, tok2, data[:1000], 4<<20)
	tokBad := uploadToken(alice, map[string]any{"scope": "photos:v2/", "isPrefixalScope": 1, "deadline": future, "saveKey": "elsewhere/$(etag)"})
	body, _ = json.Marshal(map[string]any{"parts": parts})
	if status, v := e.upCall("POST", base+"/"+id, tokBad, "application/json", body, nil); status != 403 {
		t.Fatalf("complete outside the scope: %d %v", status, v)
	}

	// putb64.
	small := []byte("base64 body")
	tok3 := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "saveKey": "b64/$(etag)", "fileType": 1})
	status, v = e.upCall("POST", putb64Path(len(small), nil, "", nil, nil), tok3, "application/octet-stream", []byte(base64.StdEncoding.EncodeToString(small)), nil)
	if status != 200 || v["key"] != "b64/"+qiniuETag(small) {
		t.Fatalf("putb64: %d %v", status, v)
	}
	if status, st := e.stat("photos", "b64/"+qiniuETag(small)); status != 200 || st["type"] != float64(1) {
		t.Fatalf("putb64 stat %d %v", status, st)
	}
	for _, k := range e.keys("photos") {
		if strings.HasPrefix(k, ".dora-upload/") || strings.HasPrefix(k, "elsewhere/") {
			t.Errorf("left behind: %q", k)
		}
	}
}

// An insert-only upload of content the key already holds succeeds
// without writing (Qiniu's retry rule), so it must not touch the existing
// object's storage class or lifecycle either: an insert-only token with
// deleteAfterDays would otherwise put an expiry on an object it could not
// overwrite (keyed, etag-keyed and saveKey uploads alike).
func TestInsertOnlySameContentKeepsMeta(t *testing.T) {
	e := newEnv(t)
	future := time.Now().Add(time.Hour).Unix()
	e.object("photos", "keep.txt", "permanent")
	etagged := "stored under its etag"
	e.object("photos", etagOf(t, etagged), etagged)
	e.object("photos", "sk/a.txt", "saved")
	for _, c := range []struct {
		name, saveKey, data, key string
		clientKey                *string
	}{
		{"keyed", "", "permanent", "keep.txt", strp("keep.txt")},
		{"etag", "", etagged, etagOf(t, etagged), nil},
		{"saveKey", "sk/$(fname)", "saved", "sk/a.txt", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			p := map[string]any{"scope": "photos", "deadline": future, "deleteAfterDays": 1, "fileType": 2}
			if c.saveKey != "" {
				p["saveKey"] = c.saveKey
			}
			status, v := e.formUpload(uploadToken(alice, p), c.clientKey, nil, "a.txt", []byte(c.data))
			if status != 200 || v["key"] != c.key {
				t.Fatalf("same content: %d %v, want 200 %q", status, v, c.key)
			}
			if status, st := e.stat("photos", c.key); status != 200 || st["type"] != float64(0) || st["expiration"] != nil {
				t.Fatalf("stat %d %v: the existing object's class or lifecycle changed", status, st)
			}
		})
	}
}

// The temporaries of keyless and saveKey uploads live under .dora-upload/
// in the bucket: a client's key (or a saveKey's expansion) there is
// refused, or an object named .dora-upload, which any bucket-scoped token
// could upload, made every later keyless upload to the bucket fail.
func TestUploadTempNamespaceReserved(t *testing.T) {
	e := newEnv(t)
	future := time.Now().Add(time.Hour).Unix()
	tok := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future})
	for _, k := range []string{".dora-upload", ".dora-upload/x"} {
		if status, v := e.formUpload(tok, strp(k), nil, "f", []byte("squat")); status != 400 {
			t.Fatalf("key %q: %d %v, want 400", k, status, v)
		}
	}
	sk := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "saveKey": "$(x:d)/$(etag)"})
	if status, v := e.formUpload(sk, nil, map[string]string{"x:d": ".dora-upload"}, "f", []byte("squat")); status != 400 {
		t.Fatalf("saveKey into .dora-upload/: %d %v, want 400", status, v)
	}
	if ks := e.keys("photos"); len(ks) != 0 {
		t.Fatalf("stored %q", ks)
	}
	if status, v := e.formUpload(tok, nil, nil, "f", []byte("keyless")); status != 200 {
		t.Fatalf("keyless upload: %d %v", status, v)
	}
}

// cancelOnPut cancels the request once the object store has committed an
// object under a final key (not a temporary): the client went away then.
type cancelOnPut struct {
	*countingObjects
	cancel context.CancelFunc
}

func (c cancelOnPut) Put(ctx context.Context, bucket, key string, r io.Reader, opts origin.PutOptions) (origin.Object, error) {
	o, err := c.countingObjects.Put(ctx, bucket, key, r, opts)
	if err == nil && !strings.HasPrefix(key, ".dora-upload/") {
		c.cancel()
	}
	return o, err
}

// Once the file is stored, a client that goes away (its request's
// context canceled) does not leave it stored without what the policy
// adds: its fileType and deleteAfterDays are recorded, its persistentOps
// queued.
func TestUploadStoredSurvivesClientGone(t *testing.T) {
	e := newEnv(t)
	future := time.Now().Add(time.Hour).Unix()
	for _, c := range []struct{ name, key, saveKey string }{{"keyed", "gone.txt", ""}, {"saveKey", "", "gone/$(fname)"}} {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h, err := pfop.NewHandler(pfop.HandlerConfig{Store: e.st, Queue: e.q, Logger: testLogger(),
				Objects: cancelOnPut{e.objs, cancel}})
			if err != nil {
				t.Fatal(err)
			}
			p := map[string]any{"scope": "photos", "deadline": future, "deleteAfterDays": 2, "fileType": 1, "persistentOps": "upper/p"}
			if c.saveKey != "" {
				p["saveKey"] = c.saveKey
			}
			var buf bytes.Buffer
			mw := multipart.NewWriter(&buf)
			mw.WriteField("token", uploadToken(alice, p))
			if c.key != "" {
				mw.WriteField("key", c.key)
			}
			fw, _ := mw.CreateFormFile("file", "g.txt")
			fw.Write([]byte("client gone"))
			mw.Close()
			req := httptest.NewRequest(http.MethodPost, "/", &buf).WithContext(ctx)
			req.Header.Set("Content-Type", mw.FormDataContentType())
			w := httptest.NewRecorder()
			h.Wrap(http.NotFoundHandler()).ServeHTTP(w, req)
			var v map[string]any
			json.Unmarshal(w.Body.Bytes(), &v)
			key := c.key
			if key == "" {
				key = "gone/g.txt"
			}
			if w.Code != 200 || v["key"] != key || v["persistentId"] == nil {
				t.Fatalf("upload: %d %v", w.Code, v)
			}
			if status, st := e.stat("photos", key); status != 200 || st["type"] != float64(1) || st["expiration"] == nil {
				t.Fatalf("stat %d %v: stored without the policy's fileType and deleteAfterDays", status, st)
			}
		})
	}
}

// persistentOps are planned against the key before anything is stored:
// a client's key when it names one, and a saveKey's expansion before the
// temporary is moved there, so that a job that cannot run on that key
// (its saveas query too long) is 400 with nothing stored, not a 503 after
// the file was stored.
func TestUploadSaveKeyPersistentOpsPlanned(t *testing.T) {
	e := newEnv(t)
	future := time.Now().Add(time.Hour).Unix()
	// 990 bytes: its default result key (key_<hash>) stays under 1024
	// bytes, and its saveas with a 700-byte fop is past the 2048 of a query.
	long := strings.Repeat(strings.Repeat("k", 197)+"/", 4) + strings.Repeat("k", 198)
	ops := "upper/" + strings.Repeat("a", 700)
	keyed := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "persistentOps": ops})
	if status, v := e.formUpload(keyed, &long, nil, "f", []byte("data")); status != 400 {
		t.Fatalf("client key: %d %v, want 400", status, v)

	}
	sk := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "persistentOps": ops, "saveKey": "$(x:k)"})
	if status, v := e.formUpload(sk, nil, map[string]string{"x:k": long}, "f", []byte("data")); status != 400 {
		t.Fatalf("saveKey: %d %v, want 400", status, v)

	}
	if ks := e.keys("photos"); len(ks) != 0 {
		t.Fatalf("stored %q", ks)
	}
}
