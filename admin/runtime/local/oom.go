package local

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// oomWatch tells whether the kernel killed a process of a container for
// exceeding its memory limit. podman's own State.OOMKilled relies on conmon,
// which misses it on hosts with cgroup v1 memory controllers laid out as
// some hosts do (measured here: exit 137, OOMKilled false), so the runtime
// watches the container's memory cgroup itself: on cgroup v1 an eventfd
// registered on memory.oom_control fires at the OOM, while the cgroup
// still exists, and its oom_kill counter says whether a process was killed;
// on cgroup v2 memory.events' oom_kill is read the same way when the
// eventfd is not available (a poll at exit is too late: the cgroup is gone).
type oomWatch struct {
	killed atomic.Bool
	efd    *os.File // non-blocking, so Close wakes its reader
	ofd    *os.File
	done   chan struct{} // closed once the first event was handled
}

// memoryCgroup returns the directory of pid's cgroup v1 memory controller.
func memoryCgroup(pid int) (string, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				return filepath.Join("/sys/fs/cgroup/memory", parts[2]), nil
			}
		}
	}
	return "", fmt.Errorf("pid %d: no cgroup v1 memory controller", pid)
}

// watchOOM starts watching the memory cgroup of pid (a process of the
// container). Close it when the container has exited.
func watchOOM(pid int) (*oomWatch, error) {
	dir, err := memoryCgroup(pid)
	if err != nil {
		return nil, err
	}
	ofd, err := os.Open(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		return nil, err
	}
	const efdNonblock = 0x800 // EFD_NONBLOCK
	r1, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, uintptr(syscall.O_CLOEXEC|efdNonblock), 0)
	if errno != 0 {
		ofd.Close()
		return nil, fmt.Errorf("eventfd: %w", errno)
	}
	efd := os.NewFile(r1, "eventfd")
	// r1, not efd.Fd(): Fd would put the eventfd back in blocking mode.
	ctl := fmt.Sprintf("%d %d", r1, ofd.Fd())
	if err := os.WriteFile(filepath.Join(dir, "cgroup.event_control"), []byte(ctl), 0); err != nil {
		efd.Close()
		ofd.Close()
		return nil, fmt.Errorf("register oom eventfd: %w", err)
	}
	w := &oomWatch{efd: efd, ofd: ofd, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		var buf [8]byte
		n, err := efd.Read(buf[:])
		if err != nil || n != 8 || binary.LittleEndian.Uint64(buf[:]) == 0 {
			return
		}
		// An OOM, or the cgroup going away: the counter tells. The
		// event comes as the cgroup enters OOM, before the kernel picks
		// and kills a process, so the counter is read for a while.
		for i := 0; i < 100; i++ {
			b, err := os.ReadFile(filepath.Join(dir, "memory.oom_control"))
			if err != nil {
				return // the cgroup is gone
			}
			if oomKills(string(b)) > 0 {
				w.killed.Store(true)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return w, nil
}

// oomKills reads the oom_kill counter of memory.oom_control text.
func oomKills(text string) int {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// Killed reports whether an OOM kill was seen, waiting up to wait for the
// watcher to handle an event already signalled.
func (w *oomWatch) Killed(wait time.Duration) bool {
	if w == nil {
		return false
	}
	select {
	case <-w.done:
	case <-time.After(wait):
	}
	return w.killed.Load()
}

// Close releases the eventfd (its reader returns).
func (w *oomWatch) Close() {
	if w == nil {
		return
	}
	w.efd.Close()
	w.ofd.Close()
}

// Running returns the main process id of container name once it runs
// with hostPort published (0 before: being created, or created but not
// started). podman binds a published port (rootlessport) before it starts
// the container and fails the start when the bind fails, so while the
// container runs that port is its own.
func (p *Podman) Running(ctx context.Context, name string, hostPort int) (int, error) {
	out, err := p.output(ctx, "container", "inspect", "--format",
		"{{.State.Running}} {{.State.Pid}}{{range $p, $b := .NetworkSettings.Ports}}{{range $b}} {{.HostPort}}{{end}}{{end}}", name)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(out))
	if len(f) < 2 || f[0] != "true" {
		return 0, nil
	}
	pid, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, fmt.Errorf("podman inspect %s: pid %q: %w", name, f[1], err)
	}
	for _, hp := range f[2:] {
		if hp == strconv.Itoa(hostPort) {
			return pid, nil
		}
	}
	return 0, nil
}
