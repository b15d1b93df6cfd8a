package router

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// A retried step extends its input URL while the instance of the first
// attempt may still claim it: claim must read the expiry under the lock
// extend writes it under (go test -race catches a read outside it).
func TestSrcClaimRacesExtend(t *testing.T) {
	s := newSrcRegistry()
	now := time.Now()
	for range 50 {
		body := io.NopCloser(strings.NewReader("x"))
		tok, e, err := s.register(context.Background(), flow{body: body, size: 1}, now.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Go(func() {
			<-start
			for i := range 200 {
				s.extend(e, now.Add(time.Minute+time.Duration(i)))
			}
		})
		wg.Go(func() {
			<-start
			if _, ok := s.claim(tok, now); !ok {
				t.Error("claim of a live entry failed")
			}
		})
		close(start)
		wg.Wait()
	}
	// Expiry is still honoured: an entry past its time is refused and
	// closed.
	tok, _, err := s.register(context.Background(), flow{body: io.NopCloser(strings.NewReader("x")), size: 1}, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.claim(tok, now.Add(time.Second)); ok {
		t.Fatal("an expired entry was claimed")
	}
	if s.len() != 0 {
		t.Fatalf("%d entries left", s.len())
	}
}
