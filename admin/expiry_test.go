package admin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
)

// offsetClock is an admin clock that tests move forward.
type offsetClock struct{ offset atomic.Int64 }

func (c *offsetClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *offsetClock) advance(d time.Duration) { c.offset.Add(int64(d)) }
func withClock(c *offsetClock) envOption       { return func(cfg *Config) { cfg.Now = c.now } }
func withExpiry(d time.Duration) envOption     { return func(cfg *Config) { cfg.ExpiryInterval = d } }
func withLeader(el Elector) envOption          { return func(cfg *Config) { cfg.Leader = el } }
func rsEntry(bucket, key string) string {
	return base64.URLEncoding.EncodeToString([]byte(bucket + ":" + key))
}
func (e *env) putObject(a dora.Account, b, k, v string) {
	e.must(http.StatusOK, a, "PUT", "/v1/objects/"+b+"/"+k, []byte(v), nil)
}

// rsServer serves the Qiniu bucket APIs (admin/rs) on e's store and
// objects, on a real clock, in front of the admin API as dorad admin does.
func (e *env) rsServer() *httptest.Server {
	h, err := rs.New(rs.Config{Store: e.st, Objects: e.objs})
	if err != nil {
		e.t.Fatal(err)
	}
	ts := httptest.NewServer(h.Wrap(e.srv.Handler()))
	e.t.Cleanup(ts.Close)
	return ts
}

// rsCall POSTs an rs operation signed with a's keys: its status and reply.
func rsCall(t *testing.T, ts *httptest.Server, a dora.Account, path string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest("POST", ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", auth.ContentTypeForm)
	auth.SignRequest(req, a.AccessKey, a.SecretKey, nil, time.Now())
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var v map[string]any
	_ = json.Unmarshal(b, &v)
	return res.StatusCode, v
}

func mustRS(t *testing.T, ts *httptest.Server, a dora.Account, path string) map[string]any {
	t.Helper()
	status, v := rsCall(t, ts, a, path)
	if status != http.StatusOK {
		t.Fatalf("%s: %d %v", path, status, v)
	}
	return v
}

// TestExpireDeleteAfterDays: once the admin's clock passes an object's
// expiration (deleteAfterDays 1), a sweep deletes it and its record (rs
// stat 612), counted in dora_admin_objects_expired_total; an object
// overwritten after its lifecycle was set survives, as does one not yet
// due.
func TestExpireDeleteAfterDays(t *testing.T) {
	clock := &offsetClock{}
	e := newEnv(t, withClock(clock))
	alice := e.user("alice", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "photos"}, nil)
	ts := e.rsServer()
	for _, k := range []string{"old.txt", "rewritten.txt", "later.txt"} {
		e.putObject(alice, "photos", k, "first "+k)
	}
	mustRS(t, ts, alice, "/deleteAfterDays/"+rsEntry("photos", "old.txt")+"/1")
	mustRS(t, ts, alice, "/deleteAfterDays/"+rsEntry("photos", "rewritten.txt")+"/1")
	mustRS(t, ts, alice, "/deleteAfterDays/"+rsEntry("photos", "later.txt")+"/3")
	st := mustRS(t, ts, alice, "/stat/"+rsEntry("photos", "old.txt"))
	if exp, _ := st["expiration"].(float64); exp == 0 || time.Unix(int64(exp), 0).Sub(time.Now()) > 25*time.Hour {
		t.Fatalf("stat: %v, want an expiration within a day", st)
	}
	e.putObject(alice, "photos", "rewritten.txt", "second content") // the admin's PUT keeps the record

	ctx := context.Background()
	if res, err := e.srv.sweepExpired(ctx); err != nil || res.Expired != 0 {
		t.Fatalf("sweep before due: %+v %v", res, err)
	}
	clock.advance(25 * time.Hour)
	res, err := e.srv.sweepExpired(ctx)
	if err != nil || res.Expired != 1 {
		t.Fatalf("sweep after due: %+v %v, want 1 expired", res, err)
	}
	if status, v := rsCall(t, ts, alice, "/stat/"+rsEntry("photos", "old.txt")); status != rs.StatusNoEntry {
		t.Fatalf("stat of the expired object: %d %v, want 612", status, v)
	}
	if _, err := e.st.Get(ctx, store.ObjectMetaKey("photos", "old.txt")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("record of the expired object: %v", err)
	}
	if st := mustRS(t, ts, alice, "/stat/"+rsEntry("photos", "rewritten.txt")); st["expiration"] != nil {
		t.Fatalf("the overwritten object: %v, want no expiration", st)
	}
	if _, ok := mustRS(t, ts, alice, "/stat/"+rsEntry("photos", "later.txt"))["expiration"]; !ok {
		t.Fatal("later.txt lost its lifecycle")
	}
	if got := counterValue(t, e.srv.expired); got != 1 {
		t.Fatalf("dora_admin_objects_expired_total = %v, want 1", got)
	}
	clock.advance(48 * time.Hour)
	if res, err := e.srv.sweepExpired(ctx); err != nil || res.Expired != 1 {
		t.Fatalf("sweep three days on: %+v %v, want later.txt expired", res, err)
	}
	if st := mustRS(t, ts, alice, "/stat/"+rsEntry("photos", "rewritten.txt")); st["hash"] == nil {
		t.Fatalf("the overwritten object is gone: %v", st)
	}
}

// TestOnlyTheLeaderExpires: of two admins sharing the store and the
// objects, only the one leading sweeps: the object falls due, the leader
// deletes it, the follower counts nothing; a follower that becomes leader
// sweeps at the start of its term.
func TestOnlyTheLeaderExpires(t *testing.T) {
	clock := &offsetClock{}
	el1, el2 := &switchElector{}, &switchElector{}
	e := newEnv(t, withClock(clock), withExpiry(20*time.Millisecond), withLeader(el1))
	alice := e.user("alice", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "photos"}, nil)
	ts := e.rsServer()
	srv2, err := New(Config{Store: e.st, Runtime: e.rt, Objects: e.objs, Now: clock.now, Leader: el2,
		ExpiryInterval: 20 * time.Millisecond, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv2.Run(ctx) }()
	defer func() { cancel(); <-done }()
	defer e.runLoops()()
	waitUntil(t, "both admins to campaign", func() bool { return el1.ready() && el2.ready() })
	el2.lead()
	waitUntil(t, "admin 2 to lead", srv2.Leading)

	for i, k := range []string{"a.txt", "b.txt"} {
		e.putObject(alice, "photos", k, "content "+k)
		mustRS(t, ts, alice, "/deleteAfterDays/"+rsEntry("photos", k)+"/"+strconv.Itoa(i+1))
	}
	clock.advance(25 * time.Hour)
	waitUntil(t, "the leader to expire a.txt", func() bool {
		status, _ := rsCall(t, ts, alice, "/stat/"+rsEntry("photos", "a.txt"))
		return status == rs.StatusNoEntry
	})
	time.Sleep(100 * time.Millisecond) // several intervals
	if got1, got2 := counterValue(t, e.srv.expired), counterValue(t, srv2.expired); got1 != 0 || got2 != 1 {
		t.Fatalf("expired: follower %v, leader %v; want 0 and 1", got1, got2)
	}
	// Leadership moves; b.txt falls due: the new leader deletes it.
	el2.follow()
	el1.lead()
	waitUntil(t, "admin 1 to lead", e.srv.Leading)
	clock.advance(24 * time.Hour)
	waitUntil(t, "the new leader to expire b.txt", func() bool { return counterValue(t, e.srv.expired) == 1 })
	if status, v := rsCall(t, ts, alice, "/stat/"+rsEntry("photos", "b.txt")); status != rs.StatusNoEntry {
		t.Fatalf("stat b.txt: %d %v", status, v)
	}
	if got := counterValue(t, srv2.expired); got != 1 {
		t.Fatalf("the former leader expired %v objects after its term, want 1 in all", got)
	}
}

// failingStat is the objects store of an admin whose object store does
// not answer stats while down is set; it counts the stats asked.
type failingStat struct {
	ObjectStore
	down  atomic.Bool
	stats atomic.Int64
}

func (f *failingStat) Stat(ctx context.Context, bucket, key string) (origin.Object, error) {
	f.stats.Add(1)
	if f.down.Load() {
		return origin.Object{}, fmt.Errorf("stat %s/%s: %w", bucket, key, origin.ErrUnavailable)
	}
	return f.ObjectStore.Stat(ctx, bucket, key)
}

// TestExpiryWaitsOutAnUnreachableStore: while the object store does not
// answer, the leader's sweep stops at the first failure and the next one
// comes an ExpiryInterval later (no busy loop); once it answers, the due
// object is deleted.
func TestExpiryWaitsOutAnUnreachableStore(t *testing.T) {
	clock := &offsetClock{}
	objs := &failingStat{}
	e := newEnv(t, withClock(clock), withExpiry(100*time.Millisecond), func(c *Config) {
		objs.ObjectStore = c.Objects
		c.Objects = objs
	})
	alice := e.user("alice", 0)
	e.must(http.StatusCreated, alice, "POST", "/v1/buckets", map[string]any{"name": "photos"}, nil)
	ts := e.rsServer()
	for _, k := range []string{"a.txt", "b.txt", "c.txt"} {
		e.putObject(alice, "photos", k, "content "+k)
		mustRS(t, ts, alice, "/deleteAfterDays/"+rsEntry("photos", k)+"/1")
	}
	clock.advance(25 * time.Hour)
	objs.down.Store(true)
	objs.stats.Store(0)
	defer e.runLoops()()
	time.Sleep(550 * time.Millisecond)
	if n := objs.stats.Load(); n < 1 || n > 7 {
		t.Fatalf("%d stats in 550ms with a 100ms interval while the store is down, want one a sweep", n)
	}
	if got := counterValue(t, e.srv.expired); got != 0 {
		t.Fatalf("expired %v while the store is down", got)
	}
	objs.down.Store(false)
	waitUntil(t, "the objects to expire once the store answers", func() bool { return counterValue(t, e.srv.expired) == 3 })
	for _, k := range []string{"a.txt", "b.txt", "c.txt"} {
		if status, v := rsCall(t, ts, alice, "/stat/"+rsEntry("photos", k)); status != rs.StatusNoEntry {
			t.Fatalf("stat %s: %d %v", k, status, v)
		}
	}
}
