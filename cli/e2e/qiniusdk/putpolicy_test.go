package qiniusdk

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qiniu/go-sdk/v7/auth"
	"github.com/qiniu/go-sdk/v7/storage"
)

// TestPutPolicySaveKey: storage.PutPolicy's SaveKey, ForceSaveKey,
// DeleteAfterDays and FileType through FormUploader.PutFile (the client's
// key overridden) and ResumeUploaderV2.PutWithoutKey; the key, content, type
// and expiration read back.
func TestPutPolicySaveKey(t *testing.T) {
	ctx := context.Background()
	bm := storage.NewBucketManager(env.mac, &env.cfg)
	statRaw := func(key string) map[string]any {
		t.Helper()
		// Stat's reply read whole (v7.11's FileInfo had no expiration).
		var raw map[string]any
		if err := bm.Client.CredentialedCall(ctx, env.mac, auth.TokenQiniu, &raw, "POST",
			"http://"+env.adminHost+storage.URIStat(pubBucket, key), nil); err != nil {
			t.Fatalf("stat %s: %v", key, err)
		}
		return raw
	}

	t.Run("FormForceSaveKey", func(t *testing.T) {
		data := []byte("named by the policy\n")
		tok := upToken(storage.PutPolicy{Scope: pubBucket, SaveKey: "sk/$(fprefix)-$(etag)$(ext)", ForceSaveKey: true,
			DeleteAfterDays: 1, FileType: 1})
		var ret storage.PutRet
		// PutFile sends the local file's base name as the file name:
		// $(fprefix) "orig", $(ext) ".txt". (Put sends path.Base(key) up
		// to v7.11, "Untitled" in later SDKs.)
		local := filepath.Join(t.TempDir(), "orig.txt")
		if err := os.WriteFile(local, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := storage.NewFormUploader(&env.cfg).PutFile(ctx, &ret, tok, "client/orig.txt", local, nil); err != nil {
			t.Fatalf("PutFile: %v", err)
		}
		want := "sk/orig-" + etag(data) + ".txt"
		if ret.Key != want || ret.Hash != etag(data) {
			t.Fatalf("reply %+v, want key %s", ret, want)
		}
		mustRead(t, pubBucket, want, data)
		if _, err := bm.Stat(pubBucket, "client/orig.txt"); codeOf(err) != 612 {
			t.Fatalf("the client's key was stored: %v", err)
		}
		raw := statRaw(want)
		exp, _ := raw["expiration"].(float64)
		if days := time.Until(time.Unix(int64(exp), 0)).Hours() / 24; raw["type"] != float64(1) || days < 0.9 || days > 1.1 {
			t.Fatalf("stat: %v, want type 1 and an expiration a day away", raw)
		}
	})

	t.Run("ResumeV2WithoutKey", func(t *testing.T) {
		data := content(5<<20, 9)
		tok := upToken(storage.PutPolicy{Scope: pubBucket, SaveKey: "sk/v2/$(x:who)/$(fsize)", FileType: 2})
		var ret storage.PutRet
		extra := &storage.RputV2Extra{CustomVars: map[string]string{"x:who": "dave"}, PartSize: 4 << 20}
		if err := storage.NewResumeUploaderV2(&env.cfg).PutWithoutKey(ctx, &ret, tok, bytes.NewReader(data), int64(len(data)), extra); err != nil {
			t.Fatalf("PutWithoutKey: %v", err)
		}
		if ret.Key != "sk/v2/dave/5242880" || ret.Hash != etag(data) {
			t.Fatalf("reply %+v", ret)
		}
		mustRead(t, pubBucket, ret.Key, data)
		if raw := statRaw(ret.Key); raw["type"] != float64(2) || raw["expiration"] != nil {
			t.Fatalf("stat: %v, want type 2 and no expiration", raw)
		}
	})
}
