package qiniusdk

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/qiniu/go-sdk/v7/storage"
)

// TestFormUpload: storage.FormUploader's Put, PutFile and PutWithoutKey
// with upload tokens scoped to a bucket and to bucket:key, returnBody
// magic variables, insertOnly and persistentOps.
func TestFormUpload(t *testing.T) {
	ctx := context.Background()
	up := storage.NewFormUploader(&env.cfg)

	t.Run("PutReturnBody", func(t *testing.T) {
		data := []byte("hello from the qiniu sdk\n")
		tok := upToken(storage.PutPolicy{
			Scope:      pubBucket,
			ReturnBody: `{"key":"$(key)","hash":"$(etag)","fsize":$(fsize),"bucket":"$(bucket)","mime":"$(mimeType)","fname":"$(fname)","who":"$(x:who)"}`,
		})
		var ret struct {
			Key, Hash, Bucket, Mime, Fname, Who string
			Fsize                               int64
		}
		extra := &storage.PutExtra{Params: map[string]string{"x:who": "alice"}, MimeType: "text/plain"}
		if err := up.Put(ctx, &ret, tok, "form/hello.txt", bytes.NewReader(data), int64(len(data)), extra); err != nil {
			t.Fatalf("Put: %v", err)
		}
		if ret.Key != "form/hello.txt" || ret.Hash != etag(data) || ret.Fsize != int64(len(data)) || ret.Bucket != pubBucket ||
			ret.Mime != "text/plain" || ret.Who != "alice" {
			t.Fatalf("returnBody: %+v", ret)
		}
		mustRead(t, pubBucket, "form/hello.txt", data)

		// A bucket-only scope is insert-only: other content is 614, the
		// same content (a retried upload) succeeds.
		var pr storage.PutRet
		other := []byte("other content")
		err := up.Put(ctx, &pr, tok, "form/hello.txt", bytes.NewReader(other), int64(len(other)), nil)
		if codeOf(err) != 614 {
			t.Fatalf("Put over an existing key with a bucket scope: %v (code %d), want 614", err, codeOf(err))
		}
		if err := up.Put(ctx, &pr, tok, "form/hello.txt", bytes.NewReader(data), int64(len(data)), nil); err != nil || pr.Hash != etag(data) {
			t.Fatalf("Put of the same content again: %v %+v", err, pr)
		}
		mustRead(t, pubBucket, "form/hello.txt", data)
	})

	t.Run("PutFileKeyScope", func(t *testing.T) {
		dir := t.TempDir()
		first := filepath.Join(dir, "v1.txt")
		second := filepath.Join(dir, "v2.txt")
		os.WriteFile(first, []byte("version one\n"), 0o644)
		os.WriteFile(second, []byte("version two\n"), 0o644)
		rb := upToken(storage.PutPolicy{Scope: pubBucket + ":form/file.txt", ReturnBody: `{"key":"$(key)","hash":"$(etag)","fname":"$(fname)"}`})
		var named struct{ Key, Hash, Fname string }
		if err := up.PutFile(ctx, &named, rb, "form/file.txt", first, nil); err != nil {
			t.Fatalf("PutFile: %v", err)
		}
		if named.Key != "form/file.txt" || named.Hash != etag([]byte("version one\n")) || named.Fname != "v1.txt" {
			t.Fatalf("PutFile reply: %+v", named)
		}
		tok := upToken(storage.PutPolicy{Scope: pubBucket + ":form/file.txt"})
		var ret storage.PutRet
		// bucket:key overwrites.
		if err := up.PutFile(ctx, &ret, tok, "form/file.txt", second, nil); err != nil {
			t.Fatalf("PutFile over it (bucket:key scope): %v", err)
		}
		mustRead(t, pubBucket, "form/file.txt", []byte("version two\n"))
		// Another key than the scope's: 403.
		err := up.PutFile(ctx, &ret, tok, "form/elsewhere.txt", first, nil)
		if codeOf(err) != http.StatusForbidden {
			t.Fatalf("PutFile outside the scope: %v (code %d), want 403", err, codeOf(err))
		}
		// Another account's bucket: 403.
		if err := up.PutFile(ctx, &ret, upToken(storage.PutPolicy{Scope: foreignBucket}), "x.txt", first, nil); codeOf(err) != http.StatusForbidden {
			t.Fatalf("PutFile into another account's bucket: %v (code %d), want 403", err, codeOf(err))
		}
		// insertOnly with a bucket:key scope: 614.
		ins := upToken(storage.PutPolicy{Scope: pubBucket + ":form/file.txt", InsertOnly: 1})
		if err := up.PutFile(ctx, &ret, ins, "form/file.txt", first, nil); codeOf(err) != 614 {
			t.Fatalf("PutFile with insertOnly over an existing key: %v (code %d), want 614", err, codeOf(err))
		}
		mustRead(t, pubBucket, "form/file.txt", []byte("version two\n"))
	})

	t.Run("PutWithoutKey", func(t *testing.T) {
		data := []byte("stored under its etag")
		var ret storage.PutRet
		if err := up.PutWithoutKey(ctx, &ret, upToken(storage.PutPolicy{Scope: pubBucket}), bytes.NewReader(data), int64(len(data)), nil); err != nil {
			t.Fatalf("PutWithoutKey: %v", err)
		}
		if ret.Key != etag(data) || ret.Hash != etag(data) {
			t.Fatalf("PutWithoutKey reply: %+v, want key and hash %s", ret, etag(data))
		}
		mustRead(t, pubBucket, ret.Key, data)
	})

	t.Run("PersistentOps", func(t *testing.T) {
		data := []byte("processed after upload\n")
		tok := upToken(storage.PutPolicy{Scope: pubBucket + ":form/ops.txt", PersistentOps: "qhash/md5"})
		var ret storage.PutRet
		if err := up.Put(ctx, &ret, tok, "form/ops.txt", bytes.NewReader(data), int64(len(data)), nil); err != nil {
			t.Fatalf("Put with persistentOps: %v", err)
		}
		if ret.PersistentID == "" {
			t.Fatalf("no persistentId in %+v", ret)
		}
		st := waitPfop(t, ret.PersistentID)
		if len(st.Items) != 1 || st.Items[0].Code != 0 || st.Items[0].Key == "" {
			t.Fatalf("prefop: %+v", st)
		}
		checkMD5Result(t, pubBucket, st.Items[0].Key, data)
	})
}

// checkMD5Result reads a qhash/md5 result saved at bucket/key.
func checkMD5Result(t *testing.T, bucket, key string, input []byte) {
	t.Helper()
	code, body, _ := download(t, storage.MakePublicURL(domain(bucket), key))
	var h struct {
		Hash  string `json:"hash"`
		Fsize int64  `json:"fsize"`
	}
	sum := md5.Sum(input)
	if code != http.StatusOK || json.Unmarshal(body, &h) != nil || h.Hash != hex.EncodeToString(sum[:]) || h.Fsize != int64(len(input)) {
		t.Fatalf("qhash/md5 result at %s/%s: %d %q", bucket, key, code, body)
	}
}

// TestResumeUpload: storage.ResumeUploader (v1: mkblk, bput, mkfile) and
// storage.ResumeUploaderV2 (multipart uploads) on a file of several
// blocks, with custom variables in returnBody.
func TestResumeUpload(t *testing.T) {
	ctx := context.Background()
	data := content(9<<20+12345, 1) // three 4 MiB blocks, the last one short
	ret := func() *struct{ Key, Hash, Who, Mime string } { return &struct{ Key, Hash, Who, Mime string }{} }
	rb := `{"key":"$(key)","hash":"$(etag)","who":"$(x:who)","mime":"$(mimeType)"}`

	t.Run("V1", func(t *testing.T) {
		tok := upToken(storage.PutPolicy{Scope: pubBucket + ":resume/v1.bin", ReturnBody: rb})
		r := ret()
		extra := &storage.RputExtra{Params: map[string]string{"x:who": "bob"}, MimeType: "application/x-test", ChunkSize: 1 << 20}
		if err := storage.NewResumeUploader(&env.cfg).Put(ctx, r, tok, "resume/v1.bin", bytes.NewReader(data), int64(len(data)), extra); err != nil {
			t.Fatalf("ResumeUploader.Put: %v", err)
		}
		if r.Key != "resume/v1.bin" || r.Hash != etag(data) || r.Who != "bob" || r.Mime != "application/x-test" {
			t.Fatalf("reply: %+v, want hash %s", r, etag(data))
		}
		mustRead(t, pubBucket, "resume/v1.bin", data)
	})

	t.Run("V1WithoutSize", func(t *testing.T) {
		small := content(5<<20, 2)
		var r storage.PutRet
		tok := upToken(storage.PutPolicy{Scope: pubBucket})
		if err := storage.NewResumeUploader(&env.cfg).PutWithoutSize(ctx, &r, tok, "resume/nosize.bin", bytes.NewReader(small), nil); err != nil {
			t.Fatalf("ResumeUploader.PutWithoutSize: %v", err)
		}
		if r.Hash != etag(small) {
			t.Fatalf("reply %+v, want hash %s", r, etag(small))
		}
		mustRead(t, pubBucket, "resume/nosize.bin", small)
	})

	t.Run("V2", func(t *testing.T) {
		tok := upToken(storage.PutPolicy{Scope: pubBucket + ":resume/v2.bin", ReturnBody: rb})
		r := ret()
		extra := &storage.RputV2Extra{CustomVars: map[string]string{"x:who": "carol"}, MimeType: "application/x-test2", PartSize: 4 << 20}
		if err := storage.NewResumeUploaderV2(&env.cfg).Put(ctx, r, tok, "resume/v2.bin", bytes.NewReader(data), int64(len(data)), extra); err != nil {
			t.Fatalf("ResumeUploaderV2.Put: %v", err)
		}
		if r.Key != "resume/v2.bin" || r.Hash != etag(data) || r.Who != "carol" || r.Mime != "application/x-test2" {
			t.Fatalf("reply: %+v, want hash %s", r, etag(data))
		}
		mustRead(t, pubBucket, "resume/v2.bin", data)
	})

	t.Run("V2File", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "v2file.bin")
		small := content(3<<20, 3)
		os.WriteFile(path, small, 0o644)
		var r storage.PutRet
		tok := upToken(storage.PutPolicy{Scope: privBucket})
		if err := storage.NewResumeUploaderV2(&env.cfg).PutFile(ctx, &r, tok, "resume/v2file.bin", path, &storage.RputV2Extra{PartSize: 1 << 20}); err != nil {
			t.Fatalf("ResumeUploaderV2.PutFile: %v", err)
		}
		if r.Key != "resume/v2file.bin" || r.Hash != etag(small) {
			t.Fatalf("reply %+v, want hash %s", r, etag(small))
		}
		mustRead(t, privBucket, "resume/v2file.bin", small)
	})
}

// TestRegionQuery: a Config without a region finds the upload hosts with
// the SDK's region query at the admin address (storage.GetRegion asks uc
// /v2/query; the uploaders of v7.27 ask /v4/query, v7.11's /v2/query).
func TestRegionQuery(t *testing.T) {
	r, err := storage.GetRegion(env.mac.AccessKey, pubBucket)
	if err != nil {
		t.Fatalf("GetRegion: %v", err)
	}
	if len(r.SrcUpHosts) == 0 || r.SrcUpHosts[0] != "http://"+env.adminHost && r.SrcUpHosts[0] != env.adminHost {
		t.Fatalf("region query: up hosts %v, want the admin address %s", r.SrcUpHosts, env.adminHost)
	}
	cfg := &storage.Config{UseHTTPS: false}
	data := []byte("uploaded to the queried host\n")
	var ret storage.PutRet
	tok := upToken(storage.PutPolicy{Scope: pubBucket + ":query/a.txt"})
	if err := storage.NewFormUploader(cfg).Put(context.Background(), &ret, tok, "query/a.txt", bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatalf("FormUploader.Put through the region query: %v", err)
	}
	mustRead(t, pubBucket, "query/a.txt", data)
	big := content(5<<20, 4)
	if err := storage.NewResumeUploaderV2(cfg).Put(context.Background(), &ret, tok, "query/a.txt", bytes.NewReader(big), int64(len(big)), nil); err != nil {
		t.Fatalf("ResumeUploaderV2.Put through the region query: %v", err)
	}
	mustRead(t, pubBucket, "query/a.txt", big)
}

// TestBase64Upload: storage.Base64Uploader (POST /putb64/<fsize>/key/...).
func TestBase64Upload(t *testing.T) {
	data := []byte("uploaded as base64\n")
	var ret struct{ Key, Hash, Who string }
	tok := upToken(storage.PutPolicy{Scope: pubBucket, ReturnBody: `{"key":"$(key)","hash":"$(etag)","who":"$(x:who)"}`})
	b64 := []byte(base64.StdEncoding.EncodeToString(data))
	extra := &storage.Base64PutExtra{Params: map[string]string{"x:who": "dave"}, MimeType: "text/plain"}
	if err := storage.NewBase64Uploader(&env.cfg).Put(context.Background(), &ret, tok, "b64/a.txt", b64, extra); err != nil {
		t.Fatalf("Base64Uploader.Put: %v", err)
	}
	if ret.Key != "b64/a.txt" || ret.Hash != etag(data) || ret.Who != "dave" {
		t.Fatalf("reply %+v", ret)
	}
	mustRead(t, pubBucket, "b64/a.txt", data)
}
