package agenttest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// PidInDir finds a process whose working directory is dir, such as an
// instance Nomad started in its allocation's task directory, so a test
// can kill it or check whom it runs as. Linux only (it reads /proc).
func PidInDir(dir string) (int, error) {
	return pidWhere(func(cwd string) bool { return cwd == dir }, "in "+dir)
}

// PidBelow finds a process whose working directory is below dir (not dir
// itself), for when the exact directory is not known in advance.
func PidBelow(dir string) (int, error) {
	prefix := dir + string(filepath.Separator)
	return pidWhere(func(cwd string) bool { return strings.HasPrefix(cwd, prefix) }, "below "+dir)
}

// pidWhere returns the first process (in /proc's order) whose working
// directory satisfies match; where describes match in the error.
func pidWhere(match func(cwd string) bool, where string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && match(cwd) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process runs %s", where)
}
