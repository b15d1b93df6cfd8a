//go:build !linux

package main

import "time"

// newTicker ticks every interval from start, with time.Sleep (which may
// wake up to a millisecond late: the ticks then come in bursts).
func newTicker(interval time.Duration) (start time.Time, wait func() (int64, error), stop func(), err error) {
	start = time.Now()
	var n int64
	wait = func() (int64, error) {
		next := start.Add(time.Duration(n+1) * interval)
		time.Sleep(time.Until(next))
		k := int64(time.Since(start) / interval)
		d := k - n
		n = k
		return d, nil
	}
	return start, wait, func() {}, nil
}

// cpuTime is 0 (not measured) here.
func cpuTime() time.Duration { return 0 }

// runDelay is 0 (not measured) here.
func runDelay(int) time.Duration { return 0 }
