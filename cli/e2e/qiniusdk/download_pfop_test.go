package qiniusdk

import (
	"bytes"
	"encoding/json"
	"image"
	pngpkg "image/png"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/qiniu/go-sdk/v7/auth"
	"github.com/qiniu/go-sdk/v7/storage"
)

// TestDownloadURLs: storage.MakePublicURL and storage.MakePrivateURL read
// objects through the router's bucket domain; a private bucket wants the
// download token.
func TestDownloadURLs(t *testing.T) {
	data := []byte("a key with spaces and unicode\n")
	const key = "dl/a b/数据 +x.txt"
	put(t, pubBucket, key, data, "text/plain")
	put(t, privBucket, key, data, "text/plain")

	t.Run("Public", func(t *testing.T) {
		mustRead(t, pubBucket, key, data)
	})

	t.Run("Private", func(t *testing.T) {
		if code, _, h := download(t, storage.MakePublicURL(domain(privBucket), key)); code != http.StatusUnauthorized || h.Get("X-Reqid") == "" {
			t.Fatalf("private object without a token: %d (X-Reqid %q), want 401", code, h.Get("X-Reqid"))
		}
		mustRead(t, privBucket, key, data)
		expired := storage.MakePrivateURL(env.mac, domain(privBucket), key, time.Now().Add(-time.Hour).Unix())
		if code, _, _ := download(t, expired); code != http.StatusUnauthorized {
			t.Fatalf("private object with an expired token: %d, want 401", code)
		}
		wrong := storage.MakePrivateURL(auth.New(env.mac.AccessKey, "not-the-secret-key"), domain(privBucket), key, time.Now().Add(time.Hour).Unix())
		if code, _, _ := download(t, wrong); code != http.StatusUnauthorized {
			t.Fatalf("private object with a token signed by another key: %d, want 401", code)
		}
		// A processing URL of a private object, signed by the SDK.
		signed := storage.MakePrivateURLv2WithQueryString(env.mac, domain(privBucket), key, "qhash/md5", time.Now().Add(time.Hour).Unix())
		if code, body, _ := download(t, signed); code != http.StatusOK || !strings.Contains(string(body), `"fsize":30`) {
			t.Fatalf("qhash/md5 of a private object with a token: %d %q", code, body)
		}
	})
}

// waitPfop polls Prefop until the job has ended (code 0, 3 or 4).
func waitPfop(t *testing.T, id string) storage.PrefopRet {
	t.Helper()
	om := storage.NewOperationManager(env.mac, &env.cfg)
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := om.Prefop(id)
		if err != nil {
			t.Fatalf("Prefop(%s): %v", id, err)
		}
		if st.ID != id {
			t.Fatalf("Prefop(%s) answered for %q", id, st.ID)
		}
		if st.Code != 1 && st.Code != 2 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("pfop %s still running after a minute: %+v", id, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPfop: storage.OperationManager.Pfop with built-in fops (one saved
// under the default result key, one with saveas), Prefop until the job
// ends, the results read back through the router.
func TestPfop(t *testing.T) {
	data := []byte("persistent processing input\n")
	put(t, pubBucket, "pfop/in.txt", data, "text/plain")
	om := storage.NewOperationManager(env.mac, &env.cfg)
	saveTo := storage.EncodedEntry(otherBucket, "pfop/saved-md5.json")
	id, err := om.Pfop(pubBucket, "pfop/in.txt", "qhash/md5;qhash/md5|saveas/"+saveTo, "", "", true)
	if err != nil || id == "" {
		t.Fatalf("Pfop: %q %v", id, err)
	}
	st := waitPfop(t, id)
	if st.Code != 0 || st.InputBucket != pubBucket || st.InputKey != "pfop/in.txt" || len(st.Items) != 2 {
		t.Fatalf("Prefop: %+v", st)
	}
	for i, it := range st.Items {
		if it.Code != 0 || it.Key == "" || it.Hash == "" {
			t.Fatalf("Prefop item %d: %+v", i, it)
		}
	}
	checkMD5Result(t, pubBucket, st.Items[0].Key, data)
	if st.Items[1].Key != "pfop/saved-md5.json" {
		t.Fatalf("saveas item key %q", st.Items[1].Key)
	}
	checkMD5Result(t, otherBucket, "pfop/saved-md5.json", data)
	// The default result is also served at ?p/1/<fop>.
	code, body, _ := download(t, storage.MakePublicURL(domain(pubBucket), "pfop/in.txt")+"?p/1/qhash/md5")
	if code != http.StatusOK || !strings.Contains(string(body), `"fsize":28`) {
		t.Fatalf("?p/1/qhash/md5: %d %q", code, body)
	}

	// imageInfo on an image.
	var png bytes.Buffer
	if err := pngpkg.Encode(&png, image.NewRGBA(image.Rect(0, 0, 4, 3))); err != nil {
		t.Fatal(err)
	}
	put(t, pubBucket, "pfop/img.png", png.Bytes(), "image/png")
	id, err = om.Pfop(pubBucket, "pfop/img.png", "imageInfo", "", "", true)
	if err != nil {
		t.Fatalf("Pfop imageInfo: %v", err)
	}
	st = waitPfop(t, id)
	if st.Code != 0 || len(st.Items) != 1 || st.Items[0].Key == "" {
		t.Fatalf("Prefop of imageInfo: %+v", st)
	}
	code, body, _ = download(t, storage.MakePublicURL(domain(pubBucket), st.Items[0].Key))
	var info struct {
		Format        string
		Width, Height int
	}
	if code != http.StatusOK || json.Unmarshal(body, &info) != nil || info.Format != "png" || info.Width != 4 || info.Height != 3 {
		t.Fatalf("imageInfo result: %d %q", code, body)
	}

	// An unknown id: 612.
	if _, err := om.Prefop("z0.nosuchjob"); codeOf(err) != 612 {
		t.Fatalf("Prefop of an unknown id: %v (code %d), want 612", err, codeOf(err))
	}
	// A failing fop: the job ends failed (3) with the item's error.
	id, err = om.Pfop(pubBucket, "pfop/in.txt", "imageInfo", "", "", true)
	if err != nil {
		t.Fatalf("Pfop imageInfo on text: %v", err)
	}
	if st := waitPfop(t, id); st.Code != 3 || len(st.Items) != 1 || st.Items[0].Code != 3 || st.Items[0].Error == "" {
		t.Fatalf("Prefop of a failing fop: %+v", st)
	}
}
