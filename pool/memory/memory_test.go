package memory

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/doraproject/dora/pool"
)

func set(ids ...string) []pool.Instance {
	out := []pool.Instance{}
	for _, id := range ids {
		out = append(out, pool.Instance{ID: id, Ufop: "grepd", Version: "v1", Region: "z0", Addr: "127.0.0.1:" + id})
	}
	return out
}

func ids(s []pool.Instance) string {
	out := ""
	for i, in := range s {
		if i > 0 {
			out += ","
		}
		out += in.ID
	}
	return "[" + out + "]"
}

// recv takes one value or fails after a generous deadline (a hang guard,
// not a timing assertion).
func recv(t *testing.T, ch <-chan []pool.Instance) []pool.Instance {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatal("channel closed, want a value")
		}
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no value within 10s")
	}
	return nil
}

func noValue(t *testing.T, ch <-chan []pool.Instance) {
	t.Helper()
	select {
	case v, ok := <-ch:
		t.Fatalf("unexpected value %v (open %v)", ids(v), ok)
	default:
	}
}

func TestWatchGetsCurrentSetAtOnce(t *testing.T) {
	tests := []struct {
		name      string
		published [][]pool.Instance
		want      string
	}{
		{name: "nothing published yet", want: "[]"},
		{name: "latest of several", published: [][]pool.Instance{set("1"), set("1", "2"), set("2")}, want: "[2]"},
		{name: "published empty", published: [][]pool.Instance{set("1"), nil}, want: "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New()
			for _, s := range tt.published {
				d.Publish(s)
			}
			ch := d.Watch(t.Context())
			got := recv(t, ch)
			if got == nil || ids(got) != tt.want {
				t.Fatalf("first value %v (nil %v), want %s", ids(got), got == nil, tt.want)
			}
			noValue(t, ch)
		})
	}
}

func TestEveryWatcherGetsEveryChange(t *testing.T) {
	d := New()
	var chans []<-chan []pool.Instance
	for range 3 {
		ch := d.Watch(t.Context())
		recv(t, ch) // the initial empty set
		chans = append(chans, ch)
	}
	for _, s := range [][]pool.Instance{set("1"), set("1", "2"), set()} {
		d.Publish(s)
		for i, ch := range chans {
			if got := recv(t, ch); ids(got) != ids(s) {
				t.Fatalf("watcher %d got %s, want %s", i, ids(got), ids(s))
			}
		}
	}
}

func TestSlowWatcherIsCoalescedAndNeverBlocksPublish(t *testing.T) {
	d := New()
	slow := d.Watch(t.Context())
	fast := d.Watch(t.Context())
	recv(t, fast)
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := range 1000 {
			d.Publish(set(fmt.Sprint(i)))
		}
	}()
	for i := range 1000 { // the fast watcher sees the last value eventually
		got := recv(t, fast)
		if ids(got) == "[999]" {
			break
		}
		if i == 999 {
			t.Fatal("fast watcher never saw the last set")
		}
	}
	<-published // Publish returned 1000 times while slow never read
	if got := recv(t, slow); ids(got) != "[999]" {
		t.Fatalf("slow watcher got %s, want only the latest [999]", ids(got))
	}
	noValue(t, slow)
}

func TestWatchEndsWithContext(t *testing.T) {
	d := New()
	ctx, cancel := context.WithCancel(context.Background())
	ch := d.Watch(ctx)
	other := d.Watch(t.Context())
	recv(t, other) // the initial empty set
	if d.Watchers() != 2 {
		t.Fatalf("Watchers = %d, want 2", d.Watchers())
	}
	cancel()
	for range ch { // drains the buffered set, then sees the close
	}
	if d.Watchers() != 1 {
		t.Fatalf("Watchers after cancel = %d, want 1", d.Watchers())
	}
	d.Publish(set("1")) // must not send on the closed channel
	if got := recv(t, other); ids(got) != "[1]" {
		t.Fatalf("other watcher got %s", ids(got))
	}

	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if _, ok := <-d.Watch(done); ok {
		t.Fatal("Watch with an ended context must return a closed channel")
	}
}

func TestPublishCopiesInput(t *testing.T) {
	d := New()
	in := set("1", "2")
	d.Publish(in)
	in[0].ID = "changed"
	if got := ids(d.Instances()); got != "[1,2]" {
		t.Fatalf("Instances = %s after the caller changed its slice", got)
	}
	if got := ids(recv(t, d.Watch(t.Context()))); got != "[1,2]" {
		t.Fatalf("watch got %s", got)
	}
}

func TestFeedsPool(t *testing.T) {
	d := New()
	p := pool.New(pool.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx, d); close(done) }()
	d.Publish(set("1", "2"))
	k := pool.Key{Ufop: "grepd", Version: "v1", Region: "z0"}
	deadline := time.Now().Add(10 * time.Second)
	for p.Healthy(k) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("pool never saw the published set")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
}

func TestConcurrentPublishAndWatch(t *testing.T) {
	d := New()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				ctx, cancel := context.WithCancel(context.Background())
				ch := d.Watch(ctx)
				<-ch
				if i%2 == 0 {
					cancel()
					for range ch {
					}
				} else {
					d.Publish(set(fmt.Sprint(w, i)))
					cancel()
				}
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for d.Watchers() != 0 { // AfterFunc removals run asynchronously
		if time.Now().After(deadline) {
			t.Fatalf("%d watchers left after every context ended", d.Watchers())
		}
		time.Sleep(time.Millisecond)
	}
}
