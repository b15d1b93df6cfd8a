package ctxio

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReaderStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := Reader(ctx, strings.NewReader("abcdef"))
	buf := make([]byte, 2)
	if n, err := r.Read(buf); n != 2 || err != nil || string(buf) != "ab" {
		t.Fatalf("read before cancel: %d %q %v", n, buf[:n], err)
	}
	cancel()
	if n, err := r.Read(buf); n != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %d %v, want 0 and context.Canceled", n, err)
	}
}

func TestReaderPassesEverythingThrough(t *testing.T) {
	b, err := io.ReadAll(Reader(context.Background(), strings.NewReader("whole stream")))
	if err != nil || string(b) != "whole stream" {
		t.Fatalf("got %q, %v", b, err)
	}
}
