package rawio

import (
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRaceHappensBefore: what a goroutine did before a raw Write is
// ordered, for the race detector too, before what the goroutine whose raw
// Read got those bytes does after it. The kernel orders them; the race
// detector only knows of it through annotations, which the syscall
// package makes for ordinary calls (its ioSync) and rawio for raw ones.
// Without them, -race reports this test.
func TestRaceHappensBefore(t *testing.T) {
	if !supported {
		t.Skip("no raw calls on " + runtime.GOOS)
	}
	c1, c2, stop, err := tcpPair(true, true)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	var x int
	go func() {
		x = 1
		c1.Write([]byte{1})
	}()
	if _, err := io.ReadFull(c2, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if x != 1 {
		t.Fatalf("x = %d after the write that followed x = 1", x)
	}
}

// TestRaceSeesBuffers: the race detector sees the kernel's use of the
// buffers of raw reads and writes, as syscall.Read and syscall.Write
// annotate theirs: a goroutine writing into a buffer a raw Read fills, or
// one a raw Write sends, with nothing ordering them, is reported (in a
// child process: a report fails the test it happens in).
func TestRaceSeesBuffers(t *testing.T) {
	if !supported {
		t.Skip("no raw calls on " + runtime.GOOS)
	}
	if !raceEnabled {
		t.Skip("only a -race build has a race detector to ask")
	}
	// The annotations' own names: the child's racing store is a plain one.
	for dir, annotation := range map[string]string{"read": "racewriterange", "write": "racereadrange"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRaceBufferChild$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "RAWIO_RACE_CHILD="+dir)
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), "WARNING: DATA RACE") || !strings.Contains(string(out), annotation) {
			t.Errorf("%s: no race reported on the buffer of a raw %s:\n%s", dir, dir, out)
		}
	}
}

// TestRaceBufferChild is TestRaceSeesBuffers' child: it races on purpose.
func TestRaceBufferChild(t *testing.T) {
	dir := os.Getenv("RAWIO_RACE_CHILD")
	if dir == "" {
		t.Skip("the child process of TestRaceSeesBuffers")
	}
	c1, c2, stop, err := tcpPair(true, true)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	buf := make([]byte, 8)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf[0] = 7 // unordered with the raw call below
	}()
	time.Sleep(20 * time.Millisecond) // not an ordering: the race stays
	switch dir {
	case "read":
		c1.Write(make([]byte, 8))
		io.ReadFull(c2, buf)
	case "write":
		c1.Write(buf)
	}
	wg.Wait()
}
