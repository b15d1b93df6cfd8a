package pfop_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/router/origin"
)

// holdTempOpen stops a keyless upload between storing its temporary and
// copying it to its key: the Open of the temporary says so on opening and
// waits for release.
type holdTempOpen struct {
	*countingObjects
	opening chan string
	release chan struct{}
}

func (h holdTempOpen) Open(ctx context.Context, bucket, key string, offset, length int64) (io.ReadCloser, origin.Object, error) {
	if rs.ReservedKey(key) {
		h.opening <- key
		<-h.release
	}
	return h.countingObjects.Open(ctx, bucket, key, offset, length)
}

// An upload whose temporary is stored but not yet moved to its key (the
// window a crash leaves it in) keeps it through the leader's sweeps, even
// ones whose clock is days past the temporary's put time: it has not yet
// been there a day when first seen. Once the upload is done nothing is
// left under .dora-upload/.
func TestUploadTemporarySurvivesSweeps(t *testing.T) {
	e := newEnv(t)
	hold := holdTempOpen{e.objs, make(chan string, 1), make(chan struct{})}
	h, err := pfop.NewHandler(pfop.HandlerConfig{Store: e.st, Queue: e.q, Logger: testLogger(), Objects: hold})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("token", uploadToken(alice, map[string]any{"scope": "photos", "deadline": time.Now().Add(time.Hour).Unix()}))
	fw, _ := mw.CreateFormFile("file", "slow.txt")
	fw.Write([]byte("held between store and move"))
	mw.Close()
	req := httptest.NewRequest(http.MethodPost, "/", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.Wrap(http.NotFoundHandler()).ServeHTTP(w, req)
	}()
	var tmp string
	select {
	case tmp = <-hold.opening:
	case <-time.After(30 * time.Second):
		t.Fatal("the upload never reached its move")
	}
	x := &rs.Expirer{Store: e.st, Objects: e.objs}
	ctx := context.Background()
	for _, later := range []time.Duration{72 * time.Hour, 95 * time.Hour} {
		res, err := x.Sweep(ctx, time.Now().Add(later), nil)
		if err != nil || res.TempsRemoved != 0 {
			t.Fatalf("sweep %v on: %+v %v", later, res, err)
		}
	}
	if _, ok := e.read("photos", tmp); !ok {
		t.Fatal("the sweep removed the temporary of a live upload")
	}
	close(hold.release)
	<-done
	var v map[string]any
	json.Unmarshal(w.Body.Bytes(), &v)
	key, _ := v["key"].(string)
	if w.Code != 200 || key == "" {
		t.Fatalf("upload: %d %v", w.Code, v)
	}
	if got, _ := e.read("photos", key); got != "held between store and move" {
		t.Fatalf("stored %q", got)
	}
	if objs, err := e.objs.List(ctx, "photos", rs.UploadTempPrefix, 0); err != nil || len(objs) != 0 {
		t.Fatalf("left under %s: %v %v", rs.UploadTempPrefix, objs, err)
	}
}

// A persistent job cannot read a temporary nor save a result among them.
func TestPfopReservedKeys(t *testing.T) {
	e := newEnv(t)
	e.object("photos", "in.txt", "x")
	e.object("photos", ".dora-upload/0123456789abcdef01234567", "an upload's temporary")
	for _, form := range []url.Values{
		{"bucket": {"photos"}, "key": {".dora-upload/0123456789abcdef01234567"}, "fops": {"upper/x"}},
		{"bucket": {"photos"}, "key": {".dora-upload"}, "fops": {"upper/x"}},
		{"bucket": {"photos"}, "key": {"in.txt"}, "fops": {"upper/x|saveas/" + entry("photos", ".dora-upload/planted")}},
		{"bucket": {"photos"}, "key": {"in.txt"}, "fops": {"saveas/" + entry("photos", ".dora-upload")}},
	} {
		status, v, _ := e.pfopCall("/pfop/", alice, signers["qiniu"], form)
		if status != http.StatusBadRequest || !strings.Contains(v["error"].(string), "reserved") {
			t.Errorf("pfop %v: %d %v, want 400 reserved", form, status, v)
		}
	}
}
