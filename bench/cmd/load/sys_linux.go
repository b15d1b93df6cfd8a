package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// newTicker starts a clock that ticks every interval from start (the
// time it returns) and returns wait, which blocks until the next tick and
// says how many ticks passed since its last call. It is a timerfd read
// through Go's network poller: the wake-up comes within microseconds of
// the tick with no thread of its own, where time.Sleep wakes an idle Go
// program up to a millisecond late (the poller waits in whole
// milliseconds) and would send the requests in bursts.
func newTicker(interval time.Duration) (start time.Time, wait func() (int64, error), stop func(), err error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return time.Time{}, nil, nil, fmt.Errorf("timerfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "timerfd") // non-blocking: read through the poller
	ts := unix.NsecToTimespec(int64(interval))
	start = time.Now() // before arming: a tick is never earlier than its due time
	if err := unix.TimerfdSettime(fd, 0, &unix.ItimerSpec{Interval: ts, Value: ts}, nil); err != nil {
		f.Close()
		return time.Time{}, nil, nil, fmt.Errorf("timerfd: %w", err)
	}
	var b [8]byte
	wait = func() (int64, error) {
		if _, err := io.ReadFull(f, b[:]); err != nil {
			return 0, err
		}
		return int64(binary.NativeEndian.Uint64(b[:])), nil
	}
	return start, wait, func() { f.Close() }, nil
}

// cpuTime is the user and system CPU time this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runDelay is the time the threads of process pid spent runnable but
// waiting for a CPU (Linux schedstat; 0 where that is not available): on a
// shared machine, the part of a latency that is nobody's code.
func runDelay(pid int) time.Duration {
	dirs, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var total time.Duration
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var run, wait int64
		if _, err := fmt.Sscan(string(b), &run, &wait); err == nil {
			total += time.Duration(wait)
		}
	}
	return total
}
