package memory

import (
	"context"
	"sync"

	"github.com/doraproject/dora/autoscaler/load"
)

var _ load.Waker = (*Store)(nil)

// wakeBuffer is the room of each listener's channel; beyond it wake-ups are
// dropped (they repeat while the requests wait).
const wakeBuffer = 64

// wakers are the listeners of Wakes.
type wakers struct {
	mu   sync.Mutex
	subs map[chan load.Key]struct{}
}

// Wake hands key to every listener without blocking.
func (s *Store) Wake(ctx context.Context, key load.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.wake.mu.Lock()
	defer s.wake.mu.Unlock()
	for ch := range s.wake.subs {
		select {
		case ch <- key:
		default:
		}
	}
	return nil
}

// Wakes delivers the keys woken from now on until ctx ends.
func (s *Store) Wakes(ctx context.Context) <-chan load.Key {
	ch := make(chan load.Key, wakeBuffer)
	s.wake.mu.Lock()
	if s.wake.subs == nil {
		s.wake.subs = map[chan load.Key]struct{}{}
	}
	s.wake.subs[ch] = struct{}{}
	s.wake.mu.Unlock()
	context.AfterFunc(ctx, func() {
		s.wake.mu.Lock()
		delete(s.wake.subs, ch)
		s.wake.mu.Unlock()
		close(ch)
	})
	return ch
}
