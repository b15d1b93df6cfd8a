package pfop_test

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/pfop"
)

// qiniuETag is Qiniu's etag as its docs define it, written out here
// independently of the server's: the file in 4 MiB blocks;
// urlsafe_b64(0x16 + sha1(file)) for at most one block, else
// urlsafe_b64(0x96 + sha1(sha1(block1) + sha1(block2) + ...)).
func qiniuETag(data []byte) string {
	const blk = 4 << 20
	if len(data) <= blk {
		s := sha1.Sum(data)
		return base64.URLEncoding.EncodeToString(append([]byte{0x16}, s[:]...))
	}
	var all []byte
	for off := 0; off < len(data); off += blk {
		s := sha1.Sum(data[off:min(off+blk, len(data))])
		all = append(all, s[:]...)
	}
	s := sha1.Sum(all)
	return base64.URLEncoding.EncodeToString(append([]byte{0x96}, s[:]...))
}

func b64(s string) string { return base64.URLEncoding.EncodeToString([]byte(s)) }

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// upCall sends an "Authorization: UpToken" request as the SDKs do.
func (e *env) upCall(method, pathQuery, token, ctype string, body []byte, hdr map[string]string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.api.URL+pathQuery, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "UpToken "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	status, v, _ := e.do(req)
	return status, v
}

// putBlocksV1 uploads data as the v1 SDKs do: 4 MiB blocks, each started
// with mkblk and continued with bput in chunks, and returns the blocks'
// last ctxs. It checks each reply's crc32 and offset as the SDKs do.
func (e *env) putBlocksV1(token string, data []byte, chunk int) []string {
	e.t.Helper()
	var ctxs []string
	for off := 0; off < len(data); off += pfop.BlockSize {
		block := data[off:min(off+pfop.BlockSize, len(data))]
		var ret map[string]any
		for c := 0; c < len(block); c += chunk {
			piece := block[c:min(c+chunk, len(block))]
			var status int
			if c == 0 {
				status, ret = e.upCall("POST", "/mkblk/"+strconv.Itoa(len(block)), token, "application/octet-stream", piece, nil)
			} else {
				host, _ := ret["host"].(string)
				if !strings.HasPrefix(host, "http://") {
					e.t.Fatalf("mkblk host %q", host)
				}
				status, ret = e.upCall("POST", "/bput/"+ret["ctx"].(string)+"/"+strconv.Itoa(int(ret["offset"].(float64))), token, "application/octet-stream", piece, nil)
			}
			if status != 200 {
				e.t.Fatalf("block at %d, chunk at %d: %d %v", off, c, status, ret)
			}
			if uint32(ret["crc32"].(float64)) != crc32.ChecksumIEEE(piece) || int(ret["offset"].(float64)) != c+len(piece) {
				e.t.Fatalf("chunk reply %v: want crc32 %d, offset %d", ret, crc32.ChecksumIEEE(piece), c+len(piece))
			}
		}
		ctxs = append(ctxs, ret["ctx"].(string))
	}
	return ctxs
}

func mkfilePath(fsize int, key *string, mimeType string, vars map[string]string) string {
	p := "/mkfile/" + strconv.Itoa(fsize)
	if mimeType != "" {
		p += "/mimeType/" + b64(mimeType)
	}
	if key != nil {
		p += "/key/" + b64(*key)
	}
	for k, v := range vars {
		p += "/" + k + "/" + b64(v)
	}
	return p
}

// A 9 MiB file through resumable upload v1, as the SDKs send it: three
// blocks in 1 MiB chunks, then mkfile; the etag is Qiniu's, the policy's
// returnBody and persistentOps apply as for form uploads.
func TestResumableUploadV1(t *testing.T) {
	e := newEnv(t)
	e.startWorker(e.q, nil)
	data := randomBytes(9<<20, 1)
	future := time.Now().Add(time.Hour).Unix()
	tok := uploadToken(alice, map[string]any{
		"scope": "photos:big.bin", "deadline": future, "persistentOps": "upper",
		"returnBody": `{"key":"$(key)","hash":"$(etag)","fsize":$(fsize),"mime":"$(mimeType)","v":"$(x:foo)","pid":"$(persistentId)"}`,
	})
	ctxs := e.putBlocksV1(tok, data, 1<<20)
	if len(ctxs) != 3 {
		t.Fatalf("%d blocks", len(ctxs))
	}
	status, v := e.upCall("POST", mkfilePath(len(data), strp("big.bin"), "application/x-test", map[string]string{"x:foo": "bar"}),
		tok, "text/plain", []byte(strings.Join(ctxs, ",")), nil)
	if status != 200 {
		t.Fatalf("mkfile: %d %v", status, v)
	}
	if v["hash"] != qiniuETag(data) || v["key"] != "big.bin" || v["fsize"] != float64(len(data)) || v["mime"] != "application/x-test" || v["v"] != "bar" {
		t.Fatalf("mkfile reply %v; want etag %s", v, qiniuETag(data))
	}
	got, ok := e.read("photos", "big.bin")
	if !ok || got != string(data) {
		t.Fatalf("stored object differs (%d bytes)", len(got))
	}
	// persistentOps ran on the uploaded object.
	pid, _ := v["pid"].(string)
	if pid == "" {
		t.Fatal("no persistentId")
	}
	if s, _ := e.waitFinal(pid); s.Code != pfop.CodeSuccess {
		t.Fatalf("persistentOps job = %+v", s)
	}
	// The blocks are gone once used: their ctxs no longer work.
	if status, v := e.upCall("POST", mkfilePath(len(data), strp("big.bin"), "", nil), tok, "text/plain", []byte(strings.Join(ctxs, ",")), nil); status != pfop.StatusBadCtx {
		t.Fatalf("reusing ctxs: %d %v", status, v)
	}
}

// The upload token's policy applies to mkfile exactly as to form uploads.
func TestResumableUploadV1Policy(t *testing.T) {
	e := newEnv(t)
	e.object("photos", "exists.txt", "old")
	future := time.Now().Add(time.Hour).Unix()
	data := []byte(strings.Repeat("plain text line\n", 100))
	tok := func(p map[string]any) string {
		if _, ok := p["deadline"]; !ok {
			p["deadline"] = future
		}
		return uploadToken(alice, p)
	}
	cases := []struct {
		name   string
		token  string
		key    *string
		mime   string
		want   int
		stored string // key expected on success
	}{
		{"scope bucket, new key", tok(map[string]any{"scope": "photos"}), strp("new.txt"), "", 200, "new.txt"},
		{"no key: the etag", tok(map[string]any{"scope": "photos"}), nil, "", 200, qiniuETag(data)},
		{"insert only (scope bucket)", tok(map[string]any{"scope": "photos"}), strp("exists.txt"), "", pfop.StatusFileExists, ""},
		{"insertOnly flag", tok(map[string]any{"scope": "photos:exists.txt", "insertOnly": 1}), strp("exists.txt"), "", pfop.StatusFileExists, ""},
		{"overwrite allowed", tok(map[string]any{"scope": "photos:exists.txt"}), strp("exists.txt"), "", 200, "exists.txt"},
		{"key outside scope", tok(map[string]any{"scope": "photos:a.txt"}), strp("b.txt"), "", 403, ""},
		{"fsizeLimit", tok(map[string]any{"scope": "photos", "fsizeLimit": len(data) - 1}), strp("big.txt"), "", 413, ""},
		{"mimeLimit", tok(map[string]any{"scope": "photos", "mimeLimit": "image/*"}), strp("m.txt"), "", 403, ""},
		{"mimeLimit by declared type", tok(map[string]any{"scope": "photos", "mimeLimit": "!application/x-bad"}), strp("m2.txt"), "application/x-bad", 403, ""},
		{"another's bucket", tok(map[string]any{"scope": "bobs"}), strp("x.txt"), "", 403, ""},
		{"expired", tok(map[string]any{"scope": "photos", "deadline": time.Now().Add(-time.Minute).Unix()}), strp("late.txt"), "", 401, ""},
	}
	blocksTok := tok(map[string]any{"scope": "photos"})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctxs := e.putBlocksV1(blocksTok, data, 1000)
			status, v := e.upCall("POST", mkfilePath(len(data), c.key, c.mime, nil), c.token, "text/plain", []byte(strings.Join(ctxs, ",")), nil)
			if status != c.want {
				t.Fatalf("mkfile: %d %v, want %d", status, v, c.want)
			}
			if c.stored != "" {
				if got, ok := e.read("photos", c.stored); !ok || got != string(data) || v["key"] != c.stored {
					t.Fatalf("stored %q: %v %v", c.stored, ok, v)
				}
			}
		})
	}
	if got, _ := e.read("photos", "big.txt"); got != "" {
		t.Fatal("an upload over fsizeLimit was stored")
	}

	// Wire-level refusals.
	ctxs := e.putBlocksV1(blocksTok, data, 1000)
	for name, c := range map[string]struct {
		path, token, body string
		want              int
	}{
		"no UpToken":       {mkfilePath(len(data), strp("z.txt"), "", nil), "", strings.Join(ctxs, ","), 401},
		"fsize mismatch":   {mkfilePath(len(data)+1, strp("z.txt"), "", nil), blocksTok, strings.Join(ctxs, ","), 400},
		"unknown ctx":      {mkfilePath(len(data), strp("z.txt"), "", nil), blocksTok, strings.Repeat("ab", 16), pfop.StatusBadCtx},
		"path traversal":   {mkfilePath(len(data), strp("z.txt"), "", nil), blocksTok, "../../etc", pfop.StatusBadCtx},
		"bad base64 value": {"/mkfile/1/key/@@@", blocksTok, ctxs[0], 400},
		"odd parameters":   {"/mkfile/1/key", blocksTok, ctxs[0], 400},
	} {
		if status, v := e.upCall("POST", c.path, c.token, "text/plain", []byte(c.body), nil); status != c.want {
			t.Errorf("%s: %d %v, want %d", name, status, v, c.want)
		}
	}
	// Blocks are bound to the account whose token made them.
	bobTok := uploadToken(bob, map[string]any{"scope": "bobs", "deadline": future})
	if status, v := e.upCall("POST", mkfilePath(len(data), strp("stolen.txt"), "", nil), bobTok, "text/plain", []byte(strings.Join(ctxs, ",")), nil); status != pfop.StatusBadCtx {
		t.Fatalf("another account's ctxs: %d %v", status, v)
	}
	// A chunk may not overflow its block; mkblk bounds the block size.
	if status, v := e.upCall("POST", "/mkblk/10", blocksTok, "application/octet-stream", make([]byte, 11), nil); status != 400 {
		t.Fatalf("overflowing chunk: %d %v", status, v)
	}
	if status, v := e.upCall("POST", fmt.Sprintf("/mkblk/%d", pfop.BlockSize+1), blocksTok, "application/octet-stream", []byte("x"), nil); status != 400 {
		t.Fatalf("block over 4 MiB: %d %v", status, v)
	}
}

// partsV2 uploads data in parts of partSize and returns the parts list of
// the complete call.
func (e *env) partsV2(base, token string, data []byte, partSize int) []map[string]any {
	e.t.Helper()
	var parts []map[string]any
	for n, off := 1, 0; off < len(data); n, off = n+1, off+partSize {
		p := data[off:min(off+partSize, len(data))]
		sum := md5.Sum(p)
		status, v := e.upCall("PUT", fmt.Sprintf("%s/%d", base, n), token, "application/octet-stream", p, map[string]string{"Content-MD5": hex.EncodeToString(sum[:])})
		if status != 200 || v["md5"] != hex.EncodeToString(sum[:]) || v["etag"] == "" {
			e.t.Fatalf("part %d: %d %v", n, status, v)
		}
		parts = append(parts, map[string]any{"partNumber": n, "etag": v["etag"]})
	}
	return parts
}

// A 9 MiB file through resumable upload v2 (initiate, parts, list,
// complete), as the SDKs send it; abort; expiry.
func TestResumableUploadV2(t *testing.T) {
	e := newEnv(t)
	e.startWorker(e.q, nil)
	data := randomBytes(9<<20, 2)
	future := time.Now().Add(time.Hour).Unix()
	tok := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "persistentOps": "upper",
		"returnBody": `{"key":"$(key)","hash":"$(etag)","fsize":$(fsize),"v":"$(x:foo)","fname":"$(fname)","pid":"$(persistentId)"}`})
	objBase := "/buckets/photos/objects/" + b64("dir/big.bin") + "/uploads"
	status, v := e.upCall("POST", objBase, tok, "", nil, nil)
	id, _ := v["uploadId"].(string)
	if status != 200 || id == "" || v["expireAt"].(float64) < float64(time.Now().Unix()) {
		t.Fatalf("initiate: %d %v", status, v)
	}
	base := objBase + "/" + id
	parts := e.partsV2(base, tok, data, 4<<20)

	// A part whose Content-MD5 does not match is refused and not kept.
	if status, v := e.upCall("PUT", base+"/9", tok, "application/octet-stream", []byte("xyz"), map[string]string{"Content-MD5": strings.Repeat("0", 32)}); status != 400 {
		t.Fatalf("bad Content-MD5: %d %v", status, v)
	}
	status, v = e.upCall("GET", base, tok, "", nil, nil)
	if ps, _ := v["parts"].([]any); status != 200 || len(ps) != 3 || ps[2].(map[string]any)["size"] != float64(1<<20) {
		t.Fatalf("list parts: %d %v", status, v)
	}
	body, _ := json.Marshal(map[string]any{"parts": parts, "fname": "big.bin", "customVars": map[string]string{"x:foo": "bar"}})
	// Parts out of order, or an etag that is not the part's: 400.
	bad, _ := json.Marshal(map[string]any{"parts": []any{parts[1], parts[0], parts[2]}})
	if status, v := e.upCall("POST", base, tok, "application/json", bad, nil); status != 400 {
		t.Fatalf("parts out of order: %d %v", status, v)
	}
	bad, _ = json.Marshal(map[string]any{"parts": []any{map[string]any{"partNumber": 1, "etag": "nope"}}})
	if status, v := e.upCall("POST", base, tok, "application/json", bad, nil); status != 400 {
		t.Fatalf("wrong etag: %d %v", status, v)
	}
	status, v = e.upCall("POST", base, tok, "application/json", body, nil)
	if status != 200 || v["hash"] != qiniuETag(data) || v["key"] != "dir/big.bin" || v["fsize"] != float64(len(data)) || v["v"] != "bar" || v["fname"] != "big.bin" {
		t.Fatalf("complete: %d %v; want etag %s", status, v, qiniuETag(data))
	}
	if got, ok := e.read("photos", "dir/big.bin"); !ok || got != string(data) {
		t.Fatal("stored object differs")
	}
	if s, _ := e.waitFinal(v["pid"].(string)); s.Code != pfop.CodeSuccess {
		t.Fatalf("persistentOps job = %+v", s)
	}
	// Completed: the upload id is gone.
	if status, v := e.upCall("GET", base, tok, "", nil, nil); status != pfop.StatusNoUpload {
		t.Fatalf("list after complete: %d %v", status, v)
	}
	// scope "photos" is insert-only: a second upload to the same key is 614.
	status, v = e.upCall("POST", objBase, tok, "", nil, nil)
	base2 := objBase + "/" + v["uploadId"].(string)
	body2, _ := json.Marshal(map[string]any{"parts": e.partsV2(base2, tok, data[:100], 4<<20)})
	if status, v := e.upCall("POST", base2, tok, "application/json", body2, nil); status != pfop.StatusFileExists {
		t.Fatalf("overwrite with an insert-only scope: %d %v", status, v)
	}

	// Keyless (~): the key is the etag.
	status, v = e.upCall("POST", "/buckets/photos/objects/~/uploads", tok, "", nil, nil)
	base3 := "/buckets/photos/objects/~/uploads/" + v["uploadId"].(string)
	body3, _ := json.Marshal(map[string]any{"parts": e.partsV2(base3, tok, data[:5000], 1000)})
	if status, v := e.upCall("POST", base3, tok, "application/json", body3, nil); status != 200 || v["key"] != qiniuETag(data[:5000]) {
		t.Fatalf("keyless complete: %d %v", status, v)
	}

	// Refusals: a bucket outside the token's scope, another account's
	// upload id, a token the key does not fit.
	if status, v := e.upCall("POST", "/buckets/results/objects/"+b64("x")+"/uploads", tok, "", nil, nil); status != 403 {
		t.Fatalf("bucket outside scope: %d %v", status, v)
	}
	status, v = e.upCall("POST", objBase, tok, "", nil, nil)
	base4 := objBase + "/" + v["uploadId"].(string)
	bobTok := uploadToken(bob, map[string]any{"scope": "bobs", "deadline": future})
	if status, v := e.upCall("PUT", strings.Replace(base4, "/photos/", "/bobs/", 1)+"/1", bobTok, "application/octet-stream", []byte("x"), nil); status != pfop.StatusNoUpload {
		t.Fatalf("another account's upload: %d %v", status, v)
	}
	keyTok := uploadToken(alice, map[string]any{"scope": "photos:only.txt", "deadline": future})
	if status, v := e.upCall("POST", "/buckets/photos/objects/"+b64("other.txt")+"/uploads", keyTok, "", nil, nil); status != 403 {
		t.Fatalf("key outside scope: %d %v", status, v)
	}

	// Abort drops the parts.
	e.partsV2(base4, tok, data[:10], 10)
	if status, v := e.upCall("DELETE", base4, tok, "", nil, nil); status != 200 {
		t.Fatalf("abort: %d %v", status, v)
	}
	if status, v := e.upCall("GET", base4, tok, "", nil, nil); status != pfop.StatusNoUpload {
		t.Fatalf("list after abort: %d %v", status, v)
	}

	// Unfinished uploads expire: swept after UploadExpiry.
	status, v = e.upCall("POST", objBase, tok, "", nil, nil)
	base5 := objBase + "/" + v["uploadId"].(string)
	e.partsV2(base5, tok, data[:10], 10)
	if n, err := e.h.SweepUploads(time.Now()); err != nil || n != 0 {
		t.Fatalf("sweep now: %d %v", n, err)
	}
	if n, err := e.h.SweepUploads(time.Now().Add(pfop.DefaultUploadExpiry + time.Minute)); err != nil || n < 2 {
		t.Fatalf("sweep after expiry: %d %v (want base2's and base5's uploads)", n, err)
	}
	if status, v := e.upCall("PUT", base5+"/2", tok, "application/octet-stream", []byte("x"), nil); status != pfop.StatusNoUpload {
		t.Fatalf("part after expiry: %d %v", status, v)
	}
}
