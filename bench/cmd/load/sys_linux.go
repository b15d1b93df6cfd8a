package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// preciseSleep returns a sleep for the calling goroutine that wakes within
// microseconds of the time asked, where time.Sleep wakes an idle Go
// program up to a millisecond late (the runtime's netpoller waits in whole
// milliseconds): the goroutine is locked to its thread for good (the
// thread ends with it), the thread's timer slack is set to 1 ns and it
// sleeps in nanosleep(2).
func preciseSleep() func(time.Duration) {
	runtime.LockOSThread()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0) // best effort: the default slack is 50 µs
	return func(d time.Duration) {
		ts := unix.NsecToTimespec(int64(d))
		for unix.Nanosleep(&ts, &ts) == unix.EINTR {
		}
	}
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
