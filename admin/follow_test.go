package admin

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestFollowFile: the follow waits for the file, sends what is appended
// while the build runs and ends once finished reports true, with every
// byte written before that.
func TestFollowFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "build.log")
	var done atomic.Bool
	var out lockedBuf
	errc := make(chan error, 1)
	go func() {
		errc <- followFile(context.Background(), &out, path, func(context.Context) bool { return done.Load() })
	}()
	time.Sleep(2 * followPoll) // the file does not exist yet: the follow waits
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("$ step 1\n")
	for out.String() != "$ step 1\n" {
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-errc:
		t.Fatalf("follow ended while the build runs: %v", err)
	default:
	}
	f.WriteString("$ step 2\n")
	f.Close()
	done.Store(true)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "$ step 1\n$ step 2\n" {
		t.Fatalf("followed %q", got)
	}
}
