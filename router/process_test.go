package router

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/pool"
)

// upperInstance is a Dora instance that upper-cases its input and records
// the X-Reqid and cmd it received.
type upperInstance struct {
	mu     sync.Mutex
	reqids []string
	cmds   []string
}

func (u *upperInstance) serve(w http.ResponseWriter, r *http.Request, in io.Reader) {
	u.mu.Lock()
	u.reqids = append(u.reqids, r.Header.Get("X-Reqid"))
	u.cmds = append(u.cmds, r.URL.Query().Get("cmd"))
	u.mu.Unlock()
	b, err := io.ReadAll(in)
	if err != nil {
		http.Error(w, err.Error(), 502)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write(bytes.ToUpper(b))
}

func TestProcess(t *testing.T) {
	e := newEnv(t, nil)
	up := &upperInstance{}
	upAddr := fakeInstance(t, up.serve)
	failAddr := fakeInstance(t, func(w http.ResponseWriter, r *http.Request, in io.Reader) {
		io.Copy(io.Discard, in)
		http.Error(w, "cannot frobnicate "+r.URL.Query().Get("cmd"), http.StatusUnprocessableEntity)
	})
	breakAddr := fakeInstance(t, func(w http.ResponseWriter, r *http.Request, in io.Reader) {
		io.Copy(io.Discard, in)
		w.Header().Set("Content-Length", "100000")
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	})
	e.ufop(dora.Ufop{Name: "upper", Owner: alice.ID}, dora.ProtocolDora)
	e.ufop(dora.Ufop{Name: "failer", Owner: alice.ID}, dora.ProtocolDora)
	e.ufop(dora.Ufop{Name: "breaker", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{
		poolInst("u0", "upper", "v1", upAddr), poolInst("f0", "failer", "v1", failAddr), poolInst("b0", "breaker", "v1", breakAddr),
	})
	e.objs.add("photos", "in.txt", "text/plain", []byte("hello world"))
	ctx := context.Background()

	type tc struct {
		name, bucket, key, fops string
		want                    string // output, when it succeeds
		wantStep, wantStatus    int    // when it fails
		wantMsg                 string
		saved                   string // "bucket/key" saved
	}
	cases := []tc{
		{name: "one ufop", bucket: "photos", key: "in.txt", fops: "upper/x", want: "HELLO WORLD"},
		{name: "ufop then builtin", bucket: "photos", key: "in.txt", fops: "upper/x|qhash/md5",
			want: `{"hash":"` + md5hex("HELLO WORLD") + `","fsize":11}`},
		{name: "copy", bucket: "photos", key: "in.txt", fops: "", want: "hello world"},
		{name: "saveas without sign", bucket: "photos", key: "in.txt",
			fops: "upper/y|saveas/" + auth.EncodedEntryURI("secret", "out/upper.txt"), want: "HELLO WORLD", saved: "secret/out/upper.txt"},
		{name: "fails at step 2", bucket: "photos", key: "in.txt", fops: "upper/a|failer/b|upper/c",
			wantStep: 1, wantStatus: http.StatusUnprocessableEntity, wantMsg: "cannot frobnicate failer/b"},
		{name: "stream breaks at step 2", bucket: "photos", key: "in.txt", fops: "upper/a|breaker/b",
			wantStep: 1, wantStatus: http.StatusBadGateway, wantMsg: "unexpected EOF"},
		{name: "unknown ufop", bucket: "photos", key: "in.txt", fops: "upper/a|nosuchufop",
			wantStep: 1, wantStatus: http.StatusNotFound, wantMsg: "no such ufop"},
		{name: "no object", bucket: "photos", key: "missing.txt", fops: "upper/a", wantStep: -1, wantStatus: 404, wantMsg: "no such object"},
		{name: "no bucket", bucket: "nope", key: "in.txt", fops: "upper/a", wantStep: -1, wantStatus: 404, wantMsg: "no bucket"},
		{name: "bad fop", bucket: "photos", key: "in.txt", fops: "upper/a||b", wantStep: -1, wantStatus: 400, wantMsg: "malformed"},
		{name: "token refused", bucket: "photos", key: "in.txt", fops: "upper/a&e=1&token=a:b", wantStep: -1, wantStatus: 400},
		{name: "bad key", bucket: "photos", key: "../x", fops: "upper/a", wantStep: -1, wantStatus: 400},
		{name: "saveas to another owner's bucket", bucket: "photos", key: "in.txt",
			fops: "upper/a|saveas/" + auth.EncodedEntryURI("bobs", "x"), wantStep: -1, wantStatus: 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			res, err := e.r.Process(ctx, c.bucket, c.key, c.fops, &out)
			if c.wantStatus != 0 {
				var pe *ProcessError
				if !errors.As(err, &pe) {
					t.Fatalf("err %v (%T), want a *ProcessError", err, err)
				}
				if pe.Step != c.wantStep || pe.Status != c.wantStatus || !strings.Contains(pe.Msg, c.wantMsg) {
					t.Fatalf("got step %d status %d msg %q, want step %d status %d msg containing %q",
						pe.Step, pe.Status, pe.Msg, c.wantStep, c.wantStatus, c.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.String() != c.want || res.Size != int64(len(c.want)) {
				t.Fatalf("output %q (size %d), want %q", out.String(), res.Size, c.want)
			}
			if c.saved != "" {
				b, k, _ := strings.Cut(c.saved, "/")
				data, ok := e.objs.get(b, k)
				if !ok || string(data) != c.want {
					t.Fatalf("saved %q (%v), want %q", data, ok, c.want)
				}
				if res.Saved == nil || res.Saved.Bucket != b || res.Saved.Key != k || res.Saved.ETag == "" {
					t.Fatalf("Result.Saved = %+v", res.Saved)
				}
			} else if res.Saved != nil {
				t.Fatalf("Result.Saved = %+v without saveas", res.Saved)
			}
		})
	}
	waitUntil(t, "every pipeline torn down", func() bool { return e.r.src.len() == 0 })

	// The instance saw Process's request id and its step text verbatim.
	var out bytes.Buffer
	res, err := e.r.Process(ctx, "photos", "in.txt", "upper/with-reqid", &out)
	if err != nil {
		t.Fatal(err)
	}
	up.mu.Lock()
	last, cmd := up.reqids[len(up.reqids)-1], up.cmds[len(up.cmds)-1]
	up.mu.Unlock()
	if res.Reqid == "" || last != res.Reqid || cmd != "upper/with-reqid" {
		t.Fatalf("instance saw reqid %q cmd %q, Process returned %q", last, cmd, res.Reqid)
	}
}

// failingWriter fails every write, as a caller that went away.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("sink gone") }

// TestProcessWriterFailureSavesNothing: a caller's writer that fails aborts
// the pipeline and the saveas target never appears.
func TestProcessWriterFailureSavesNothing(t *testing.T) {
	e := newEnv(t, nil)
	up := &upperInstance{}
	e.ufop(dora.Ufop{Name: "upper", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("u0", "upper", "v1", fakeInstance(t, up.serve))})
	e.objs.add("photos", "in.txt", "text/plain", []byte("hello"))
	_, err := e.r.Process(context.Background(), "photos", "in.txt", "upper/a|saveas/"+auth.EncodedEntryURI("photos", "out.txt"), failingWriter{})
	if err == nil {
		t.Fatal("Process succeeded with a failing writer")
	}
	if _, ok := e.objs.get("photos", "out.txt"); ok {
		t.Fatal("the output was saved although the pipeline failed")
	}
	waitUntil(t, "pipeline torn down", func() bool { return e.r.src.len() == 0 })
}

// TestPersistedResults: ?p/1/<fop> serves what pfop recorded in the store
// (store.ResultKey), 404 otherwise (absent, another owner's bucket, a
// record of another key); a result in a private bucket only with its
// owner's download token, even when the source bucket is public.
func TestPersistedResults(t *testing.T) {
	e := newEnv(t, nil)
	record := func(bucket, fop, savedBucket, savedKey string) {
		e.put(store.ResultKey(bucket, "in.txt", fop), dora.PfopResult{
			Bucket: bucket, Key: "in.txt", Fop: fop, SavedBucket: savedBucket, SavedKey: savedKey,
		})
	}
	record("photos", "upper/x", "secret", "results/in.txt.upper")
	record("secret", "upper/x", "secret", "results/in.txt.upper")
	record("photos", "upper/pub", "photos", "results/in.txt.pub")
	record("photos", "upper/other-owner", "bobs", "x")
	// A record under the right key but naming another source (a digest
	// collision) is not served.
	e.put(store.ResultKey("photos", "in.txt", "upper/z"), dora.PfopResult{
		Bucket: "photos", Key: "other.txt", Fop: "upper/z", SavedBucket: "photos", SavedKey: "results/in.txt.pub",
	})
	e.objs.add("photos", "in.txt", "text/plain", []byte("hello"))
	e.objs.add("secret", "results/in.txt.upper", "text/plain", []byte("HELLO"))
	e.objs.add("bobs", "x", "text/plain", []byte("bob's"))
	e.objs.add("photos", "results/in.txt.pub", "text/plain", []byte("PUBLIC"))
	e.objs.add("secret", "in.txt", "text/plain", []byte("hello"))
	// A result in a private bucket needs its owner's download token, on
	// the request URL as for any private object.
	future := time.Now().Unix() + 3600
	token := func(host, pathQuery, ak, sk string, deadline int64) string {
		return strings.TrimPrefix(auth.DownloadURL("http://"+host+pathQuery, ak, sk, deadline), "http://"+host)
	}

	cases := []struct {
		host, pathQuery string
		wantStatus      int
		wantBody        string
	}{
		{"photos.localhost", "/in.txt?p/1/upper/pub", 200, "PUBLIC"},
		{"photos.localhost", "/in.txt?p/1/upper/x", 401, ""},
		{"photos.localhost", token("photos.localhost", "/in.txt?p/1/upper/x", alice.AccessKey, alice.SecretKey, future), 200, "HELLO"},
		{"photos.localhost", token("photos.localhost", "/in.txt?p/1/upper/x", bob.AccessKey, bob.SecretKey, future), 401, ""},
		{"photos.localhost", token("photos.localhost", "/in.txt?p/1/upper/x", alice.AccessKey, alice.SecretKey, time.Now().Unix()-1), 401, ""},
		{"photos.localhost", token("photos.localhost", "/in.txt?p/1/upper/x", alice.AccessKey, "not-the-sk", future), 401, ""},
		{"photos.localhost", token("photos.localhost", "/other.txt?p/1/upper/x", alice.AccessKey, alice.SecretKey, future), 401, ""},
		{"secret.localhost", "/in.txt?p/1/upper/x", 401, ""},
		{"secret.localhost", token("secret.localhost", "/in.txt?p/1/upper/x", alice.AccessKey, alice.SecretKey, future), 200, "HELLO"},
		{"photos.localhost", "/in.txt?p/1/upper/y", 404, ""},
		{"photos.localhost", "/in.txt?p/1/upper/other-owner", 404, ""},
		{"photos.localhost", "/in.txt?p/1/", 400, ""},
	}
	for _, c := range cases {
		if strings.HasPrefix(c.pathQuery, "/other.txt") { // signed for another key, sent for in.txt
			c.pathQuery = "/in.txt" + strings.TrimPrefix(c.pathQuery, "/other.txt")
		}
		query := c.host + c.pathQuery
		resp, body := e.get(c.host, c.pathQuery)
		if resp.StatusCode != c.wantStatus {
			t.Fatalf("%s: status %d (%s), want %d", query, resp.StatusCode, body, c.wantStatus)
		}
		if c.wantStatus == 200 && string(body) != c.wantBody {
			t.Fatalf("%s: body %q want %q", query, body, c.wantBody)
		}
		if c.wantStatus != 200 {
			jsonError(t, body)
		}
		if resp.Header.Get("X-Reqid") == "" {
			t.Fatalf("%s: no X-Reqid", query)
		}
	}
	// The record of another source under upper/z's key is not served.
	if resp, body := e.get("photos.localhost", "/in.txt?p/1/upper/z"); resp.StatusCode != 404 {
		t.Fatalf("collision record: status %d (%s)", resp.StatusCode, body)
	}
}

// TestBrokenStreamReadByBuiltin: a step whose output is cut after its
// response started fails as that step (502, its index: X-Dora-Step, and
// pfop's errorIndex through Process) also when a built-in reads it, as
// when a ufop step does; the built-in did nothing wrong.
func TestBrokenStreamReadByBuiltin(t *testing.T) {
	e := newEnv(t, nil)
	up := &upperInstance{}
	upAddr := fakeInstance(t, up.serve)
	// More than the headers' round trip reads: the cut comes while the
	// next stage reads the stream.
	breakAddr := fakeInstance(t, func(w http.ResponseWriter, r *http.Request, in io.Reader) {
		io.Copy(io.Discard, in)
		w.Header().Set("Content-Length", "10000000")
		w.Write(bytes.Repeat([]byte("partial "), 100_000))
		w.(http.Flusher).Flush()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	})
	e.ufop(dora.Ufop{Name: "upper", Owner: alice.ID}, dora.ProtocolDora)
	e.ufop(dora.Ufop{Name: "breaker", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("u0", "upper", "v1", upAddr), poolInst("b0", "breaker", "v1", breakAddr)})
	e.objs.add("photos", "in.txt", "text/plain", []byte("hello world"))
	for _, fops := range []string{"upper/a|breaker/b|qhash/md5", "upper/a|breaker/b|imageInfo"} {
		_, err := e.r.Process(context.Background(), "photos", "in.txt", fops, io.Discard)
		var pe *ProcessError
		if !errors.As(err, &pe) || pe.Step != 1 || pe.Status != http.StatusBadGateway || !strings.Contains(pe.Msg, "unexpected EOF") {
			t.Fatalf("Process %s: %#v, want step 1, 502, unexpected EOF", fops, err)
		}
		resp, body := e.get("photos.localhost", "/in.txt?"+fops)
		if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Dora-Step") != "1" {
			t.Fatalf("GET ?%s: %d, X-Dora-Step %q (%s), want 502 at step 1", fops, resp.StatusCode, resp.Header.Get("X-Dora-Step"), body)
		}
		jsonError(t, body)
	}
}
