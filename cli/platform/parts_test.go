package platform

import (
	"context"
	"testing"
	"time"
)

// TestCloseUnlessEndsRunningParts: a start failing after its parts began
// to run (dorad dev's watches of its roles, a service's server) leaves no
// goroutine behind: closeUnless cancels their context and waits for them.
// It only ran the closers, and the watches waited for ever.
func TestCloseUnlessEndsRunningParts(t *testing.T) {
	p := newParts("test ")
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	ended := make(chan struct{})
	p.goRun("watch", func() error {
		<-ctx.Done()
		close(ended)
		return ctx.Err()
	})
	closed := false
	p.onClose(func() error { closed = true; return nil })
	started := false
	p.closeUnless(&started)
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("a part still runs after closeUnless")
	}
	if !closed {
		t.Fatal("the closers did not run")
	}
}
