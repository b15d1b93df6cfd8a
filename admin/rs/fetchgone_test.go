package rs_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
)

// heldSource serves a file whose body stops after its first bytes until
// release is closed: a fetch of it is held mid-stream. reached is closed
// once the first bytes are sent.
type heldSource struct {
	url     string
	reached chan struct{}
	release chan struct{}
}

func newHeldSource(t *testing.T) *heldSource {
	t.Helper()
	s := &heldSource{reached: make(chan struct{}), release: make(chan struct{})}
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "the first half, ")
		w.(http.Flusher).Flush()
		once.Do(func() { close(s.reached) })
		select {
		case <-s.release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "the second half")
	}))
	t.Cleanup(func() {
		select {
		case <-s.release:
		default:
			close(s.release) // a test that failed while holding
		}
		srv.Close()
	})
	s.url = srv.URL + "/f.txt"
	return s
}

// fetchReply is an answer of rs.
type fetchReply struct {
	status int
	body   map[string]any
	err    error
}

// fetchAsync sends alice's fetch of src to the entry in the background.
func (e *env) fetchAsync(src, to string) <-chan fetchReply {
	req, err := http.NewRequest(http.MethodPost, e.api.URL+"/fetch/"+enc(src)+"/to/"+to, strings.NewReader(""))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	signers["qiniu"](req, alice, "")
	ch := make(chan fetchReply, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ch <- fetchReply{err: err}
			return
		}
		defer resp.Body.Close()
		var v map[string]any
		b, err := io.ReadAll(resp.Body)
		if err == nil {
			err = json.Unmarshal(b, &v)
		}
		ch <- fetchReply{status: resp.StatusCode, body: v, err: err}
	}()
	return ch
}

// deleteBucket deletes the bucket as the admin API does (admin/buckets.go):
// its record, then its upload temporaries.
func deleteBucket(t *testing.T, st store.Store, objs rs.Objects, name string) {
	t.Helper()
	if err := st.Delete(context.Background(), store.BucketKey(name)); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.RemoveTemps(context.Background(), objs, name); err != nil {
		t.Fatal(err)
	}
}

// recreateAsBob creates the bucket name again, bob's.
func recreateAsBob(t *testing.T, st store.Store, name string) {
	t.Helper()
	b, _ := json.Marshal(dora.Bucket{Name: name, Owner: bob.ID, Created: time.Now().UTC()})
	if _, err := st.Put(context.Background(), store.BucketKey(name), b); err != nil {
		t.Fatal(err)
	}
}

// allKeys is every key of bucket, temporaries included.
func (e *env) allKeys(bucket string) []string {
	e.t.Helper()
	keys, err := e.objs.Keys(context.Background(), bucket, "")
	if err != nil && !errors.Is(err, origin.ErrNotFound) {
		e.t.Fatal(err)
	}
	return keys
}

// A fetch whose bucket is deleted while the file streams, or deleted and
// created again by another account, stores nothing (neither under the
// deleted name, which would then be refused to a create, nor in the new
// owner's bucket) and answers 631.
func TestFetchIntoABucketDeletedMeanwhile(t *testing.T) {
	for _, keyed := range []bool{true, false} {
		for _, again := range []bool{false, true} {
			name := map[bool]string{true: "keyed", false: "keyless"}[keyed] + map[bool]string{false: ", deleted", true: ", created again by bob"}[again]
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, func(c *rs.Config) { c.AllowPrivateFetch = true })
				src := newHeldSource(t)
				to := enc("photos")
				if keyed {
					to = entry("photos", "f.txt")
				}
				ch := e.fetchAsync(src.url, to)
				select {
				case <-src.reached:
				case <-time.After(time.Minute):
					t.Fatal("the fetch never reached its source")
				}
				deleteBucket(t, e.st, e.objs, "photos")
				if again {
					recreateAsBob(t, e.st, "photos")
				}
				close(src.release)
				var r fetchReply
				select {
				case r = <-ch:
				case <-time.After(time.Minute):
					t.Fatal("no answer once released")
				}
				if r.err != nil {
					t.Fatal(r.err)
				}
				if r.status != rs.StatusNoBucket || !strings.Contains(str(r.body, "error"), "no such bucket") {
					t.Fatalf("fetch: %d %v, want 631 no such bucket", r.status, r.body)
				}
				if keys := e.allKeys("photos"); len(keys) != 0 {
					t.Fatalf("the fetch left %q under the name", keys)
				}
			})
		}
	}
}

// stopAtPutEnd runs hook when a Put of a key (not a temporary) has read
// its file to the end (past the fetch's check), before the store commits.
type stopAtPutEnd struct {
	rs.Objects
	hook func()
}

func (s stopAtPutEnd) Put(ctx context.Context, bucket, key string, r io.Reader, opts origin.PutOptions) (origin.Object, error) {
	if !rs.ReservedKey(key) {
		r = &atEnd{r: r, hook: s.hook}
	}
	return s.Objects.Put(ctx, bucket, key, r, opts)
}

// atEnd calls hook once r ends, before answering io.EOF.
type atEnd struct {
	r    io.Reader
	hook func()
	once sync.Once
}

func (a *atEnd) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err == io.EOF {
		a.once.Do(a.hook)
	}
	return n, err
}

// A bucket deleted (and created again by another account) between the
// check at the file's end and the store's commit: the fetch removes the
// object it stored and answers 631.
func TestFetchIntoABucketDeletedAtItsCommit(t *testing.T) {
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "fetched body")
	}))
	defer src.Close()
	for _, keyed := range []bool{true, false} {
		t.Run(map[bool]string{true: "keyed", false: "keyless"}[keyed], func(t *testing.T) {
			var st store.Store
			e := newEnv(t, func(c *rs.Config) {
				c.AllowPrivateFetch = true
				st = c.Store
				c.Objects = stopAtPutEnd{Objects: c.Objects, hook: func() {
					if err := st.Delete(context.Background(), store.BucketKey("photos")); err != nil {
						t.Error(err)
					}
					recreateAsBob(t, st, "photos")
				}}
			})
			to := enc("photos")
			if keyed {
				to = entry("photos", "f.txt")
			}
			r := <-e.fetchAsync(src.URL+"/f.txt", to)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.status != rs.StatusNoBucket {
				t.Fatalf("fetch: %d %v, want 631", r.status, r.body)
			}
			if keys := e.allKeys("photos"); len(keys) != 0 {
				t.Fatalf("the fetch left %q in bob's bucket", keys)
			}
		})
	}
}
