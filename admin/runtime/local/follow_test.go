package local

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// TestStreamFollow: a follower gets the tail, then each new line as it is
// written, and EOF when the stream closes (the instance is gone) or its
// context ends.
func TestStreamFollow(t *testing.T) {
	s := newStream("", 1<<20, time.Now)
	io.WriteString(s, "one\ntwo\nthree\n")
	tail, lines, cancel := s.Follow(2)
	r := newFollowReader(context.Background(), tail, lines, cancel)
	defer r.Close()
	br := bufio.NewReader(r)
	for _, want := range []string{"two", "three"} {
		l, err := br.ReadString('\n')
		if err != nil || !strings.HasSuffix(l, " "+want+"\n") {
			t.Fatalf("tail line %q, %v; want %s", l, err, want)
		}
	}
	io.WriteString(s, "four\n")
	if l, err := br.ReadString('\n'); err != nil || !strings.HasSuffix(l, " four\n") {
		t.Fatalf("followed line %q, %v", l, err)
	}
	s.Close()
	if _, err := br.ReadString('\n'); err != io.EOF {
		t.Fatalf("after the stream closed: %v, want EOF", err)
	}

	s2 := newStream("", 1<<20, time.Now)
	ctx, stop := context.WithCancel(context.Background())
	tail, lines, cancel = s2.Follow(10)
	r2 := newFollowReader(ctx, tail, lines, cancel)
	stop()
	if _, err := r2.Read(make([]byte, 10)); err != io.EOF {
		t.Fatalf("after ctx ended: %v, want EOF", err)
	}
	r2.Close()
	io.WriteString(s2, "after close\n") // must not block nor panic
	if len(s2.subs) != 0 {
		t.Fatalf("a closed follower stays subscribed")
	}
}
