package platformtest

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// StopGrace is how long a process started by StartProcess has to exit
// after SIGINT before it is killed.
const StopGrace = 20 * time.Second

// Process is a program (a dorad role) a test started with StartProcess.
type Process struct {
	// Cmd is the started command.
	Cmd *exec.Cmd

	done chan struct{} // closed when Cmd exited
	err  error         // Cmd.Wait's result, set before done is closed
}

// StartProcess starts cmd (its arguments, environment and output set by
// the caller) and stops it when the test ends: SIGINT, then SIGKILL after
// StopGrace, waiting for it to exit.
func StartProcess(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// Done is closed once the process exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Alive reports whether the process has not exited yet.
func (p *Process) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Err is how the process ended (exec.Cmd.Wait's result); nil while it
// runs.
func (p *Process) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// stop interrupts the process and waits for it, killing it after
// StopGrace. A process that already exited is left alone.
func (p *Process) stop() {
	if !p.Alive() {
		return
	}
	p.Cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(StopGrace):
		p.Cmd.Process.Kill()
		<-p.done
	}
}
