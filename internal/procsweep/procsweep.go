// Package procsweep kills the processes an earlier run of dorad left
// behind. Build lines and local instances run in their own process group
// with a parent-death signal, but that signal reaches only the direct
// child: grandchildren of a compound command (`a | b`, `a & b`), and any
// process that left the group (setsid, a daemon), are re-parented to init
// and outlive a kill -9 of dorad.
//
// Every such process is started with an environment entry naming its
// owner (Env: "DORA_PROC_OWNER=<kind>:<digest of the data directory>"),
// which its descendants inherit, whatever group or session they move to.
// At start, before it runs anything, the owner calls Sweep: every process
// whose environment holds its entry is killed (SIGKILL, repeated until
// none is left, so that one forking meanwhile is caught too).
//
// While the owner runs, a Watchdog (Watch) does the same sweep the moment
// the owner's process ends, however it ends: the processes die with it
// instead of at its next start.
//
// A process that clears its environment (env -i) escapes the sweep. Reading
// another user's /proc/<pid>/environ needs root, which is how dorad runs
// user code as another user in the first place. Linux only (/proc); on
// other systems Sweep finds nothing.
package procsweep

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// EnvKey is the environment variable carrying a process's owner.
const EnvKey = "DORA_PROC_OWNER"

// roundPause is the wait between rescans.
const roundPause = 20 * time.Millisecond

// maxRounds bounds Sweep's rescans (a process forking as fast as it is
// killed).
const maxRounds = 20

// Owner names the processes of one kind started for one directory:
// kind plus a digest of the directory's absolute path.
func Owner(kind, dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	sum := sha256.Sum256([]byte(dir))
	return kind + ":" + hex.EncodeToString(sum[:8])
}

// Env returns the environment entry marking a process as owner's.
func Env(owner string) string { return EnvKey + "=" + owner }

// Sweep kills every process (but this one and its ancestors) whose
// environment marks it as owner's and returns how many it killed. It is
// for the owner's start, when none of its own processes runs yet.
func Sweep(owner string) (int, error) {
	return sweep("/proc", owner)
}

func sweep(proc, owner string) (int, error) {
	if owner == "" {
		return 0, errors.New("procsweep: empty owner")
	}
	mark := []byte(Env(owner))
	keep := ancestors(proc)
	killed := map[int]bool{}
	for range maxRounds {
		ents, err := os.ReadDir(proc)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return len(killed), nil
			}
			return len(killed), fmt.Errorf("procsweep: %w", err)
		}
		found := 0
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || keep[pid] {
				continue
			}
			env, err := os.ReadFile(filepath.Join(proc, e.Name(), "environ"))
			if err != nil || !hasEntry(env, mark) {
				continue // gone, a kernel thread, a zombie, or not ours
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
				found++ // (one not ours to kill, EPERM, is left alone)
				killed[pid] = true
			}
		}
		if found == 0 {
			return len(killed), nil
		}
		time.Sleep(roundPause) // let the killed ones exit before rescanning
	}
	return len(killed), fmt.Errorf("procsweep: processes of %s still appear after %d rounds", owner, maxRounds)
}

// hasEntry reports whether the NUL-separated environment env holds entry.
func hasEntry(env, entry []byte) bool {
	for len(env) > 0 {
		var e []byte
		e, env, _ = bytes.Cut(env, []byte{0})
		if bytes.Equal(e, entry) {
			return true
		}
	}
	return false
}

// ancestors returns this process and its ancestors: never swept, even if
// they carry the entry (a dorad started from a marked shell).
func ancestors(proc string) map[int]bool {
	out := map[int]bool{}
	pid := os.Getpid()
	for pid > 0 && !out[pid] {
		out[pid] = true
		b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "status"))
		if err != nil {
			break
		}
		pid = 0
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PPid:"); ok {
				pid, _ = strconv.Atoi(strings.TrimSpace(v))
				break
			}
		}
	}
	return out
}
