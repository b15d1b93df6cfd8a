package qiniusdk

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/qiniu/go-sdk/v7/auth"
	"github.com/qiniu/go-sdk/v7/storage"
)

// put stores data at bucket/key with a form upload (overwriting).
func put(t *testing.T, bucket, key string, data []byte, mime string) {
	t.Helper()
	var ret storage.PutRet
	tok := upToken(storage.PutPolicy{Scope: bucket + ":" + key})
	err := storage.NewFormUploader(&env.cfg).Put(context.Background(), &ret, tok, key, bytes.NewReader(data), int64(len(data)), &storage.PutExtra{MimeType: mime})
	if err != nil || ret.Hash != etag(data) {
		t.Fatalf("put %s/%s: %v %+v", bucket, key, err, ret)
	}
}

// TestBucketManager: storage.BucketManager's object calls, each checked
// by stat, by listing or by reading the object back through the router.
func TestBucketManager(t *testing.T) {
	bm := storage.NewBucketManager(env.mac, &env.cfg)

	t.Run("Stat", func(t *testing.T) {
		data := []byte("stat me\n")
		before := time.Now().Add(-time.Minute)
		put(t, pubBucket, "bm/stat.txt", data, "text/plain")
		fi, err := bm.Stat(pubBucket, "bm/stat.txt")
		if err != nil {
			t.Fatalf("Stat: %v", err)
		}
		putTime := time.Unix(0, fi.PutTime*100)
		if fi.Fsize != int64(len(data)) || fi.Hash != etag(data) || fi.MimeType != "text/plain" || fi.Type != 0 ||
			putTime.Before(before) || putTime.After(time.Now().Add(time.Minute)) {
			t.Fatalf("Stat: %+v (putTime %s)", fi, putTime)
		}
		if _, err := bm.Stat(pubBucket, "bm/none.txt"); codeOf(err) != 612 {
			t.Fatalf("Stat of a missing key: %v (code %d), want 612", err, codeOf(err))
		}
		if _, err := bm.Stat(foreignBucket, "x"); codeOf(err) != http.StatusForbidden {
			t.Fatalf("Stat in another account's bucket: %v (code %d), want 403", err, codeOf(err))
		}
		if err := bm.Copy(pubBucket, "bm/stat.txt", foreignBucket, "stolen.txt", false); codeOf(err) != http.StatusForbidden {
			t.Fatalf("Copy into another account's bucket: %v (code %d), want 403", err, codeOf(err))
		}
		if _, err := bm.Stat("nosuchbucket", "x"); codeOf(err) != 631 {
			t.Fatalf("Stat in a missing bucket: %v (code %d), want 631", err, codeOf(err))
		}
	})

	t.Run("CopyMoveDelete", func(t *testing.T) {
		a, b := []byte("object a\n"), []byte("object b\n")
		put(t, pubBucket, "bm/a.txt", a, "text/plain")
		put(t, pubBucket, "bm/b.txt", b, "text/plain")
		if err := bm.Copy(pubBucket, "bm/a.txt", pubBucket, "bm/b.txt", false); codeOf(err) != 614 {
			t.Fatalf("Copy onto an existing key without force: %v (code %d), want 614", err, codeOf(err))
		}
		mustRead(t, pubBucket, "bm/b.txt", b)
		if err := bm.Copy(pubBucket, "bm/a.txt", pubBucket, "bm/b.txt", true); err != nil {
			t.Fatalf("Copy with force: %v", err)
		}
		mustRead(t, pubBucket, "bm/b.txt", a)
		if err := bm.Copy(pubBucket, "bm/a.txt", otherBucket, "copied/a.txt", false); err != nil {
			t.Fatalf("Copy to another bucket: %v", err)
		}
		mustRead(t, otherBucket, "copied/a.txt", a)

		if err := bm.Move(pubBucket, "bm/b.txt", privBucket, "moved/b.txt", false); err != nil {
			t.Fatalf("Move: %v", err)
		}
		mustRead(t, privBucket, "moved/b.txt", a)
		if _, err := bm.Stat(pubBucket, "bm/b.txt"); codeOf(err) != 612 {
			t.Fatalf("Stat of a moved object's old key: %v (code %d), want 612", err, codeOf(err))
		}

		if err := bm.Delete(pubBucket, "bm/a.txt"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if code, _, _ := download(t, storage.MakePublicURL(domain(pubBucket), "bm/a.txt")); code != http.StatusNotFound {
			t.Fatalf("GET of a deleted object: %d, want 404", code)
		}
		if err := bm.Delete(pubBucket, "bm/a.txt"); codeOf(err) != 612 {
			t.Fatalf("Delete of a missing key: %v (code %d), want 612", err, codeOf(err))
		}
	})

	t.Run("ChangeMimeTypeLifecycle", func(t *testing.T) {
		data := []byte(`{"a":1}`)
		put(t, pubBucket, "bm/meta.json", data, "text/plain")
		if err := bm.ChangeMime(pubBucket, "bm/meta.json", "application/json"); err != nil {
			t.Fatalf("ChangeMime: %v", err)
		}
		if err := bm.ChangeType(pubBucket, "bm/meta.json", 1); err != nil {
			t.Fatalf("ChangeType: %v", err)
		}
		if err := bm.DeleteAfterDays(pubBucket, "bm/meta.json", 7); err != nil {
			t.Fatalf("DeleteAfterDays: %v", err)
		}
		fi, err := bm.Stat(pubBucket, "bm/meta.json")
		if err != nil || fi.MimeType != "application/json" || fi.Type != 1 || fi.Hash != etag(data) {
			t.Fatalf("Stat after ChangeMime/ChangeType: %v %+v", err, fi)
		}
		// Stat's reply read whole, with the SDK's own client and
		// signature (v7.11's FileInfo had no expiration).
		var raw map[string]any
		err = bm.Client.CredentialedCall(context.Background(), env.mac, auth.TokenQiniu, &raw, "POST",
			"http://"+env.adminHost+storage.URIStat(pubBucket, "bm/meta.json"), nil)
		exp, _ := raw["expiration"].(float64)
		if days := time.Until(time.Unix(int64(exp), 0)).Hours() / 24; err != nil || days < 6.9 || days > 7.1 {
			t.Fatalf("stat after DeleteAfterDays(7): %v %v", err, raw)
		}
		code, got, h := download(t, storage.MakePublicURL(domain(pubBucket), "bm/meta.json"))
		if code != http.StatusOK || !bytes.Equal(got, data) || h.Get("Content-Type") != "application/json" {
			t.Fatalf("GET after ChangeMime: %d %q %q", code, got, h.Get("Content-Type"))
		}
		if err := bm.ChangeMime(pubBucket, "bm/none.json", "application/json"); codeOf(err) != 612 {
			t.Fatalf("ChangeMime of a missing key: %v (code %d), want 612", err, codeOf(err))
		}
	})

	t.Run("ListFiles", func(t *testing.T) {
		keys := []string{"ls/a.txt", "ls/b.txt", "ls/d1/c.txt", "ls/d1/d.txt", "ls/d2/e.txt", "ls/z.txt"}
		for _, k := range keys {
			put(t, otherBucket, k, []byte(k), "text/plain")
		}
		// Pages of two, following the marker.
		var got []string
		marker := ""
		for pages := 0; ; pages++ {
			if pages > len(keys) {
				t.Fatalf("ListFiles does not end: %v", got)
			}
			items, _, next, more, err := bm.ListFiles(otherBucket, "ls/", "", marker, 2)
			if err != nil {
				t.Fatalf("ListFiles: %v", err)
			}
			for _, it := range items {
				got = append(got, it.Key)
				if it.Fsize != int64(len(it.Key)) || it.Hash != etag([]byte(it.Key)) || it.MimeType != "text/plain" || it.PutTime == 0 {
					t.Fatalf("list item %+v", it)
				}
			}
			if !more {
				break
			}
			marker = next
		}
		if !slices.Equal(got, keys) {
			t.Fatalf("ListFiles by pages of 2: %v, want %v", got, keys)
		}
		// With a delimiter.
		items, prefixes, _, more, err := bm.ListFiles(otherBucket, "ls/", "/", "", 1000)
		var names []string
		for _, it := range items {
			names = append(names, it.Key)
		}
		if err != nil || more || !slices.Equal(names, []string{"ls/a.txt", "ls/b.txt", "ls/z.txt"}) || !slices.Equal(prefixes, []string{"ls/d1/", "ls/d2/"}) {
			t.Fatalf("ListFiles with delimiter: %v items %v prefixes %v more %v", err, names, prefixes, more)
		}
	})

	t.Run("Batch", func(t *testing.T) {
		put(t, pubBucket, "batch/src.txt", []byte("batch source"), "text/plain")
		put(t, pubBucket, "batch/gone.txt", []byte("to delete"), "text/plain")
		ops := []string{
			storage.URIStat(pubBucket, "batch/src.txt"),
			storage.URIStat(pubBucket, "batch/none.txt"),
			storage.URICopy(pubBucket, "batch/src.txt", pubBucket, "batch/copy.txt", false),
			storage.URIMove(pubBucket, "batch/copy.txt", otherBucket, "batch/moved.txt", true),
			storage.URIDelete(pubBucket, "batch/gone.txt"),
			storage.URIChangeMime(pubBucket, "batch/src.txt", "text/x-batch"),
			storage.URIChangeType(pubBucket, "batch/src.txt", 2),
			storage.URIDeleteAfterDays(pubBucket, "batch/src.txt", 3),
			storage.URICopy(pubBucket, "batch/src.txt", otherBucket, "batch/moved.txt", false),
		}
		rets, err := bm.Batch(ops)
		if err != nil && len(rets) == 0 {
			t.Fatalf("Batch: %v", err)
		}
		want := []int{200, 612, 200, 200, 200, 200, 200, 200, 614}
		if len(rets) != len(want) {
			t.Fatalf("Batch: %d results, want %d: %+v", len(rets), len(want), rets)
		}
		for i, r := range rets {
			if r.Code != want[i] {
				t.Fatalf("Batch op %d (%s): code %d, want %d (%+v)", i, ops[i], r.Code, want[i], r.Data)
			}
		}
		if rets[0].Data.Fsize != int64(len("batch source")) || rets[0].Data.Hash != etag([]byte("batch source")) {
			t.Fatalf("Batch stat data: %+v", rets[0].Data)
		}
		if rets[1].Data.Error == "" {
			t.Fatalf("Batch stat of a missing key carries no error: %+v", rets[1])
		}
		mustRead(t, otherBucket, "batch/moved.txt", []byte("batch source"))
		if _, err := bm.Stat(pubBucket, "batch/gone.txt"); codeOf(err) != 612 {
			t.Fatalf("Stat of a key deleted in a batch: %v", err)
		}
		fi, err := bm.Stat(pubBucket, "batch/src.txt")
		if err != nil || fi.MimeType != "text/x-batch" || fi.Type != 2 {
			t.Fatalf("Stat after batch chgm/chtype: %v %+v", err, fi)
		}
	})

	t.Run("Fetch", func(t *testing.T) {
		data := []byte("fetched from a URL\n")
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write(data)
		}))
		defer srv.Close()
		src := srv.URL + "/src.txt"
		ret, err := bm.Fetch(src, otherBucket, "fetch/dst.txt")
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		if ret.Key != "fetch/dst.txt" || ret.Hash != etag(data) || ret.Fsize != int64(len(data)) {
			t.Fatalf("Fetch reply: %+v", ret)
		}
		mustRead(t, otherBucket, "fetch/dst.txt", data)
		ret, err = bm.FetchWithoutKey(src, otherBucket)
		if err != nil || ret.Key != etag(data) {
			t.Fatalf("FetchWithoutKey: %v %+v", err, ret)
		}
		mustRead(t, otherBucket, etag(data), data)
	})

	t.Run("Buckets", func(t *testing.T) {
		names, err := bm.Buckets(false)
		if err != nil {
			t.Fatalf("Buckets: %v", err)
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{otherBucket, privBucket, pubBucket}) {
			t.Fatalf("Buckets: %v", names)
		}
	})
}
