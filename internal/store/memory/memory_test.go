package memory_test

import (
	"context"
	"errors"
	"testing"

	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/memory"
	"github.com/doraproject/dora/internal/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return memory.New() })
}

func TestOversizedValue(t *testing.T) {
	s := memory.New()
	if _, err := s.Put(context.Background(), "big", make([]byte, memory.MaxValueBytes+1)); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("oversized value: %v, want ErrInvalid", err)
	}
}
