// Package bolttest opens a bolt metadata store for a test: the fixture the
// admin's, the registry's, rs's and the autoscaler's unit tests each wrote
// out by hand (open, fail the test on error, close when the test ends).
package bolttest

import (
	"path/filepath"
	"testing"

	"github.com/doraproject/dora/internal/store/bolt"
)

// Open opens (creating it) the bolt store <dir>/meta.db, failing t when it
// cannot, and closes it when t ends. Tests that restart a component over
// the same store pass the same dir and keep the returned store.
func Open(t testing.TB, dir string) *bolt.Store {
	t.Helper()
	st, err := bolt.Open(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatalf("open bolt store in %s: %v", dir, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
