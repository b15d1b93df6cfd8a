package redis_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doraproject/dora/autoscaler/load"
	"github.com/doraproject/dora/autoscaler/load/loadtest"
	"github.com/doraproject/dora/autoscaler/load/redis"
	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/redisconn"
)

var seq atomic.Int64

func open(t *testing.T, addr string, retention time.Duration) *redis.Store {
	t.Helper()
	s, err := redis.New(redis.Config{Server: redisconn.Config{Addr: addr}, Prefix: fmt.Sprintf("test%d:", seq.Add(1)), Retention: retention})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestContract(t *testing.T) {
	r := agenttest.StartRedis(t)
	loadtest.Run(t, func(t *testing.T, retention time.Duration) load.Store {
		return open(t, r.Addr, retention)
	})
}

func TestConfig(t *testing.T) {
	bad := []redis.Config{
		{},
		{Server: redisconn.Config{URL: "http://not-redis"}},
		{Server: redisconn.Config{Addr: "127.0.0.1:6379"}, Retention: time.Millisecond},
	}
	for _, cfg := range bad {
		if _, err := redis.New(cfg); !errors.Is(err, redis.ErrInvalid) {
			t.Errorf("New(%+v) = %v, want ErrInvalid", cfg, err)
		}
	}
	s, err := redis.New(redis.Config{Server: redisconn.Config{URL: "redis://127.0.0.1:6379/2"}})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// bounded runs fn and fails the test if it does not return within limit:
// a hang detector, not a performance assertion (the limit is many times the
// configured timeouts).
func bounded(t *testing.T, what string, limit time.Duration, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("%s did not return within %v", what, limit)
		return nil
	}
}

// Redis goes away: Record and Averages fail without hanging, then work
// again once Redis is back.
func TestOutage(t *testing.T) {
	r := agenttest.StartRedis(t)
	s := open(t, r.Addr, time.Minute)
	k := load.Key{Ufop: "outage", Version: "1", Region: "z0"}
	ctx := context.Background()
	sample := func() []load.Sample {
		return []load.Sample{{Key: k, Time: time.Now().Add(-time.Second), Concurrency: 2}}
	}
	if err := s.Record(ctx, sample()); err != nil {
		t.Fatalf("Record before the outage: %v", err)
	}

	r.Stop()
	for i := range 3 { // the first call may find a pooled connection
		err := bounded(t, "Record while Redis is down", 10*time.Second, func() error { return s.Record(ctx, sample()) })
		if err == nil {
			t.Fatalf("Record %d while Redis is down succeeded", i)
		}
	}
	err := bounded(t, "Averages while Redis is down", 10*time.Second, func() error {
		_, err := s.Averages(ctx, k, time.Now(), time.Minute, 6*time.Second)
		return err
	})
	if err == nil {
		t.Fatal("Averages while Redis is down succeeded")
	}

	r.Start() // comes back empty
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := s.Record(ctx, sample())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Record still failing after Redis came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	a, err := s.Averages(ctx, k, time.Now(), time.Minute, 6*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if a.StableSeconds == 0 {
		t.Fatalf("no data after Redis came back: %+v", a)
	}
}

// openBench starts a Redis for benchmark b and opens a Store on it with
// the default settings, closed when b ends.
func openBench(b *testing.B) *redis.Store {
	b.Helper()
	r := agenttest.StartRedis(b)
	s, err := redis.New(redis.Config{Server: redisconn.Config{Addr: r.Addr}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func BenchmarkRecord(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	samples := make([]load.Sample, 50)
	for i := range samples {
		samples[i] = load.Sample{Key: load.Key{Ufop: fmt.Sprintf("u%d", i), Version: "1", Region: "z0"}, Time: time.Now(), Concurrency: 1}
	}
	for b.Loop() {
		if err := s.Record(ctx, samples); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAverages(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	k := load.Key{Ufop: "u", Version: "1", Region: "z0"}
	now := time.Now()
	for i := range 60 {
		if err := s.Record(ctx, []load.Sample{{Key: k, Time: now.Add(-time.Duration(i) * time.Second), Concurrency: 1}}); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if _, err := s.Averages(ctx, k, now, time.Minute, 6*time.Second); err != nil {
			b.Fatal(err)
		}
	}
}

// A server that accepts connections but never answers (a hung Redis, a
// black-holed network) makes Record fail on the read timeout, not hang.
func TestUnresponsiveServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // hold it open, say nothing
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-accepted
		for _, c := range conns {
			c.Close()
		}
	})
	s, err := redis.New(redis.Config{Server: redisconn.Config{Addr: ln.Addr().String(), ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := load.Key{Ufop: "hung", Version: "1", Region: "z0"}
	err = bounded(t, "Record against a silent server", 10*time.Second, func() error {
		return s.Record(context.Background(), []load.Sample{{Key: k, Time: time.Now(), Concurrency: 1}})
	})
	if err == nil {
		t.Fatal("Record against a silent server succeeded")
	}
}

// TestWake: a wake-up published by one store reaches the listener of
// another on the same Redis; the channel closes when the context ends.
func TestWake(t *testing.T) {
	r := agenttest.StartRedis(t)
	prefix := fmt.Sprintf("wake%d:", seq.Add(1))
	two := make([]*redis.Store, 2)
	for i := range two {
		s, err := redis.New(redis.Config{Server: redisconn.Config{Addr: r.Addr}, Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		two[i] = s
	}
	router, scaler := two[0], two[1]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wakes := scaler.Wakes(ctx)
	k := load.Key{Ufop: "u", Version: "v1", Region: "z0"}
	// The subscription is asynchronous: publish until it is heard.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := router.Wake(context.Background(), k); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-wakes:
			if got != k {
				t.Fatalf("got %+v", got)
			}
			cancel()
			for range wakes {
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no wake-up heard")
		}
	}
}
