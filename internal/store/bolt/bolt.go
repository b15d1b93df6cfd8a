// Package bolt is the embedded metadata store: store.Store on a single bbolt
// file, used by `dorad dev` and single-node setups.
//
// Layout: bucket "kv" maps each key to an 8-byte big-endian version followed
// by the value; bucket "meta" holds "version", a store-wide counter that every
// write increments inside the same bbolt transaction. Versions therefore
// increase strictly across all keys, survive a reopen and are never reused,
// even for a key deleted and written again.
//
// Watch is served in process: after each committed write the store wakes the
// watchers whose prefix covers a changed key; each watcher then lists its
// prefix afresh and hands the listing over through a one-slot channel whose
// stale content is replaced, so a slow reader skips intermediate listings but
// always ends with the latest one. Only one process may open the file at a
// time (bbolt holds a file lock); Open gives up after LockTimeout.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/doraproject/dora/internal/store"
)

// Limits on what the store accepts; larger input is refused with an error
// wrapping ErrInvalid.
const (
	// MaxKeyBytes is the longest key accepted.
	MaxKeyBytes = store.MaxKeyBytes
	// MaxValueBytes is the largest value accepted. Metadata values are
	// small JSON documents; the limit only catches mistakes.
	MaxValueBytes = 16 << 20
	// LockTimeout is how long Open waits for another process to release
	// the database file.
	LockTimeout = 5 * time.Second
)

// ErrInvalid is wrapped by every error about a bad key, value or operation.
var ErrInvalid = store.ErrInvalid

var (
	bucketKV   = []byte("kv")
	bucketMeta = []byte("meta")
	keyVersion = []byte("version")
)

var _ store.Store = (*Store)(nil)

// Store is a store.Store on a bbolt file. It is safe for concurrent use.
type Store struct {
	db *bbolt.DB

	mu       sync.Mutex // guards closed
	closed   bool
	watchers *store.Watchers
}

// OpenDB makes path's directory (0700) and opens the bbolt file at path
// (0600), waiting at most LockTimeout for another process's lock. Every
// bbolt file of Dora opens through it (this store, the pfop queue), so
// they share one permission and locking rule.
func OpenDB(path string) (*bbolt.DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	return bbolt.Open(path, 0o600, &bbolt.Options{Timeout: LockTimeout})
}

// Open opens (creating if needed) the database file at path. The parent
// directory is created too.
func Open(path string) (*Store, error) {
	if path == "" {
		return nil, fmt.Errorf("open bolt store: %w: empty path", ErrInvalid)
	}
	db, err := OpenDB(path)
	if err != nil {
		return nil, fmt.Errorf("open bolt store %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketKV); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(bucketMeta)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open bolt store %s: create buckets: %w", path, err)
	}
	return &Store{db: db, watchers: store.NewWatchers()}, nil
}

// Path returns the database file's path.
func (s *Store) Path() string { return s.db.Path() }

func validateValue(v []byte) error {
	if len(v) > MaxValueBytes {
		return fmt.Errorf("%w: value of %d bytes (max %d)", ErrInvalid, len(v), MaxValueBytes)
	}
	return nil
}

// begin checks the context and the closed flag before an operation.
func (s *Store) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	return nil
}

// mapClosed turns bbolt's "database not open" (a Close racing an
// operation) into store.ErrClosed.
func mapClosed(err error) error {
	if errors.Is(err, bbolt.ErrDatabaseNotOpen) {
		return fmt.Errorf("%w: %w", store.ErrClosed, err)
	}
	return err
}

func decode(key, raw []byte) (store.KV, error) {
	if len(raw) < 8 {
		return store.KV{}, fmt.Errorf("bolt store: corrupt record for %q (%d bytes)", key, len(raw))
	}
	return store.KV{
		Key:     string(key),
		Version: binary.BigEndian.Uint64(raw[:8]),
		Value:   bytes.Clone(raw[8:]),
	}, nil
}

func encode(version uint64, value []byte) []byte {
	buf := make([]byte, 8+len(value))
	binary.BigEndian.PutUint64(buf, version)
	copy(buf[8:], value)
	return buf
}

// Get returns the key or store.ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	if err := store.ValidateKey(key); err != nil {
		return store.KV{}, fmt.Errorf("get: %w", err)
	}
	if err := s.begin(ctx); err != nil {
		return store.KV{}, fmt.Errorf("get %s: %w", key, err)
	}
	var kv store.KV
	err := s.db.View(func(tx *bbolt.Tx) error {
		raw := tx.Bucket(bucketKV).Get([]byte(key))
		if raw == nil {
			return store.ErrNotFound
		}
		var err error
		kv, err = decode([]byte(key), raw)
		return err
	})
	if err != nil {
		return store.KV{}, fmt.Errorf("get %s: %w", key, mapClosed(err))
	}
	return kv, nil
}

// Put writes the key unconditionally and returns its new version.
func (s *Store) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	var v uint64
	err := s.update(ctx, func(w *writeTx) error {
		var err error
		v, err = w.put(key, value)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", key, err)
	}
	return v, nil
}

// CAS writes the key only if its current version is version (0: the key
// must not exist); otherwise store.ErrConflict.
func (s *Store) CAS(ctx context.Context, key string, value []byte, version uint64) (uint64, error) {
	var v uint64
	err := s.update(ctx, func(w *writeTx) error {
		if err := w.check(key, version); err != nil {
			return err
		}
		var err error
		v, err = w.put(key, value)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("cas %s at version %d: %w", key, version, err)
	}
	return v, nil
}

// Delete removes the key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	err := s.update(ctx, func(w *writeTx) error { return w.delete(key) })
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// List returns every key under prefix, sorted by key.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, error) {
	if err := store.ValidatePrefix(prefix); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	if err := s.begin(ctx); err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	kvs, err := s.list(prefix)
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	return kvs, nil
}

func (s *Store) list(prefix string) ([]store.KV, error) {
	var kvs []store.KV
	p := []byte(prefix)
	err := s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucketKV).Cursor()
		for k, raw := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, raw = c.Next() {
			kv, err := decode(k, raw)
			if err != nil {
				return err
			}
			kvs = append(kvs, kv)
		}
		return nil
	})
	return kvs, mapClosed(err)
}

// Txn applies every op or none; a failed condition returns
// store.ErrConflict. Ops run in order, so a later op sees the effect of an
// earlier one on the same key.
func (s *Store) Txn(ctx context.Context, ops []store.Op) error {
	for i, op := range ops {
		if err := validateOp(op); err != nil {
			return fmt.Errorf("txn op %d: %w", i, err)
		}
	}
	if len(ops) == 0 {
		if err := s.begin(ctx); err != nil {
			return fmt.Errorf("txn: %w", err)
		}
		return nil
	}
	err := s.update(ctx, func(w *writeTx) error {
		for i, op := range ops {
			if err := w.apply(op); err != nil {
				return fmt.Errorf("op %d (%s): %w", i, op.Key, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("txn of %d ops: %w", len(ops), err)
	}
	return nil
}

func validateOp(op store.Op) error {
	if err := store.ValidateOp(op); err != nil {
		return err
	}
	if op.Kind == store.OpPut {
		return validateValue(op.Value)
	}
	return nil
}

// writeTx is one bbolt write transaction plus the keys it changed.
type writeTx struct {
	tx      *bbolt.Tx
	kv      *bbolt.Bucket
	changed []string
}

func (w *writeTx) apply(op store.Op) error {
	switch op.Kind {
	case store.OpPut:
		if op.CreateOnly {
			if err := w.check(op.Key, 0); err != nil {
				return err
			}
		} else if op.Version > 0 {
			if err := w.check(op.Key, op.Version); err != nil {
				return err
			}
		}
		_, err := w.put(op.Key, op.Value)
		return err
	case store.OpDelete:
		if op.Version > 0 {
			if err := w.check(op.Key, op.Version); err != nil {
				return err
			}
		}
		return w.delete(op.Key)
	case store.OpCheck:
		return w.check(op.Key, op.Version)
	}
	return fmt.Errorf("%w: unknown op kind %d", ErrInvalid, op.Kind)
}

// check returns store.ErrConflict unless key is at version (0: absent).
func (w *writeTx) check(key string, version uint64) error {
	if err := store.ValidateKey(key); err != nil {
		return err
	}
	raw := w.kv.Get([]byte(key))
	var cur uint64
	if raw != nil {
		if len(raw) < 8 {
			return fmt.Errorf("corrupt record for %q", key)
		}
		cur = binary.BigEndian.Uint64(raw[:8])
	}
	if cur != version {
		return fmt.Errorf("%w: %s is at version %d, not %d", store.ErrConflict, key, cur, version)
	}
	return nil
}

func (w *writeTx) put(key string, value []byte) (uint64, error) {
	if err := store.ValidateKey(key); err != nil {
		return 0, err
	}
	if err := validateValue(value); err != nil {
		return 0, err
	}
	meta := w.tx.Bucket(bucketMeta)
	var v uint64
	if raw := meta.Get(keyVersion); len(raw) == 8 {
		v = binary.BigEndian.Uint64(raw)
	}
	v++
	var vb [8]byte
	binary.BigEndian.PutUint64(vb[:], v)
	if err := meta.Put(keyVersion, vb[:]); err != nil {
		return 0, err
	}
	if err := w.kv.Put([]byte(key), encode(v, value)); err != nil {
		return 0, err
	}
	w.changed = append(w.changed, key)
	return v, nil
}

func (w *writeTx) delete(key string) error {
	if err := store.ValidateKey(key); err != nil {
		return err
	}
	if w.kv.Get([]byte(key)) == nil {
		return nil
	}
	if err := w.kv.Delete([]byte(key)); err != nil {
		return err
	}
	w.changed = append(w.changed, key)
	return nil
}

// update runs fn in one bbolt write transaction and, once it committed,
// wakes the watchers of the keys it changed.
func (s *Store) update(ctx context.Context, fn func(*writeTx) error) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	var changed []string
	err := s.db.Update(func(tx *bbolt.Tx) error {
		w := &writeTx{tx: tx, kv: tx.Bucket(bucketKV)}
		if err := fn(w); err != nil {
			return err
		}
		changed = w.changed
		return nil
	})
	if err != nil {
		return mapClosed(err)
	}
	if len(changed) > 0 {
		s.notify(changed)
	}
	return nil
}

func (s *Store) notify(changed []string) { s.watchers.Notify(changed) }

// Watch sends the listing under prefix at once, then again after every
// change under it, until ctx ends or the store is closed; then the channel
// is closed. Changes in quick succession may be coalesced into one listing.
func (s *Store) Watch(ctx context.Context, prefix string) (<-chan []store.KV, error) {
	return s.watchers.Watch(ctx, prefix, s.list)
}

// Close ends every watch and closes the file. Closing twice is harmless.
func (s *Store) Close() error {
	if !store.MarkClosed(&s.mu, &s.closed) {
		return nil
	}
	s.watchers.Close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close bolt store: %w", err)
	}
	return nil
}
