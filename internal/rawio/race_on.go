//go:build race

package rawio

import (
	"runtime"
	"unsafe"
)

// raceEnabled: this is a -race build.
const raceEnabled = true

// The race detector cannot see what a raw system call does, so a raw
// read or write makes the annotations syscall.Read and syscall.Write make
// for an ordinary one: the kernel's use of the buffer, and an order from
// every write to every later read through rawSync (the syscall package's
// ioSync, for raw calls). The ordering is as coarse as the standard
// library's, and covers raw calls among themselves only: a raw write read
// by an ordinary read is not ordered before it (a report that can follow
// from it is a false one, never a race hidden).
var rawSync int64

// raceBeforeWrite orders what came before a raw write before the raw
// reads that follow it.
func raceBeforeWrite() { runtime.RaceReleaseMerge(unsafe.Pointer(&rawSync)) }

// raceAfterWrite tells the race detector the kernel read p.
func raceAfterWrite(p []byte) {
	if len(p) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&p[0]), len(p))
	}
}

// raceAfterRead tells the race detector the kernel wrote p, the bytes a
// raw read returned, and orders the read after the raw writes before it.
func raceAfterRead(p []byte) {
	if len(p) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&p[0]), len(p))
	}
	runtime.RaceAcquire(unsafe.Pointer(&rawSync))
}
