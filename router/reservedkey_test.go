package router

import (
	"context"
	"encoding/base64"
	"errors"
	"image/color"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/auth"
)

// TestUploadTemporariesNotServed: the temporaries uploads keep under
// .dora-upload/ (dora.ReservedKey) are no object of the bucket's: a
// download of one (with fops, a persisted result, HEAD, an escaped path,
// a private bucket's valid token) answers 404 as for a key that holds
// none, a watermark cannot read one, and a saveas, over HTTP or through
// Process, cannot write there (400, nothing stored).
func TestUploadTemporariesNotServed(t *testing.T) {
	e := newEnv(t, nil)
	const tmp = ".dora-upload/0123456789abcdef01234567"
	e.objs.add("photos", tmp, "image/png", testPNG(t, 4, 4, color.RGBA{0, 0, 255, 255}))
	e.objs.add("photos", ".dora-upload", "text/plain", []byte("planted"))
	e.objs.add("secret", tmp, "text/plain", []byte("in flight"))
	e.objs.add("photos", ".dora-uploads/x", "text/plain", []byte("an ordinary key"))
	e.objs.add("photos", "in.txt", "text/plain", []byte("abc"))
	e.objs.add("photos", "p.png", "image/png", testPNG(t, 20, 20, color.RGBA{0, 0, 0, 255}))
	host := "photos.localhost"

	for _, c := range []struct{ method, pathQuery string }{
		{"GET", "/" + tmp}, {"HEAD", "/" + tmp}, {"GET", "/%2Edora-upload%2F0123456789abcdef01234567"},
		{"GET", "/.dora-upload"}, {"GET", "/" + tmp + "?imageInfo"}, {"GET", "/" + tmp + "?qhash/md5"},
		{"GET", "/" + tmp + "?p/1/qhash/md5"},
	} {
		resp, body := e.do(c.method, host, c.pathQuery, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s: %d %.100q, want 404", c.method, c.pathQuery, resp.StatusCode, body)
			continue
		}
		if c.method == "GET" && !strings.Contains(jsonError(t, body), "no such object") {
			t.Errorf("%s %s: %s, want no such object", c.method, c.pathQuery, body)
		}
	}
	if resp, body := e.get(host, "/.dora-uploads/x"); resp.StatusCode != 200 || string(body) != "an ordinary key" {
		t.Errorf("a key beside the reserved namespace: %d %q", resp.StatusCode, body)
	}

	// A private bucket: the token first, as for any key.
	deadline := time.Now().Unix() + 3600
	signed := strings.TrimPrefix(auth.DownloadURL("http://secret.localhost/"+tmp, alice.AccessKey, alice.SecretKey, deadline), "http://secret.localhost")
	if resp, body := e.get("secret.localhost", signed); resp.StatusCode != http.StatusNotFound {
		t.Errorf("private bucket, valid token: %d %q, want 404", resp.StatusCode, body)
	}
	if resp, body := e.get("secret.localhost", "/"+tmp); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("private bucket, no token: %d %q, want 401", resp.StatusCode, body)
	}

	b64 := base64.URLEncoding.EncodeToString([]byte("http://photos.localhost/" + tmp))
	resp, body := e.get(host, "/p.png?watermark/1/image/"+b64+"/gravity/NorthWest/dx/0/dy/0")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(jsonError(t, body), "no such object") {
		t.Errorf("watermark image from a temporary: %d %.200s, want 400 no such object", resp.StatusCode, body)
	}

	for _, key := range []string{".dora-upload/planted", ".dora-upload"} {
		resp, body := e.get(host, signedSaveAs(host, "/in.txt", "qhash/md5|", "photos", key))
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(jsonError(t, body), "reserved for uploads in progress") {
			t.Errorf("saveas to %q: %d %s, want 400", key, resp.StatusCode, body)
		}
		_, err := e.r.Process(context.Background(), "photos", "in.txt", "qhash/md5|saveas/"+auth.EncodedEntryURI("photos", key), io.Discard)
		var pe *ProcessError
		if !errors.As(err, &pe) || pe.Status != http.StatusBadRequest {
			t.Errorf("Process saveas to %q: %v, want 400", key, err)
		}
	}
	if got, _ := e.objs.get("photos", ".dora-upload"); string(got) != "planted" {
		t.Errorf(".dora-upload now holds %q", got)
	}
	if _, ok := e.objs.get("photos", ".dora-upload/planted"); ok {
		t.Error("a saveas wrote under .dora-upload/")
	}
	_, err := e.r.Process(context.Background(), "photos", tmp, "qhash/md5", io.Discard)
	var pe *ProcessError
	if !errors.As(err, &pe) || pe.Status != http.StatusNotFound {
		t.Errorf("Process of a temporary: %v, want 404", err)
	}
}
