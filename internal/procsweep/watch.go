package procsweep

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
)

// watchScript is the watchdog: it blocks reading its stdin, a pipe whose
// only writer is the process that started it. "stop" disarms it. EOF
// means that process ended, however it ended (kill -9 included: the kernel
// closes its descriptors), and the watchdog then kills every process
// carrying the owner's marker, in rounds until none is left (a forking
// one is caught too), and finally runs the optional on-death command.
// It is a shell script, not a Go process, so it needs no binary of ours
// on the host and no hook in the main program.
const watchScript = `o=$1; shift
IFS= read -r line
[ "$line" = stop ] && exit 0
n=0
while [ $n -lt 50 ]; do
	pids=$(grep -lsxzF -e "` + EnvKey + `=$o" /proc/[0-9]*/environ 2>/dev/null | sed -n 's#^/proc/\([0-9]*\)/environ$#\1#p' | grep -vx "$$")
	[ -z "$pids" ] && break
	kill -9 $pids 2>/dev/null
	n=$((n+1))
	sleep 0.05
done
[ $# -gt 0 ] && exec "$@"
exit 0
`

// Watchdog is a helper process that kills an owner's processes when the
// process that started it dies. Sweep at start catches what a dead
// process left; a Watchdog makes them die with it, grandchildren and
// processes that left their group or session included (they keep the
// marker in their environment).
//
// It does not rely on a parent-death signal: that is delivered when the
// forking OS thread ends, and reaches only the direct child. The
// watchdog sees its stdin pipe close instead, which happens only when the
// whole starting process is gone.
type Watchdog struct {
	cmd *exec.Cmd
	// w is the pipe's write end as a raw descriptor: an *os.File would be
	// closed by its finalizer once the Watchdog is unreachable, firing the
	// sweep while this process still runs (its owner may have started a
	// new set of processes meanwhile).
	w    int
	once sync.Once
	err  error
}

// Watch starts a watchdog for owner. When this process ends without
// calling Close, the watchdog kills every process marked with owner (Env)
// and then runs onDeath (an argv, optional: e.g. removing containers
// the marker cannot reach). The watchdog runs in its own session, so a
// terminal's ^C or hang-up reaching this process does not reach it.
func Watch(owner string, onDeath ...string) (*Watchdog, error) {
	if owner == "" {
		return nil, errors.New("procsweep: empty owner")
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", watchScript, "dora-watchdog", owner}, onDeath...)...)
	cmd.Env = withoutMarker(os.Environ()) // the watchdog must not sweep itself
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var p [2]int
	syscall.ForkLock.RLock() // no fork may inherit the pipe before it is close-on-exec
	err := syscall.Pipe(p[:])
	if err == nil {
		syscall.CloseOnExec(p[0])
		syscall.CloseOnExec(p[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("procsweep: watchdog pipe: %w", err)
	}
	r := os.NewFile(uintptr(p[0]), "watchdog-stdin")
	cmd.Stdin = r
	err = cmd.Start()
	r.Close()
	if err != nil {
		syscall.Close(p[1])
		return nil, fmt.Errorf("procsweep: start watchdog: %w", err)
	}
	return &Watchdog{cmd: cmd, w: p[1]}, nil
}

// Pid is the watchdog's process id.
func (w *Watchdog) Pid() int { return w.cmd.Process.Pid }

// Close disarms the watchdog (for a clean shutdown that has stopped its
// processes itself) and waits for it to exit.
func (w *Watchdog) Close() error {
	w.once.Do(func() {
		_, err := syscall.Write(w.w, []byte("stop\n"))
		syscall.Close(w.w)
		if werr := w.cmd.Wait(); werr != nil && err == nil {
			err = werr
		}
		if err != nil {
			w.err = fmt.Errorf("procsweep: watchdog: %w", err)
		}
	})
	return w.err
}

// withoutMarker drops any owner marker from env.
func withoutMarker(env []string) []string {
	out := make([]string, 0, len(env))
	for _, e := range env {
		if !strings.HasPrefix(e, EnvKey+"=") {
			out = append(out, e)
		}
	}
	return out
}
