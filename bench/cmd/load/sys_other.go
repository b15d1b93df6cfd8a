//go:build !linux

package main

import "time"

// preciseSleep is time.Sleep where nanosleep(2) with a timer slack is not
// available.
func preciseSleep() func(time.Duration) { return time.Sleep }

// cpuTime is 0 (not measured) here.
func cpuTime() time.Duration { return 0 }

// runDelay is 0 (not measured) here.
func runDelay(int) time.Duration { return 0 }
