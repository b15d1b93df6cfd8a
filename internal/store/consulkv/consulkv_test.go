package consulkv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/consulkv"
	"github.com/doraproject/dora/internal/store/storetest"
)

var seq atomic.Int64

func open(t *testing.T, c *agenttest.Consul) *consulkv.Store {
	t.Helper()
	s, err := consulkv.New(consulkv.Config{
		Address:    c.Addr,
		Prefix:     fmt.Sprintf("test-%d", seq.Add(1)), // no trailing slash: added
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestContract(t *testing.T) {
	c := agenttest.StartConsul(t)
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, c) })
}

func TestPrefixesAreIsolated(t *testing.T) {
	c := agenttest.StartConsul(t)
	ctx := context.Background()
	a, b := open(t, c), open(t, c)
	if _, err := a.Put(ctx, "k", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("other prefix sees the key: %v", err)
	}
	kvs, err := b.List(ctx, "")
	if err != nil || len(kvs) != 0 {
		t.Fatalf("List of the other prefix = %v, %v", kvs, err)
	}
	kvs, err = a.List(ctx, "")
	if err != nil || len(kvs) != 1 || kvs[0].Key != "k" {
		t.Fatalf("List = %+v, %v; want just k (without the root prefix)", kvs, err)
	}
}

func TestTooManyOps(t *testing.T) {
	c := agenttest.StartConsul(t)
	s := open(t, c)
	ops := make([]store.Op, consulkv.MaxTxnOps+1)
	for i := range ops {
		ops[i] = store.Op{Kind: store.OpPut, Key: fmt.Sprintf("k/%d", i), Value: []byte("v")}
	}
	err := s.Txn(context.Background(), ops)
	if !errors.Is(err, consulkv.ErrTooManyOps) {
		t.Fatalf("Txn of %d ops: %v, want ErrTooManyOps", len(ops), err)
	}
	if kvs, _ := s.List(context.Background(), "k/"); len(kvs) != 0 {
		t.Fatalf("%d keys written by a refused txn", len(kvs))
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []consulkv.Config{
		{},
		{Address: "127.0.0.1:8500", Prefix: "/abs"},
		{Address: "127.0.0.1:8500", Prefix: "bad\xff"},
	}
	for _, cfg := range cases {
		if _, err := consulkv.New(cfg); !errors.Is(err, consulkv.ErrInvalid) {
			t.Errorf("New(%+v) = %v, want ErrInvalid", cfg, err)
		}
	}
	s, err := consulkv.New(consulkv.Config{Address: "http://127.0.0.1:8500/"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Prefix() != consulkv.DefaultPrefix {
		t.Fatalf("default prefix %q", s.Prefix())
	}
}

// An outage: requests fail (without hanging) while Consul is down, the
// watch survives it and, as the dev agent comes back empty with a lower
// index, delivers the new state.
func TestOutage(t *testing.T) {
	c := agenttest.StartConsul(t)
	s := open(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 20 { // raise the index well above a fresh agent's
		if _, err := s.Put(ctx, fmt.Sprintf("w/k%d", i), []byte("before")); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := s.Watch(ctx, "w/")
	if err != nil {
		t.Fatal(err)
	}
	waitLen(t, ch, 20)

	c.Stop()
	if _, err := s.Put(ctx, "x", []byte("v")); err == nil || errors.Is(err, store.ErrConflict) {
		t.Fatalf("Put while Consul is down: %v, want a connection error", err)
	}
	if _, err := s.Get(ctx, "x"); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get while Consul is down: %v, want a connection error", err)
	}
	c.Start()

	// -dev lost everything; write one key and expect exactly it.
	if _, err := s.Put(ctx, "w/after", []byte("after")); err != nil {
		t.Fatalf("Put after restart: %v", err)
	}
	deadline := time.After(storetest.WatchDeadline)
	for {
		select {
		case kvs, ok := <-ch:
			if !ok {
				t.Fatal("watch closed during the outage")
			}
			var keys []string
			for _, kv := range kvs {
				keys = append(keys, kv.Key)
			}
			if reflect.DeepEqual(keys, []string{"w/after"}) {
				return
			}
		case <-deadline:
			t.Fatal("watch did not deliver the state after the restart")
		}
	}
}

func waitLen(t *testing.T, ch <-chan []store.KV, n int) {
	t.Helper()
	deadline := time.After(storetest.WatchDeadline)
	for {
		select {
		case kvs := <-ch:
			if len(kvs) == n {
				return
			}
		case <-deadline:
			t.Fatalf("watch: no listing of %d keys", n)
		}
	}
}

// A blocking query whose connection goes silent (the agent hangs, the
// network drops the flow) must not stall the watch for good: each query
// is bounded by its wait time plus Consul's jitter and a margin, then
// retried on a new connection, so a change made meanwhile arrives.
func TestWatchSurvivesSilentConnection(t *testing.T) {
	c := agenttest.StartConsul(t)
	f := agenttest.StartFaultProxy(t, c.Addr)
	prefix := fmt.Sprintf("test-%d", seq.Add(1))
	s, err := consulkv.New(consulkv.Config{
		Address: f.Addr(), Prefix: prefix,
		WatchWait: time.Second, RequestTimeout: 2 * time.Second,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	direct, err := consulkv.New(consulkv.Config{Address: c.Addr, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { direct.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := direct.Put(ctx, "w/a", []byte("a")); err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(ctx, "w/")
	if err != nil {
		t.Fatal(err)
	}
	waitLen(t, ch, 1)
	f.Freeze()
	if _, err := direct.Put(ctx, "w/b", []byte("b")); err != nil {
		t.Fatal(err)
	}
	waitLen(t, ch, 2)
}

// An error answer with a huge body (a proxy's error page, a broken
// agent) must not be read whole into the error: the store's error (and
// so the log line and the memory behind it) stays small.
func TestHugeErrorBodyIsCapped(t *testing.T) {
	const huge = 32 << 20
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for sent := 0; sent < huge; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	s, err := consulkv.New(consulkv.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	_, err = s.Get(context.Background(), "k")
	if err == nil {
		t.Fatal("Get from a failing server succeeded")
	}
	if n := len(err.Error()); n > 1<<20 {
		t.Fatalf("Get's error is %d bytes: the server's error body was read whole", n)
	}
	_, err = s.Put(context.Background(), "k", []byte("v"))
	if err == nil {
		t.Fatal("Put to a failing server succeeded")
	}
	if n := len(err.Error()); n > 1<<20 {
		t.Fatalf("Put's error is %d bytes: the server's error body was read whole", n)
	}
}
