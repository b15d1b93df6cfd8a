package meta

import (
	"context"
	"sort"
	"strings"
	"sync"

	"github.com/doraproject/dora/internal/store"
)

// fakeStore is a minimal in-memory store.Store with Watch, enough for the
// cache's tests.
type fakeStore struct {
	mu      sync.Mutex
	kv      map[string][]byte
	ver     uint64
	watches []*fakeWatch
}

type fakeWatch struct {
	prefix string
	ch     chan []store.KV
}

func newFakeStore() *fakeStore { return &fakeStore{kv: map[string][]byte{}} }

func (s *fakeStore) Get(_ context.Context, key string) (store.KV, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.kv[key]
	if !ok {
		return store.KV{}, store.ErrNotFound
	}
	return store.KV{Key: key, Value: v, Version: 1}, nil
}

func (s *fakeStore) Put(_ context.Context, key string, value []byte) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kv[key] = append([]byte(nil), value...)
	s.ver++
	s.notify(key)
	return s.ver, nil
}

func (s *fakeStore) CAS(ctx context.Context, key string, value []byte, _ uint64) (uint64, error) {
	return s.Put(ctx, key, value)
}

func (s *fakeStore) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.kv, key)
	s.notify(key)
	return nil
}

func (s *fakeStore) List(_ context.Context, prefix string) ([]store.KV, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.list(prefix), nil
}

func (s *fakeStore) list(prefix string) []store.KV {
	var out []store.KV
	for k, v := range s.kv {
		if strings.HasPrefix(k, prefix) {
			out = append(out, store.KV{Key: k, Value: v, Version: 1})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func (s *fakeStore) Txn(context.Context, []store.Op) error { return nil }

func (s *fakeStore) Watch(ctx context.Context, prefix string) (<-chan []store.KV, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &fakeWatch{prefix: prefix, ch: make(chan []store.KV, 1)}
	w.ch <- s.list(prefix)
	s.watches = append(s.watches, w)
	out := make(chan []store.KV)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case l := <-w.ch:
				select {
				case out <- l:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// notify replaces each matching watch's pending listing with the latest.
func (s *fakeStore) notify(key string) {
	for _, w := range s.watches {
		if !strings.HasPrefix(key, w.prefix) {
			continue
		}
		select {
		case <-w.ch:
		default:
		}
		w.ch <- s.list(w.prefix)
	}
}

func (s *fakeStore) Close() error { return nil }

var _ store.Store = (*fakeStore)(nil)
