package qiniusdk

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qiniu/go-sdk/v7/storage"
)

// queryCfg is a Config that names no host: the SDK finds every one with
// the region query at the uc host (the admin address, set in setup).
func queryCfg() *storage.Config { return &storage.Config{UseHTTPS: false} }

// TestTrustedRegionQuery: the SDK with no region and no host configured
// but the uc host trusts the region query for every call: uploads,
// BucketManager's object calls, Fetch (sent to the query's io host),
// Get (downloads from the query's io_src, the bucket's domain at the
// router), BucketsV4, and Pfop/Prefop (whose api host comes from uc
// /regions).
func TestTrustedRegionQuery(t *testing.T) {
	ctx := context.Background()
	cfg := queryCfg()
	bm := storage.NewBucketManager(env.mac, cfg)

	data := []byte("found through the region query\n")
	tok := upToken(storage.PutPolicy{Scope: pubBucket})
	var ret storage.PutRet
	if err := storage.NewFormUploader(cfg).Put(ctx, &ret, tok, "tq/a.txt", bytes.NewReader(data), int64(len(data)), &storage.PutExtra{MimeType: "text/plain"}); err != nil {
		t.Fatalf("FormUploader.Put: %v", err)
	}
	big := content(5<<20, 7)
	if err := storage.NewResumeUploaderV2(cfg).Put(ctx, &ret, tok, "tq/big2", bytes.NewReader(big), int64(len(big)), nil); err != nil || ret.Hash != etag(big) {
		t.Fatalf("ResumeUploaderV2.Put: %v %+v", err, ret)
	}
	if err := storage.NewResumeUploader(cfg).Put(ctx, &ret, tok, "tq/big1", bytes.NewReader(big), int64(len(big)), nil); err != nil || ret.Hash != etag(big) {
		t.Fatalf("ResumeUploader.Put: %v %+v", err, ret)
	}

	t.Run("Objects", func(t *testing.T) {
		fi, err := bm.Stat(pubBucket, "tq/a.txt")
		if err != nil || fi.Fsize != int64(len(data)) || fi.Hash != etag(data) {
			t.Fatalf("Stat: %v %+v", err, fi)
		}
		if err := bm.Copy(pubBucket, "tq/a.txt", otherBucket, "tq/copy.txt", true); err != nil {
			t.Fatalf("Copy: %v", err)
		}
		if err := bm.Move(otherBucket, "tq/copy.txt", otherBucket, "tq/moved.txt", true); err != nil {
			t.Fatalf("Move: %v", err)
		}
		mustRead(t, otherBucket, "tq/moved.txt", data)
		if err := bm.ChangeMime(otherBucket, "tq/moved.txt", "text/x-moved"); err != nil {
			t.Fatalf("ChangeMime: %v", err)
		}
		if err := bm.ChangeType(otherBucket, "tq/moved.txt", 1); err != nil {
			t.Fatalf("ChangeType: %v", err)
		}
		if err := bm.DeleteAfterDays(otherBucket, "tq/moved.txt", 2); err != nil {
			t.Fatalf("DeleteAfterDays: %v", err)
		}
		fi, err = bm.Stat(otherBucket, "tq/moved.txt")
		if days := time.Until(time.Unix(fi.Expiration, 0)).Hours() / 24; err != nil || fi.MimeType != "text/x-moved" || fi.Type != 1 || days < 1.9 || days > 2.1 {
			t.Fatalf("Stat after ChangeMime/ChangeType/DeleteAfterDays: %v %+v", err, fi)
		}
		rets, err := bm.Batch([]string{storage.URIStat(otherBucket, "tq/moved.txt"), storage.URIDelete(otherBucket, "tq/moved.txt"), storage.URIStat(otherBucket, "tq/moved.txt")})
		if len(rets) != 3 || rets[0].Code != 200 || rets[1].Code != 200 || rets[2].Code != 612 {
			t.Fatalf("Batch: %v %+v", err, rets)
		}
		if err := bm.Delete(pubBucket, "tq/big1"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		items, _, _, _, err := bm.ListFiles(pubBucket, "tq/", "", "", 10)
		var keys []string
		for _, it := range items {
			keys = append(keys, it.Key)
		}
		if err != nil || !slices.Equal(keys, []string{"tq/a.txt", "tq/big2"}) {
			t.Fatalf("ListFiles: %v %v", err, keys)
		}
		ch, err := bm.ListBucket(pubBucket, "tq/", "", "")
		if err != nil {
			t.Fatalf("ListBucket: %v", err)
		}
		keys = nil
		for it := range ch {
			keys = append(keys, it.Item.Key)
		}
		if !slices.Equal(keys, []string{"tq/a.txt", "tq/big2"}) {
			t.Fatalf("ListBucket: %v", keys)
		}
	})

	t.Run("Fetch", func(t *testing.T) {
		src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write(data)
		}))
		defer src.Close()
		ret, err := bm.Fetch(src.URL+"/f.txt", otherBucket, "tq/fetched.txt")
		if err != nil || ret.Key != "tq/fetched.txt" || ret.Hash != etag(data) || ret.Fsize != int64(len(data)) {
			t.Fatalf("Fetch through the queried io host: %v %+v", err, ret)
		}
		mustRead(t, otherBucket, "tq/fetched.txt", data)
		ret, err = bm.FetchWithoutKey(src.URL+"/f.txt", privBucket)
		if err != nil || ret.Key != etag(data) {
			t.Fatalf("FetchWithoutKey through the queried io host: %v %+v", err, ret)
		}
		mustRead(t, privBucket, etag(data), data)
	})

	t.Run("Get", func(t *testing.T) {
		for _, bucket := range []string{pubBucket, privBucket} {
			put(t, bucket, "tq/get.txt", data, "text/plain")
			out, err := bm.Get(bucket, "tq/get.txt", &storage.GetObjectInput{Context: ctx})
			if err != nil {
				if out != nil && out.Body != nil {
					out.Close()
				}
				t.Fatalf("Get from %s (the queried io_src): %v", bucket, err)
			}
			got, err := io.ReadAll(out)
			out.Close()
			if err != nil || !bytes.Equal(got, data) || out.ETag != etag(data) {
				t.Fatalf("Get from %s: %v %q (etag %q)", bucket, err, got, out.ETag)
			}
		}
	})

	t.Run("Buckets", func(t *testing.T) {
		names, err := bm.Buckets(false)
		slices.Sort(names)
		if err != nil || !slices.Equal(names, []string{otherBucket, privBucket, pubBucket}) {
			t.Fatalf("Buckets: %v %v", err, names)
		}
		var all []string
		marker := ""
		for pages := 0; pages < 4; pages++ {
			out, err := bm.BucketsV4(&storage.BucketV4Input{Limit: 2, Marker: marker})
			if err != nil {
				t.Fatalf("BucketsV4: %v", err)
			}
			for _, b := range out.Buckets {
				if b.Region == "" || b.Ctime.IsZero() || b.Private != (b.Name == privBucket) {
					t.Fatalf("BucketsV4 item %+v", b)
				}
				all = append(all, b.Name)
			}
			if !out.IsTruncated {
				break
			}
			marker = out.NextMarker
		}
		if !slices.Equal(all, []string{otherBucket, privBucket, pubBucket}) {
			t.Fatalf("BucketsV4 by pages of 2: %v", all)
		}
	})

	t.Run("Pfop", func(t *testing.T) {
		om := storage.NewOperationManager(env.mac, cfg)
		id, err := om.Pfop(pubBucket, "tq/a.txt", "qhash/md5", "", "", true)
		if err != nil || id == "" {
			t.Fatalf("Pfop through uc /regions: %q %v", id, err)
		}
		deadline := time.Now().Add(time.Minute)
		for {
			st, err := om.Prefop(id)
			if err != nil {
				t.Fatalf("Prefop through uc /regions: %v", err)
			}
			if st.Code == 0 && len(st.Items) == 1 {
				checkMD5Result(t, pubBucket, st.Items[0].Key, data)
				break
			}
			if st.Code != 1 && st.Code != 2 || time.Now().After(deadline) {
				t.Fatalf("Prefop: %+v", st)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	// Calls Dora does not serve fail at once with 501 naming the call,
	// not the admin API's 404 or the registry's 401.
	t.Run("Unserved", func(t *testing.T) {
		for name, call := range map[string]func() error{
			"Prefetch": func() error { return bm.Prefetch(pubBucket, "tq/a.txt") },
			"AsyncFetch": func() error {
				_, err := bm.AsyncFetch(storage.AsyncFetchParam{Url: "http://127.0.0.1:1/x", Bucket: pubBucket, Key: "tq/af"})
				return err
			},
			"GetBucketInfo":      func() error { _, err := bm.GetBucketInfo(pubBucket); return err },
			"ListBucketDomains":  func() error { _, err := bm.ListBucketDomains(pubBucket); return err },
			"UpdateObjectStatus": func() error { return bm.UpdateObjectStatus(pubBucket, "tq/a.txt", false) },
			"RestoreAr":          func() error { return bm.RestoreAr(pubBucket, "tq/a.txt", 1) },
			"SetImage":           func() error { return bm.SetImage("http://127.0.0.1:1/", pubBucket) },
			"CreateBucket":       func() error { return bm.CreateBucket("sdknew", storage.RIDHuadong) },
			"DropBucket":         func() error { return bm.DropBucket(otherBucket) },
		} {
			err := call()
			if codeOf(err) != http.StatusNotImplemented || !strings.Contains(err.Error(), "not served by Dora") {
				t.Errorf("%s: %v (code %d), want 501 saying it is not served", name, err, codeOf(err))
			}
		}
		names, err := bm.Buckets(false)
		if err != nil || !slices.Contains(names, otherBucket) || slices.Contains(names, "sdknew") {
			t.Fatalf("buckets after the refused CreateBucket/DropBucket: %v %v", err, names)
		}
	})
}
