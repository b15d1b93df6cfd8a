package bolt_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/bolt"
	"github.com/doraproject/dora/internal/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := bolt.Open(filepath.Join(t.TempDir(), "meta.db"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestReopenKeepsDataAndVersions(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "meta.db")
	s, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for _, k := range []string{"a", "b", "a"} {
		if last, err = s.Put(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kv, err := s.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if string(kv.Value) != "a" || kv.Version != last {
		t.Fatalf("after reopen a = %q v%d, want \"a\" v%d", kv.Value, kv.Version, last)
	}
	if _, err := s.Get(ctx, "b"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted key after reopen: %v", err)
	}
	for _, k := range []string{"b", "c"} {
		v, err := s.Put(ctx, k, []byte(k))
		if err != nil {
			t.Fatal(err)
		}
		if v <= last {
			t.Fatalf("version after reopen %d not above %d", v, last)
		}
		last = v
	}
}

func TestLimits(t *testing.T) {
	s, err := bolt.Open(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Put(ctx, "big", make([]byte, bolt.MaxValueBytes+1)); !errors.Is(err, bolt.ErrInvalid) {
		t.Fatalf("oversized value: %v, want ErrInvalid", err)
	}
	if _, err := s.Get(ctx, "big"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("oversized value was stored: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := bolt.Open(""); !errors.Is(err, bolt.ErrInvalid) {
		t.Fatalf("empty path: %v", err)
	}
	// A directory is not a database file.
	if _, err := bolt.Open(t.TempDir()); err == nil {
		t.Fatal("opening a directory succeeded")
	}
}
