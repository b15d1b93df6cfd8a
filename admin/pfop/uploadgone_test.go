package pfop_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
)

// Where holdObjects stops an upload.
const (
	holdOpenTemp  = iota // the Open of its temporary (a keyless upload's move)
	holdBeforePut        // a Put, before it reads the file
	holdAtPutEnd         // a Put, once the file is read to its end: the object is committed next
)

// holdObjects stops the first operation of an upload at its point, on a
// key match admits (Opens: the temporaries only), says so on reached and
// waits for release.
type holdObjects struct {
	*countingObjects
	point   int
	match   func(key string) bool
	reached chan string
	release chan struct{}
	once    sync.Once
}

// stop holds the caller once, when key is the one.
func (h *holdObjects) stop(key string) {
	if !h.match(key) {
		return
	}
	h.once.Do(func() {
		h.reached <- key
		<-h.release
	})
}

func (h *holdObjects) Open(ctx context.Context, bucket, key string, offset, length int64) (io.ReadCloser, origin.Object, error) {
	if h.point == holdOpenTemp && rs.ReservedKey(key) {
		h.stop(key)
	}
	return h.countingObjects.Open(ctx, bucket, key, offset, length)
}

func (h *holdObjects) Put(ctx context.Context, bucket, key string, r io.Reader, opts origin.PutOptions) (origin.Object, error) {
	switch h.point {
	case holdBeforePut:
		h.stop(key)
	case holdAtPutEnd:
		r = &stopAtEnd{r: r, stop: func() { h.stop(key) }}
	}
	return h.countingObjects.Put(ctx, bucket, key, r, opts)
}

// stopAtEnd calls stop when r ends, before answering io.EOF.
type stopAtEnd struct {
	r    io.Reader
	stop func()
}

func (s *stopAtEnd) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF {
		s.stop()
	}
	return n, err
}

// heldEnv is e with an upload API whose object store holds an upload
// (holdObjects): its requests go there.
type heldEnv struct {
	*env
	hold *holdObjects
}

func (e *env) held(point int, match func(key string) bool) *heldEnv {
	e.t.Helper()
	hold := &holdObjects{countingObjects: e.objs, point: point, match: match, reached: make(chan string, 1), release: make(chan struct{})}
	h, err := pfop.NewHandler(pfop.HandlerConfig{Store: e.st, Queue: e.q, Objects: hold, Logger: testLogger(), SpoolDir: filepath.Join(e.t.TempDir(), "uploads")})
	if err != nil {
		e.t.Fatal(err)
	}
	srv := httptest.NewServer(h.Wrap(http.NotFoundHandler()))
	e.t.Cleanup(srv.Close)
	he := *e
	he.api = srv
	e.t.Cleanup(func() {
		select {
		case <-hold.release:
		default:
			close(hold.release) // a test that failed while holding
		}
	})
	return &heldEnv{env: &he, hold: hold}
}

// reply is an answer of the upload API.
type reply struct {
	status int
	body   map[string]any
	err    error
}

// send sends req in the background.
func send(req *http.Request) <-chan reply {
	ch := make(chan reply, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ch <- reply{err: err}
			return
		}
		defer resp.Body.Close()
		var v map[string]any
		b, err := io.ReadAll(resp.Body)
		if err == nil {
			err = json.Unmarshal(b, &v)
		}
		ch <- reply{status: resp.StatusCode, body: v, err: err}
	}()
	return ch
}

// waitHeld waits for the upload to reach its hold and returns the key.
func (he *heldEnv) waitHeld() string {
	he.t.Helper()
	select {
	case k := <-he.hold.reached:
		return k
	case <-time.After(time.Minute):
		he.t.Fatal("the upload never reached its hold")
	}
	return ""
}

// finish releases the upload and returns its answer.
func (he *heldEnv) finish(ch <-chan reply) reply {
	he.t.Helper()
	close(he.hold.release)
	select {
	case r := <-ch:
		if r.err != nil {
			he.t.Fatal(r.err)
		}
		return r
	case <-time.After(time.Minute):
		he.t.Fatal("no answer once released")
	}
	return reply{}
}

// upRequest is a request of the upload API with an UpToken.
func (he *heldEnv) upRequest(method, pathQuery, token, ctype string, body []byte) *http.Request {
	he.t.Helper()
	req, err := http.NewRequest(method, he.api.URL+pathQuery, bytes.NewReader(body))
	if err != nil {
		he.t.Fatal(err)
	}
	req.Header.Set("Authorization", "UpToken "+token)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return req
}

// formRequest is a form upload of data, with key unless nil.
func (he *heldEnv) formRequest(token string, key *string, data []byte) *http.Request {
	he.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("token", token)
	if key != nil {
		mw.WriteField("key", *key)
	}
	fw, _ := mw.CreateFormFile("file", "f.bin")
	fw.Write(data)
	mw.Close()
	req, err := http.NewRequest(http.MethodPost, he.api.URL+"/", &buf)
	if err != nil {
		he.t.Fatal(err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return req
}

// deleteBucket deletes a bucket as the admin API does: its record, then
// its upload temporaries.
func (e *env) deleteBucket(name string) {
	e.t.Helper()
	if err := e.st.Delete(context.Background(), store.BucketKey(name)); err != nil {
		e.t.Fatal(err)
	}
	e.removeTemps(name)
}

// createBucket creates a bucket as the admin API does: the temporaries
// left under the name removed, then the record written.
func (e *env) createBucket(name string, owner dora.Account) {
	e.t.Helper()
	e.removeTemps(name)
	e.putJSON(store.BucketKey(name), dora.Bucket{Name: name, Owner: owner.ID, Created: time.Now().UTC()})
}

func (e *env) removeTemps(bucket string) {
	e.t.Helper()
	objs, err := e.objs.List(context.Background(), bucket, strings.TrimSuffix(rs.UploadTempPrefix, "/"), 0)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, o := range objs {
		if rs.ReservedKey(o.Key) {
			if err := e.objs.Delete(context.Background(), bucket, o.Key); err != nil && !errors.Is(err, origin.ErrNotFound) {
				e.t.Fatal(err)
			}
		}
	}
}

// storedKeys is how many Puts of bucket's keys, temporaries left out,
// succeeded.
func (c *countingObjects) storedKeys(bucket string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, puts := range c.puts {
		if b, key, _ := strings.Cut(k, "/"); b == bucket && !rs.ReservedKey(key) {
			n += puts
		}
	}
	return n
}

// noObjects fails unless bucket holds nothing, temporaries included.
func (e *env) noObjects(what, bucket string) {
	e.t.Helper()
	if objs, err := e.objs.List(context.Background(), bucket, "", 0); err != nil || len(objs) != 0 {
		e.t.Errorf("%s: %s holds %+v (%v), want nothing", what, bucket, objs, err)
	}
}

// wantNoBucket fails unless r is the 631 of an upload whose bucket went.
func wantNoBucket(t *testing.T, what string, r reply) {
	t.Helper()
	msg, _ := r.body["error"].(string)
	if r.status != pfop.StatusNoBucket || !strings.HasPrefix(msg, "no such bucket") {
		t.Errorf("%s: %d %v, want 631 no such bucket", what, r.status, r.body)
	}
}

func isTemp(key string) bool  { return rs.ReservedKey(key) }
func notTemp(key string) bool { return !rs.ReservedKey(key) }

// A keyless upload whose bucket is deleted between storing its temporary
// and moving it finds the temporary gone (the delete removes it): it is
// answered 631 no such bucket, as one sent after the delete, not a 503
// naming the temporary, and leaves nothing. A temporary gone from a
// bucket that is still there is a 500 that says what happened.
func TestKeylessUploadLosesItsTemporary(t *testing.T) {
	e := newEnv(t)
	future := time.Now().Add(time.Hour).Unix()
	tok := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future})

	he := e.held(holdOpenTemp, isTemp)
	ch := send(he.formRequest(tok, nil, []byte("stored as the bucket went")))
	he.waitHeld()
	e.deleteBucket("photos")
	r := he.finish(ch)
	wantNoBucket(t, "bucket deleted before the move", r)
	if msg, _ := r.body["error"].(string); strings.Contains(msg, rs.UploadTempPrefix) {
		t.Errorf("the answer names the temporary: %q", msg)
	}
	e.noObjects("deleted bucket", "photos")

	e.createBucket("photos", alice)
	he = e.held(holdOpenTemp, isTemp)
	ch = send(he.formRequest(tok, nil, []byte("its temporary removed by someone")))
	tmp := he.waitHeld()
	if err := e.objs.Delete(context.Background(), "photos", tmp); err != nil {
		t.Fatal(err)
	}
	r = he.finish(ch)
	if msg, _ := r.body["error"].(string); r.status != http.StatusInternalServerError || !strings.Contains(msg, "nothing was stored") || strings.Contains(msg, rs.UploadTempPrefix) {
		t.Errorf("temporary removed, bucket there: %d %v, want 500 nothing was stored", r.status, r.body)
	}
	e.noObjects("bucket kept", "photos")
}

// An upload whose bucket is deleted, or deleted and created again (by
// another account, or by the same one: a new bucket), while its file is
// being stored stores nothing: 631 no such bucket, nothing left under the
// name, nothing of it in the new bucket. It is checked at the file's end,
// before the object can appear; an object that appeared anyway (the
// bucket changed between that check and the store's commit) is removed.
// A bucket only updated meanwhile (its record rewritten) is the same
// bucket: the upload succeeds.
func TestUploadIntoABucketDeletedMeanwhile(t *testing.T) {
	future := time.Now().Add(time.Hour).Unix()
	keyed := uploadToken(alice, map[string]any{"scope": "photos:a.txt", "deadline": future})
	keyless := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future})
	saveKey := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future, "saveKey": "up/$(fname)"})
	for _, c := range []struct {
		name  string
		token string
		point int
		match func(string) bool
		// then is what happens to photos while the upload is held.
		then func(e *env)
		ok   bool
	}{
		{"keyed, deleted before its Put", keyed, holdBeforePut, notTemp, func(e *env) { e.deleteBucket("photos") }, false},
		{"keyed, given to bob before its Put", keyed, holdBeforePut, notTemp, func(e *env) { e.deleteBucket("photos"); e.createBucket("photos", bob) }, false},
		{"keyed, created again by alice before its Put", keyed, holdBeforePut, notTemp, func(e *env) { e.deleteBucket("photos"); e.createBucket("photos", alice) }, false},
		{"keyed, given to bob before its commit", keyed, holdAtPutEnd, notTemp, func(e *env) { e.deleteBucket("photos"); e.createBucket("photos", bob) }, false},
		{"keyless, temporary stored after the delete, given to bob", keyless, holdBeforePut, isTemp, func(e *env) { e.deleteBucket("photos"); e.createBucket("photos", bob) }, false},
		{"keyless, given to bob before its move's commit", keyless, holdAtPutEnd, notTemp, func(e *env) { e.deleteBucket("photos"); e.createBucket("photos", bob) }, false},
		{"saveKey, deleted before its move's commit", saveKey, holdAtPutEnd, notTemp, func(e *env) { e.deleteBucket("photos") }, false},
		{"keyed, bucket made private meanwhile", keyed, holdAtPutEnd, notTemp, func(e *env) {
			b, _, err := store.Get[dora.Bucket](context.Background(), e.st, store.BucketKey("photos"))
			if err != nil {
				e.t.Fatal(err)
			}
			b.Private = true
			e.putJSON(store.BucketKey("photos"), b)
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			he := e.held(c.point, c.match)
			ch := send(he.formRequest(c.token, nil, []byte("alice's file")))
			he.waitHeld()
			c.then(e)
			r := he.finish(ch)
			if c.ok {
				key, _ := r.body["key"].(string)
				if got, _ := e.read("photos", key); r.status != http.StatusOK || got != "alice's file" {
					t.Fatalf("upload: %d %v, stored %q", r.status, r.body, got)
				}
				return
			}
			wantNoBucket(t, "upload", r)
			e.noObjects("after the upload", "photos")
			if c.point == holdBeforePut { // refused before the object could appear
				if n := e.objs.storedKeys("photos"); n != 0 {
					t.Errorf("%d objects were stored under their keys, then removed; want none stored", n)
				}
			}
		})
	}
}

// putb64, resumable v1 (mkfile) and v2 (complete) store through the same
// path as the form upload: an upload whose bucket is given to another
// account while it is being stored, keyed or not, is 631 and leaves
// nothing in the new owner's bucket.
func TestEveryUploadPathChecksItsBucket(t *testing.T) {
	future := time.Now().Add(time.Hour).Unix()
	data := []byte("alice's file, by another path")
	paths := map[string]func(he *heldEnv, tok string, key *string) *http.Request{
		"putb64": func(he *heldEnv, tok string, key *string) *http.Request {
			return he.upRequest("POST", putb64Path(len(data), key, "", nil, nil), tok, "application/octet-stream", []byte(base64.StdEncoding.EncodeToString(data)))
		},
		"mkfile": func(he *heldEnv, tok string, key *string) *http.Request {
			ctxs := he.putBlocksV1(tok, data, len(data))
			return he.upRequest("POST", mkfilePath(len(data), key, "", nil), tok, "text/plain", []byte(strings.Join(ctxs, ",")))
		},
		"v2 complete": func(he *heldEnv, tok string, key *string) *http.Request {
			enc := "~"
			if key != nil {
				enc = b64(*key)
			}
			base := "/buckets/photos/objects/" + enc + "/uploads"
			status, v := he.upCall("POST", base, tok, "", nil, nil)
			id, _ := v["uploadId"].(string)
			if status != 200 || id == "" {
				he.t.Fatalf("initiate: %d %v", status, v)
			}
			sum := md5.Sum(data)
			status, v = he.upCall("PUT", base+"/"+id+"/1", tok, "application/octet-stream", data, map[string]string{"Content-MD5": hex.EncodeToString(sum[:])})
			if status != 200 {
				he.t.Fatalf("part: %d %v", status, v)
			}
			body, _ := json.Marshal(map[string]any{"parts": []any{map[string]any{"partNumber": 1, "etag": v["etag"]}}})
			return he.upRequest("POST", base+"/"+id, tok, "application/json", body)
		},
	}
	for _, name := range []string{"putb64", "mkfile", "v2 complete"} {
		for _, keyed := range []bool{true, false} {
			t.Run(name+" keyed "+strconv.FormatBool(keyed), func(t *testing.T) {
				e := newEnv(t)
				tok := uploadToken(alice, map[string]any{"scope": "photos", "deadline": future})
				var key *string
				if keyed {
					key = strp("a.txt")
				}
				he := e.held(holdAtPutEnd, notTemp)
				ch := send(paths[name](he, tok, key))
				he.waitHeld()
				e.deleteBucket("photos")
				e.createBucket("photos", bob)
				wantNoBucket(t, fmt.Sprintf("%s keyed %v", name, keyed), he.finish(ch))
				e.noObjects("bob's photos", "photos")
			})
		}
	}
}
