// Package memory is an in-memory metadata store (`memory://`): the whole
// contract of store.Store (versions, CAS, transactions, watches) with nothing
// on disk. It serves `dorad dev --store memory://` and unit tests that need
// a store, and passes the contract suite like every other implementation.
package memory

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/doraproject/dora/internal/store"
)

// MaxValueBytes is the largest value accepted, as in the bbolt store.
const MaxValueBytes = 16 << 20

// Store keeps every key in a map guarded by one mutex. Versions come from a
// store-wide counter, as in the bbolt store.
type Store struct {
	mu       sync.Mutex
	kv       map[string]store.KV
	version  uint64
	closed   bool
	watchers *store.Watchers
}

var _ store.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{kv: map[string]store.KV{}, watchers: store.NewWatchers()}
}

// begin checks ctx and that the store is open; the caller holds s.mu.
func (s *Store) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed {
		return store.ErrClosed
	}
	return nil
}

func validateValue(v []byte) error {
	if len(v) > MaxValueBytes {
		return fmt.Errorf("%w: value of %d bytes (max %d)", store.ErrInvalid, len(v), MaxValueBytes)
	}
	return nil
}

func clone(kv store.KV) store.KV {
	kv.Value = bytes.Clone(kv.Value)
	if kv.Value == nil {
		kv.Value = []byte{}
	}
	return kv
}

// Get returns the key or store.ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	if err := store.ValidateKey(key); err != nil {
		return store.KV{}, fmt.Errorf("get: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.begin(ctx); err != nil {
		return store.KV{}, fmt.Errorf("get %s: %w", key, err)
	}
	kv, ok := s.kv[key]
	if !ok {
		return store.KV{}, fmt.Errorf("get %s: %w", key, store.ErrNotFound)
	}
	return clone(kv), nil
}

// Put writes the key unconditionally and returns its new version.
func (s *Store) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	return s.write(ctx, "put", store.Op{Kind: store.OpPut, Key: key, Value: value})
}

// CAS writes the key only if its current version is version (0: the key
// must not exist); otherwise store.ErrConflict.
func (s *Store) CAS(ctx context.Context, key string, value []byte, version uint64) (uint64, error) {
	op := store.Op{Kind: store.OpPut, Key: key, Value: value, Version: version, CreateOnly: version == 0}
	return s.write(ctx, fmt.Sprintf("cas at version %d", version), op)
}

// Delete removes the key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	_, err := s.write(ctx, "delete", store.Op{Kind: store.OpDelete, Key: key})
	return err
}

func (s *Store) write(ctx context.Context, what string, op store.Op) (uint64, error) {
	v, err := s.txn(ctx, []store.Op{op})
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", what, op.Key, err)
	}
	return v, nil
}

// List returns every key under prefix, sorted by key.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, error) {
	if err := store.ValidatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.begin(ctx); err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	return s.listLocked(prefix), nil
}

func (s *Store) listLocked(prefix string) []store.KV {
	out := []store.KV{}
	for k, kv := range s.kv {
		if strings.HasPrefix(k, prefix) {
			out = append(out, clone(kv))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Txn applies every op or none; a failed condition returns
// store.ErrConflict. Ops run in order, so a later op sees the effect of an
// earlier one on the same key.
func (s *Store) Txn(ctx context.Context, ops []store.Op) error {
	if _, err := s.txn(ctx, ops); err != nil {
		return fmt.Errorf("txn of %d ops: %w", len(ops), err)
	}
	return nil
}

// txn validates ops, checks every condition against the state as the
// earlier ops leave it, then commits all of them; it returns the version of
// the last put.
func (s *Store) txn(ctx context.Context, ops []store.Op) (uint64, error) {
	for i, op := range ops {
		if err := store.ValidateOp(op); err != nil {
			return 0, fmt.Errorf("op %d: %w", i, err)
		}
		if op.Kind == store.OpPut {
			if err := validateValue(op.Value); err != nil {
				return 0, fmt.Errorf("op %d: %w", i, err)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.begin(ctx); err != nil {
		return 0, err
	}
	// Stage the writes on an overlay so that a failed check leaves the
	// store untouched.
	staged := map[string]*store.KV{} // nil: deleted
	version := func(key string) uint64 {
		if kv, ok := staged[key]; ok {
			if kv == nil {
				return 0
			}
			return kv.Version
		}
		return s.kv[key].Version
	}
	check := func(i int, key string, want uint64) error {
		if cur := version(key); cur != want {
			return fmt.Errorf("op %d: %w: %s is at version %d, not %d", i, store.ErrConflict, key, cur, want)
		}
		return nil
	}
	next := s.version
	var last uint64
	for i, op := range ops {
		switch op.Kind {
		case store.OpPut:
			if op.CreateOnly || op.Version > 0 {
				if err := check(i, op.Key, op.Version); err != nil {
					return 0, err
				}
			}
			next++
			last = next
			staged[op.Key] = &store.KV{Key: op.Key, Value: bytes.Clone(op.Value), Version: next}
		case store.OpDelete:
			if op.Version > 0 {
				if err := check(i, op.Key, op.Version); err != nil {
					return 0, err
				}
			}
			staged[op.Key] = nil
		case store.OpCheck:
			if err := check(i, op.Key, op.Version); err != nil {
				return 0, err
			}
		}
	}
	s.version = next
	var changed []string
	for k, kv := range staged {
		if kv == nil {
			if _, ok := s.kv[k]; !ok {
				continue
			}
			delete(s.kv, k)
		} else {
			s.kv[k] = *kv
		}
		changed = append(changed, k)
	}
	s.notifyLocked(changed)
	return last, nil
}

// notifyLocked wakes the watchers of the changed keys; the caller holds s.mu.
func (s *Store) notifyLocked(changed []string) { s.watchers.Notify(changed) }

// Watch sends the listing under prefix at once, then again after every
// change under it, until ctx ends or the store is closed; then the channel
// is closed. Changes in quick succession may be coalesced into one listing.
func (s *Store) Watch(ctx context.Context, prefix string) (<-chan []store.KV, error) {
	return s.watchers.Watch(ctx, prefix, func(prefix string) ([]store.KV, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.listLocked(prefix), nil
	})
}

// Close ends every watch; later calls fail with store.ErrClosed. Closing
// twice is harmless.
func (s *Store) Close() error {
	if !store.MarkClosed(&s.mu, &s.closed) {
		return nil
	}
	s.watchers.Close()
	return nil
}
