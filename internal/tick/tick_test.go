package tick_test

import (
	"context"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/tick"
)

// TestEveryCallsUntilCancelled checks that fn runs again and again, and that
// Every returns once ctx ends, with no call after that.
func TestEveryCallsUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick.Every(ctx, time.Millisecond, func() {
			calls++
			if calls == 3 {
				cancel()
			}
		})
	}()
	<-done
	if calls != 3 {
		t.Fatalf("fn ran %d times, want 3 (it must stop once ctx ends)", calls)
	}
}

// TestEveryNotBeforeFirstPeriod checks that a context already ended means
// no call at all: the first call comes after one period, not at once.
func TestEveryNotBeforeFirstPeriod(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tick.Every(ctx, time.Millisecond, func() { t.Error("fn ran after ctx ended") })
}
