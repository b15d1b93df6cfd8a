// Package storetest is the contract suite every store.Store implementation
// must pass. An implementation's own test calls Run with a function that
// opens a fresh, empty store for each subtest:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := bolt.Open(filepath.Join(t.TempDir(), "meta.db"))
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
//
// Run closes every store it opened when the subtest ends (closing twice must
// be harmless). The suite never sleeps to synchronise: watch assertions poll
// the channel until a deadline.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/store"
)

// WatchDeadline bounds how long the suite waits for a watch to deliver an
// expected listing or to close its channel. It is a failure bound, not a
// timing assertion: a correct store delivers far sooner.
const WatchDeadline = 20 * time.Second

// LargeValueBytes is the size of the large value the suite stores.
const LargeValueBytes = 1 << 20

// TxnOps is the number of operations of the largest transaction the suite
// runs; every implementation must accept at least that many.
const TxnOps = 64

// Run runs the contract suite. open must return a new, empty store each
// time it is called.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"GetMissing", testGetMissing},
		{"PutGet", testPutGet},
		{"VersionsIncrease", testVersionsIncrease},
		{"Delete", testDelete},
		{"CAS", testCAS},
		{"List", testList},
		{"ListVersions", testListVersions},
		{"Txn", testTxn},
		{"TxnFailedCheckWritesNothing", testTxnFailedCheck},
		{"TxnLarge", testTxnLarge},
		{"TxnInvalid", testTxnInvalid},
		{"Watch", testWatch},
		{"WatchSlowReaderGetsLatest", testWatchCoalesce},
		{"WatchEndsOnCancel", testWatchCancel},
		{"ConcurrentCAS", testConcurrentCAS},
		{"LargeValue", testLargeValue},
		{"UTF8Keys", testUTF8Keys},
		{"InvalidKeys", testInvalidKeys},
		{"CancelledContext", testCancelledContext},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { _ = s.Close() })
			tc.fn(t, s)
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*WatchDeadline)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t *testing.T, s store.Store, key, value string) uint64 {
	t.Helper()
	v, err := s.Put(ctxT(t), key, []byte(value))
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	if v == 0 {
		t.Fatalf("Put(%q) returned version 0", key)
	}
	return v
}

func mustGet(t *testing.T, s store.Store, key string) store.KV {
	t.Helper()
	kv, err := s.Get(ctxT(t), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return kv
}

func wantMissing(t *testing.T, s store.Store, key string) {
	t.Helper()
	if kv, err := s.Get(ctxT(t), key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(%q) = %+v, %v; want ErrNotFound", key, kv, err)
	}
}

func wantValue(t *testing.T, s store.Store, key, value string) store.KV {
	t.Helper()
	kv := mustGet(t, s, key)
	if string(kv.Value) != value {
		t.Fatalf("Get(%q) value = %q, want %q", key, kv.Value, value)
	}
	if kv.Key != key {
		t.Fatalf("Get(%q) key = %q", key, kv.Key)
	}
	return kv
}

// listing renders a listing as "key=value" strings for comparison.
func listing(kvs []store.KV) []string {
	out := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, kv.Key+"="+string(kv.Value))
	}
	return out
}

func testGetMissing(t *testing.T, s store.Store) {
	wantMissing(t, s, "nope")
	wantMissing(t, s, "a/b/c")
}

func testPutGet(t *testing.T, s store.Store) {
	v := mustPut(t, s, "ufops/grepd", `{"name":"grepd"}`)
	kv := wantValue(t, s, "ufops/grepd", `{"name":"grepd"}`)
	if kv.Version != v {
		t.Fatalf("Get version = %d, Put returned %d", kv.Version, v)
	}
	// An empty value is a value, not a missing key.
	mustPut(t, s, "empty", "")
	kv = wantValue(t, s, "empty", "")
	if kv.Version == 0 {
		t.Fatal("empty value has version 0")
	}
	// The returned value is the caller's to keep: changing it does not
	// change the store.
	kv = mustGet(t, s, "ufops/grepd")
	if len(kv.Value) > 0 {
		kv.Value[0] = 'X'
	}
	wantValue(t, s, "ufops/grepd", `{"name":"grepd"}`)
	// Neither does changing the slice given to Put.
	buf := []byte("hello")
	if _, err := s.Put(ctxT(t), "buf", buf); err != nil {
		t.Fatal(err)
	}
	buf[0] = 'J'
	wantValue(t, s, "buf", "hello")
}

func testVersionsIncrease(t *testing.T, s store.Store) {
	var last uint64
	for i := range 5 {
		v := mustPut(t, s, "k", fmt.Sprint(i))
		if v <= last {
			t.Fatalf("write %d: version %d not above %d", i, v, last)
		}
		last = v
		// Writes to other keys do not matter for this key's order.
		mustPut(t, s, fmt.Sprintf("other/%d", i), "x")
	}
	v, err := s.CAS(ctxT(t), "k", []byte("cas"), last)
	if err != nil {
		t.Fatalf("CAS at current version: %v", err)
	}
	if v <= last {
		t.Fatalf("CAS version %d not above %d", v, last)
	}
	last = v
	if err := s.Delete(ctxT(t), "k"); err != nil {
		t.Fatal(err)
	}
	// A re-created key never reuses an old version.
	v = mustPut(t, s, "k", "again")
	if v <= last {
		t.Fatalf("version after delete+put %d not above %d", v, last)
	}
}

func testDelete(t *testing.T, s store.Store) {
	mustPut(t, s, "a", "1")
	mustPut(t, s, "ab", "2")
	if err := s.Delete(ctxT(t), "a"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantMissing(t, s, "a")
	wantValue(t, s, "ab", "2")
	if err := s.Delete(ctxT(t), "a"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	if err := s.Delete(ctxT(t), "never/existed"); err != nil {
		t.Fatalf("Delete of a never-written key: %v", err)
	}
}

func testCAS(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	v1, err := s.CAS(ctx, "c", []byte("one"), 0)
	if err != nil {
		t.Fatalf("create-only CAS on a missing key: %v", err)
	}
	if v1 == 0 {
		t.Fatal("CAS returned version 0")
	}
	kv := wantValue(t, s, "c", "one")
	if kv.Version != v1 {
		t.Fatalf("Get version %d, CAS returned %d", kv.Version, v1)
	}

	cases := []struct {
		name    string
		key     string
		version uint64
	}{
		{"create-only on existing key", "c", 0},
		{"stale version", "c", v1 - 1},
		{"future version", "c", v1 + 1000},
		{"version on missing key", "missing", v1},
	}
	for _, tc := range cases {
		if _, err := s.CAS(ctx, tc.key, []byte("bad"), tc.version); !errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: CAS(%q, version %d) err = %v, want ErrConflict", tc.name, tc.key, tc.version, err)
		}
	}
	wantValue(t, s, "c", "one")
	wantMissing(t, s, "missing")

	v2, err := s.CAS(ctx, "c", []byte("two"), v1)
	if err != nil {
		t.Fatalf("CAS at current version: %v", err)
	}
	if v2 <= v1 {
		t.Fatalf("CAS version %d not above %d", v2, v1)
	}
	wantValue(t, s, "c", "two")
	// The old version is now stale.
	if _, err := s.CAS(ctx, "c", []byte("three"), v1); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("CAS at the replaced version: %v, want ErrConflict", err)
	}
	wantValue(t, s, "c", "two")
}

func testList(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	// Written out of order on purpose.
	for _, k := range []string{"b/1", "a/2", "ab", "a/b/c", "a", "a/1", "a/10", "c"} {
		mustPut(t, s, k, "v-"+k)
	}
	cases := []struct {
		prefix string
		want   []string
	}{
		{"a/", []string{"a/1", "a/10", "a/2", "a/b/c"}},
		{"a/1", []string{"a/1", "a/10"}},
		{"a/b/", []string{"a/b/c"}},
		{"a", []string{"a", "a/1", "a/10", "a/2", "a/b/c", "ab"}},
		{"b/", []string{"b/1"}},
		{"", []string{"a", "a/1", "a/10", "a/2", "a/b/c", "ab", "b/1", "c"}},
		{"zzz/", nil},
		{"c/", nil},
	}
	for _, tc := range cases {
		kvs, err := s.List(ctx, tc.prefix)
		if err != nil {
			t.Fatalf("List(%q): %v", tc.prefix, err)
		}
		var got []string
		for _, kv := range kvs {
			got = append(got, kv.Key)
			if string(kv.Value) != "v-"+kv.Key {
				t.Errorf("List(%q): %q has value %q", tc.prefix, kv.Key, kv.Value)
			}
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("List(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}
}

func testListVersions(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	want := map[string]uint64{}
	for _, k := range []string{"p/x", "p/y", "p/z"} {
		want[k] = mustPut(t, s, k, k)
	}
	want["p/y"] = mustPut(t, s, "p/y", "p/y")
	kvs, err := s.List(ctx, "p/")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 3 {
		t.Fatalf("List = %v, want 3 keys", listing(kvs))
	}
	for _, kv := range kvs {
		if kv.Version != want[kv.Key] {
			t.Errorf("List: %q version %d, want %d", kv.Key, kv.Version, want[kv.Key])
		}
	}
}

func testTxn(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	vx := mustPut(t, s, "t/x", "x0")
	vdel := mustPut(t, s, "t/del", "d")
	mustPut(t, s, "t/gone", "g")
	vcheck := mustPut(t, s, "t/check", "c")

	err := s.Txn(ctx, []store.Op{
		{Kind: store.OpCheck, Key: "t/check", Version: vcheck},
		{Kind: store.OpCheck, Key: "t/absent", Version: 0},
		{Kind: store.OpPut, Key: "t/new", Value: []byte("n"), CreateOnly: true},
		{Kind: store.OpPut, Key: "t/x", Value: []byte("x1"), Version: vx},
		{Kind: store.OpPut, Key: "t/plain", Value: []byte("p")},
		{Kind: store.OpDelete, Key: "t/del", Version: vdel},
		{Kind: store.OpDelete, Key: "t/gone"},
		{Kind: store.OpDelete, Key: "t/never"},
	})
	if err != nil {
		t.Fatalf("Txn: %v", err)
	}
	wantValue(t, s, "t/new", "n")
	x := wantValue(t, s, "t/x", "x1")
	if x.Version <= vx {
		t.Errorf("t/x version %d not above %d after Txn", x.Version, vx)
	}
	wantValue(t, s, "t/plain", "p")
	wantValue(t, s, "t/check", "c")
	wantMissing(t, s, "t/del")
	wantMissing(t, s, "t/gone")
	wantMissing(t, s, "t/absent")

	if err := s.Txn(ctx, nil); err != nil {
		t.Fatalf("empty Txn: %v", err)
	}
}

func testTxnFailedCheck(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	va := mustPut(t, s, "f/a", "a0")
	vb := mustPut(t, s, "f/b", "b0")
	mustPut(t, s, "f/exists", "e")

	// Each case has a failing condition somewhere (first, middle or last)
	// among writes that would succeed on their own.
	writes := []store.Op{
		{Kind: store.OpPut, Key: "f/a", Value: []byte("a1"), Version: va},
		{Kind: store.OpPut, Key: "f/new", Value: []byte("n")},
		{Kind: store.OpDelete, Key: "f/b"},
	}
	failing := []struct {
		name string
		op   store.Op
	}{
		{"check stale version", store.Op{Kind: store.OpCheck, Key: "f/b", Version: vb + 1000}},
		{"check missing key at a version", store.Op{Kind: store.OpCheck, Key: "f/absent", Version: va}},
		{"check not-exists on existing key", store.Op{Kind: store.OpCheck, Key: "f/exists"}},
		{"create-only put on existing key", store.Op{Kind: store.OpPut, Key: "f/exists", Value: []byte("x"), CreateOnly: true}},
		{"put at stale version", store.Op{Kind: store.OpPut, Key: "f/exists", Value: []byte("x"), Version: vb + 1000}},
		{"delete at stale version", store.Op{Kind: store.OpDelete, Key: "f/exists", Version: vb + 1000}},
		{"delete at a version of a missing key", store.Op{Kind: store.OpDelete, Key: "f/absent", Version: va}},
	}
	for _, tc := range failing {
		for pos := 0; pos <= len(writes); pos++ {
			ops := append([]store.Op{}, writes[:pos]...)
			ops = append(ops, tc.op)
			ops = append(ops, writes[pos:]...)
			if err := s.Txn(ctx, ops); !errors.Is(err, store.ErrConflict) {
				t.Errorf("%s at position %d: Txn err = %v, want ErrConflict", tc.name, pos, err)
			}
			a := wantValue(t, s, "f/a", "a0")
			if a.Version != va {
				t.Errorf("%s at position %d: f/a version changed %d -> %d", tc.name, pos, va, a.Version)
			}
			wantValue(t, s, "f/b", "b0")
			wantValue(t, s, "f/exists", "e")
			wantMissing(t, s, "f/new")
			wantMissing(t, s, "f/absent")
		}
	}
}

func testTxnLarge(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	ops := make([]store.Op, 0, TxnOps)
	for i := range TxnOps {
		ops = append(ops, store.Op{Kind: store.OpPut, Key: fmt.Sprintf("big/%03d", i), Value: []byte{byte(i)}, CreateOnly: true})
	}
	if err := s.Txn(ctx, ops); err != nil {
		t.Fatalf("Txn of %d ops: %v", TxnOps, err)
	}
	kvs, err := s.List(ctx, "big/")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != TxnOps {
		t.Fatalf("List after Txn: %d keys, want %d", len(kvs), TxnOps)
	}
}

func testTxnInvalid(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	cases := []struct {
		name string
		op   store.Op
	}{
		{"unknown kind", store.Op{Kind: store.OpKind(99), Key: "i/k"}},
		{"empty key", store.Op{Kind: store.OpPut, Key: "", Value: []byte("v")}},
		{"create-only with a version", store.Op{Kind: store.OpPut, Key: "i/k", Value: []byte("v"), Version: 3, CreateOnly: true}},
	}
	for _, tc := range cases {
		ops := []store.Op{{Kind: store.OpPut, Key: "i/ok", Value: []byte("ok")}, tc.op}
		err := s.Txn(ctx, ops)
		if err == nil {
			t.Errorf("%s: Txn succeeded, want an error", tc.name)
		} else if errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: Txn err = %v; an invalid op is not a conflict", tc.name, err)
		}
		wantMissing(t, s, "i/ok")
	}
}

// next receives from ch until deadline; ok is false when the channel was
// closed.
func next(t *testing.T, ch <-chan []store.KV, deadline <-chan time.Time) ([]store.KV, bool) {
	t.Helper()
	select {
	case kvs, ok := <-ch:
		return kvs, ok
	case <-deadline:
		t.Fatalf("watch: nothing received within %v", WatchDeadline)
		return nil, false
	}
}

// waitFor reads listings until one equals want ("key=value" strings).
func waitFor(t *testing.T, ch <-chan []store.KV, want []string) {
	t.Helper()
	deadline := time.After(WatchDeadline)
	var last []string
	for {
		select {
		case kvs, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed while waiting for %q (last %q)", want, last)
			}
			last = listing(kvs)
			if len(last) == 0 && len(want) == 0 || reflect.DeepEqual(last, want) {
				return
			}
		case <-deadline:
			t.Fatalf("watch: no listing %q within %v; last %q", want, WatchDeadline, last)
		}
	}
}

func testWatch(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	mustPut(t, s, "w/1", "one")
	mustPut(t, s, "wx", "outside")
	ch, err := s.Watch(ctx, "w/")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	// The initial listing comes at once, without any change.
	kvs, ok := next(t, ch, time.After(WatchDeadline))
	if !ok {
		t.Fatal("watch closed before the initial listing")
	}
	if got := listing(kvs); !reflect.DeepEqual(got, []string{"w/1=one"}) {
		t.Fatalf("initial listing %q, want [w/1=one]", got)
	}
	if len(kvs) == 1 && kvs[0].Version == 0 {
		t.Error("watch listing has version 0")
	}

	mustPut(t, s, "w/2", "two")
	waitFor(t, ch, []string{"w/1=one", "w/2=two"})
	mustPut(t, s, "w/1", "uno")
	waitFor(t, ch, []string{"w/1=uno", "w/2=two"})
	if err := s.Delete(ctx, "w/1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ch, []string{"w/2=two"})
	if err := s.Txn(ctx, []store.Op{
		{Kind: store.OpPut, Key: "w/3", Value: []byte("three")},
		{Kind: store.OpDelete, Key: "w/2"},
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ch, []string{"w/3=three"})
	if err := s.Delete(ctx, "w/3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ch, nil)

	// A watch of an empty prefix starts with an empty listing.
	ch2, err := s.Watch(ctx, "nothing/")
	if err != nil {
		t.Fatal(err)
	}
	kvs, ok = next(t, ch2, time.After(WatchDeadline))
	if !ok || len(kvs) != 0 {
		t.Fatalf("initial listing of an empty prefix: %q, open %v", listing(kvs), ok)
	}
}

func testWatchCoalesce(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	ch, err := s.Watch(ctx, "slow/")
	if err != nil {
		t.Fatal(err)
	}
	// Do not read while many changes happen: the watcher must neither
	// block the writers nor lose the final state.
	const n = 50
	for i := range n {
		mustPut(t, s, "slow/counter", fmt.Sprint(i))
	}
	mustPut(t, s, "slow/done", "yes")
	waitFor(t, ch, []string{fmt.Sprintf("slow/counter=%d", n-1), "slow/done=yes"})
}

func testWatchCancel(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(ctxT(t))
	ch, err := s.Watch(ctx, "c/")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := next(t, ch, time.After(WatchDeadline)); !ok {
		t.Fatal("watch closed before the initial listing")
	}
	cancel()
	deadline := time.After(WatchDeadline)
	for {
		if _, ok := next(t, ch, deadline); !ok {
			break
		}
	}
	// The store still works after a watcher went away.
	mustPut(t, s, "c/after", "x")
	wantValue(t, s, "c/after", "x")

	// A watch started with an already cancelled context ends too.
	done, stop := context.WithCancel(context.Background())
	stop()
	ch, err = s.Watch(done, "c/")
	if err != nil {
		return // refusing is fine as well
	}
	deadline = time.After(WatchDeadline)
	for {
		if _, ok := next(t, ch, deadline); !ok {
			break
		}
	}
}

func testConcurrentCAS(t *testing.T, s store.Store) {
	const (
		workers = 8
		each    = 10
	)
	ctx := ctxT(t)
	if _, err := s.CAS(ctx, "counter", []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < each; {
				kv, err := s.Get(ctx, "counter")
				if err != nil {
					errs <- err
					return
				}
				var n int
				if _, err := fmt.Sscan(string(kv.Value), &n); err != nil {
					errs <- fmt.Errorf("counter %q: %w", kv.Value, err)
					return
				}
				_, err = s.CAS(ctx, "counter", []byte(fmt.Sprint(n+1)), kv.Version)
				switch {
				case err == nil:
					done++
				case errors.Is(err, store.ErrConflict):
					// lost the race: read again
				default:
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("worker: %v", err)
	}
	wantValue(t, s, "counter", fmt.Sprint(workers*each))
}

func testLargeValue(t *testing.T, s store.Store) {
	big := bytes.Repeat([]byte("0123456789abcdef"), LargeValueBytes/16)
	big[0], big[len(big)-1] = 0, 0xff // binary, not just text
	if _, err := s.Put(ctxT(t), "large", big); err != nil {
		t.Fatalf("Put of %d bytes: %v", len(big), err)
	}
	kv := mustGet(t, s, "large")
	if !bytes.Equal(kv.Value, big) {
		t.Fatalf("large value differs: got %d bytes", len(kv.Value))
	}
	kvs, err := s.List(ctxT(t), "lar")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 1 || !bytes.Equal(kvs[0].Value, big) {
		t.Fatalf("List of the large value: %d entries", len(kvs))
	}
}

func testUTF8Keys(t *testing.T, s store.Store) {
	keys := []string{
		"buckets/照片",
		"buckets/照片/子",
		"domains/bücher.example",
		"ufops/emoji-😀",
		"with space/and-dash_under.dot",
		"percent%20literal",
		"plus+sign",
	}
	for _, k := range keys {
		mustPut(t, s, k, "v:"+k)
	}
	for _, k := range keys {
		wantValue(t, s, k, "v:"+k)
	}
	kvs, err := s.List(ctxT(t), "buckets/照片")
	if err != nil {
		t.Fatal(err)
	}
	if got := listing(kvs); !reflect.DeepEqual(got, []string{"buckets/照片=v:buckets/照片", "buckets/照片/子=v:buckets/照片/子"}) {
		t.Fatalf("List(buckets/照片) = %q", got)
	}
	for _, k := range keys {
		if err := s.Delete(ctxT(t), k); err != nil {
			t.Fatalf("Delete(%q): %v", k, err)
		}
		wantMissing(t, s, k)
	}
}

func testInvalidKeys(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	bad := []string{"", "/leading", "bad\xffutf8", strings.Repeat("k", 4096)}
	for _, k := range bad {
		short := k
		if len(short) > 20 {
			short = short[:20] + "…"
		}
		if _, err := s.Put(ctx, k, []byte("v")); err == nil {
			t.Errorf("Put(%q) succeeded, want an error", short)
		}
		if _, err := s.CAS(ctx, k, []byte("v"), 0); err == nil {
			t.Errorf("CAS(%q) succeeded, want an error", short)
		}
		if _, err := s.Get(ctx, k); err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(%q) err = %v, want a validation error", short, err)
		}
	}
	kvs, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 0 {
		t.Fatalf("invalid keys were stored: %q", listing(kvs))
	}
}

func testCancelledContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Put(ctx, "cc", []byte("v")); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context: %v, want context.Canceled", err)
	}
	if _, err := s.Get(ctx, "cc"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled context: %v, want context.Canceled", err)
	}
	if err := s.Txn(ctx, []store.Op{{Kind: store.OpPut, Key: "cc", Value: []byte("v")}}); !errors.Is(err, context.Canceled) {
		t.Errorf("Txn with a cancelled context: %v, want context.Canceled", err)
	}
	wantMissing(t, s, "cc")
}

func testClosed(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	mustPut(t, s, "k", "v")
	ch, err := s.Watch(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Watches end when the store closes.
	deadline := time.After(WatchDeadline)
	for {
		if _, ok := next(t, ch, deadline); !ok {
			break
		}
	}
	if _, err := s.Get(ctx, "k"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Put(ctx, "k", []byte("v")); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Put after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Watch(ctx, ""); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Watch after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
