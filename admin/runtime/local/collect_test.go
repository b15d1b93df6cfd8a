package local

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"
)

// TestCollectedLogsReadsWithinBound: an instance with many large log
// files must not make the platform read them all into memory when its
// collected logs are asked for; only the last MaxLogBytes are kept, and
// about that much is read.
func TestCollectedLogsReadsWithinBound(t *testing.T) {
	r := newRuntime(t, nil)
	const id = "deploy-bigfiles"
	spec := grepdSpec(id, 1)
	spec.Release.LogFilePaths = []string{"logs"}
	if err := r.Apply(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "healthy", func() bool { return status(t, r, id).Healthy == 1 })
	dir := filepath.Join(r.cfg.Dir, id, "1", "logs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("x", 99) + "\n"
	for i := range 100 {
		body := strings.Repeat(line, maxCollected/len(line))
		body += fmt.Sprintf("end of file %03d\n", i)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d.log", i)), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var before, after goruntime.MemStats
	goruntime.ReadMemStats(&before)
	lines, err := r.CollectedLogs(id, 1)
	goruntime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) == 0 || lines[len(lines)-1] != "end of file 099" {
		t.Fatalf("collected %d lines, last %q", len(lines), lines[len(lines)-1:])
	}
	total := 0
	for _, l := range lines {
		total += len(l) + 1
	}
	if int64(total) > r.cfg.MaxLogBytes {
		t.Fatalf("collected %d bytes, more than MaxLogBytes %d", total, r.cfg.MaxLogBytes)
	}
	// 100 files of 256 KiB are 25 MiB; MaxLogBytes is 64 KiB.
	if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
		t.Fatalf("collecting %d bytes of logs allocated %d MiB", total, got>>20)
	}
}

// TestStreamBoundsLineCount: the ring is bounded by MaxLogBytes of text,
// but each line also costs its record; a program printing empty lines
// must not make it hold millions of them (about 100 bytes of memory
// each) when Logs can show no more than maxTail.
func TestStreamBoundsLineCount(t *testing.T) {
	s := newStream("", 1<<20, time.Now)
	chunk := []byte(strings.Repeat("\n", 64<<10))
	for range 32 {
		s.Write(chunk)
	}
	if n := len(s.lines); n > 3*maxTail {
		t.Fatalf("the ring holds %d line records, want at most about maxTail (%d)", n, maxTail)
	}
	if n := len(s.Tail(maxTail)); n != maxTail {
		t.Fatalf("tail of %d lines gives %d", maxTail, n)
	}
}
