package boltq

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/pfop/queuetest"
)

func TestContract(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) pfop.Queue {
		q, err := Open(filepath.Join(t.TempDir(), "q.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
		return q
	})
}

// TestReopenHandsBackInFlight: what was in flight when the file was
// closed (its process died) waits again, at the front, after Open.
func TestReopenHandsBackInFlight(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "q.db")
	q, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range []string{"a", "b", "c"} {
		if err := q.Enqueue(ctx, "p", j, j == "c"); err != nil {
			t.Fatal(err)
		}
	}
	ma, _, _ := q.Claim(ctx, "p", "w1", 5)
	if ma.JobID != "a" {
		t.Fatalf("claimed %+v", ma)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := q.Claim(ctx, "p", "w1", 5); err == nil {
		t.Fatal("claim on a closed queue succeeded")
	}
	q, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	w, i, f, err := q.Stats(ctx, "p")
	if err != nil || w != 2 || i != 1 || f != 0 {
		t.Fatalf("after reopen: waiting %d idle %d in flight %d (%v)", w, i, f, err)
	}
	for _, want := range []string{"a", "b"} {
		m, ok, err := q.Claim(ctx, "p", "w2", 1)
		if err != nil || !ok || m.JobID != want {
			t.Fatalf("claim: %+v %v %v, want %s", m, ok, err, want)
		}
		if err := q.Ack(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
}
