package memory

import (
	"context"
	"testing"

	"github.com/doraproject/dora/autoscaler/load"
)

// TestWake: every listener gets each wake-up; a listener whose context
// ended gets its channel closed and no more.
func TestWake(t *testing.T) {
	s := New(0)
	ctx1, cancel1 := context.WithCancel(context.Background())
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	a, b := s.Wakes(ctx1), s.Wakes(ctx2)
	k := load.Key{Ufop: "u", Version: "v1", Region: "z0"}
	if err := s.Wake(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	if got := <-a; got != k {
		t.Fatalf("a got %+v", got)
	}
	if got := <-b; got != k {
		t.Fatalf("b got %+v", got)
	}
	cancel1()
	if _, ok := <-a; ok {
		t.Fatal("a still open after its context ended")
	}
	for range 2 * wakeBuffer { // a slow listener never blocks Wake
		if err := s.Wake(context.Background(), k); err != nil {
			t.Fatal(err)
		}
	}
	if got := <-b; got != k {
		t.Fatalf("b got %+v", got)
	}
}
