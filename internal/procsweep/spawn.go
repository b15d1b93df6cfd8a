package procsweep

import (
	"errors"
	"os/exec"
	"runtime"
	"sync"
)

// ErrSpawnerClosed is returned by Spawner.Start after Close.
var ErrSpawnerClosed = errors.New("procsweep: spawner closed")

// Spawner starts processes from one OS thread that lives as long as the
// Spawner. A child's parent-death signal (SysProcAttr.Pdeathsig) is sent
// when the thread that forked it ends, not the process: Go ends a thread
// when a goroutine locked to it (runtime.LockOSThread) returns, and a child
// forked earlier from that thread by any goroutine would be killed while
// dorad still runs. Forking only from a thread nothing else can lock and
// end rules that out.
type Spawner struct {
	req  chan spawnReq
	stop chan struct{}
	once sync.Once
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

// NewSpawner starts the Spawner's thread.
func NewSpawner() *Spawner {
	s := &Spawner{req: make(chan spawnReq), stop: make(chan struct{})}
	go s.loop()
	return s
}

func (s *Spawner) loop() {
	// Never unlocked: the thread ends with this goroutine (at Close), and
	// no other goroutine ever runs on it.
	runtime.LockOSThread()
	for {
		select {
		case r := <-s.req:
			r.done <- r.cmd.Start()
		case <-s.stop:
			return
		}
	}
}

// Start calls cmd.Start on the Spawner's thread.
func (s *Spawner) Start(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	select {
	case s.req <- spawnReq{cmd: cmd, done: done}:
		return <-done
	case <-s.stop:
		return ErrSpawnerClosed
	}
}

// Close ends the thread: children it started that are still running get
// their parent-death signal. Call it once they are stopped.
func (s *Spawner) Close() { s.once.Do(func() { close(s.stop) }) }
