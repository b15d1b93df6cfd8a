package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// TestSecondSignalExitsAtOnce: once the first Ctrl-C (or SIGTERM) has
// started a shutdown, a second one ends the process at once, as an
// operator expects when the shutdown is slow (up to 30 s, or a worker's
// --grace), instead of being swallowed. The child process is this test
// binary: it waits for a signal, then hangs as a stuck shutdown would.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	if os.Getenv("DORAD_TEST_SIGNAL_CHILD") == "1" {
		cmd := &cobra.Command{}
		cmd.SetContext(context.Background())
		ctx, stop := signalContext(cmd)
		defer stop()
		fmt.Println("ready")
		<-ctx.Done()
		fmt.Println("stopping")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command(exe, "-test.run=^TestSecondSignalExitsAtOnce$")
	c.Env = append(os.Environ(), "DORAD_TEST_SIGNAL_CHILD=1")
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Process.Kill()
	lines := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
		close(lines)
	}()
	waitLine := func(want string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("child exited before %q", want)
				}
				if l == want {
					return
				}
			case <-timeout:
				t.Fatalf("child never said %q", want)
			}
		}
	}
	waitLine("ready")
	if err := c.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	waitLine("stopping")
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	deadline := time.After(10 * time.Second)
	for {
		_ = c.Process.Signal(os.Interrupt)
		select {
		case <-exited:
			return
		case <-deadline:
			t.Fatal("a second Ctrl-C during the shutdown did not end the process")
		case <-time.After(200 * time.Millisecond):
		}
	}
}
