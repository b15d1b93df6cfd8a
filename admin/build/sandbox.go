package build

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// User is an operating-system account that user code (build_script lines,
// ufop instances) runs as instead of the platform's own user, so it cannot
// read the platform's keys, metadata or other accounts' objects
// (docs/security.md). A nil *User means "the platform's own user".
type User struct {
	// Name is the account's name, "" when given numerically without a
	// passwd entry.
	Name string
	// Uid and Gid are the numeric user and primary group; supplementary
	// groups are always cleared.
	Uid, Gid uint32
}

// String names the user for logs and errors, e.g. "nobody (65534:65534)".
func (u *User) String() string {
	if u == nil {
		return "the platform's own user"
	}
	if u.Name == "" {
		return fmt.Sprintf("%d:%d", u.Uid, u.Gid)
	}
	return fmt.Sprintf("%s (%d:%d)", u.Name, u.Uid, u.Gid)
}

// Credential is the process credential that makes a child run as u, with
// no supplementary groups (the platform's, root's included, are dropped).
func (u *User) Credential() *syscall.Credential {
	return &syscall.Credential{Uid: u.Uid, Gid: u.Gid, Groups: []uint32{}}
}

// ErrBadUser is wrapped by LookupUser's errors.
var ErrBadUser = errors.New("bad run-as user")

// LookupUser resolves a run-as specification: a user name ("nobody"), a
// numeric uid ("65534"), or either followed by ":group" (a group name or
// numeric gid). Without a group the user's primary group is used (the uid
// itself for a numeric uid without a passwd entry).
func LookupUser(spec string) (*User, error) {
	spec = strings.TrimSpace(spec)
	name, group, hasGroup := strings.Cut(spec, ":")
	if name == "" || (hasGroup && group == "") {
		return nil, fmt.Errorf("%w: %q: want user, uid, user:group or uid:gid", ErrBadUser, spec)
	}
	u := &User{}
	var primary string
	if id, err := strconv.ParseUint(name, 10, 32); err == nil {
		u.Uid = uint32(id)
		primary = name
		if pw, err := user.LookupId(name); err == nil {
			u.Name, primary = pw.Username, pw.Gid
		}
	} else {
		pw, err := user.Lookup(name)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrBadUser, spec, err)
		}
		id, err := strconv.ParseUint(pw.Uid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: uid %q", ErrBadUser, spec, pw.Uid)
		}
		u.Name, u.Uid, primary = pw.Username, uint32(id), pw.Gid
	}
	if hasGroup {
		primary = group
		if _, err := strconv.ParseUint(group, 10, 32); err != nil {
			g, err := user.LookupGroup(group)
			if err != nil {
				return nil, fmt.Errorf("%w: %q: %v", ErrBadUser, spec, err)
			}
			primary = g.Gid
		}
	}
	gid, err := strconv.ParseUint(primary, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: gid %q", ErrBadUser, spec, primary)
	}
	u.Gid = uint32(gid)
	return u, nil
}

// CheckReachable verifies that u may traverse every directory from / down
// to dir (the execute bit for u as owner, group or other; ACLs are not
// considered), so a process running as u can use paths below dir. The
// error names the first directory that stops it. A nil u always passes.
func CheckReachable(dir string, u *User) error {
	if u == nil {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	p := abs
	var chain []string
	for {
		chain = append(chain, p)
		parent := filepath.Dir(p)
		if parent == p {
			break
		}
		p = parent
	}
	for i := len(chain) - 1; i >= 0; i-- {
		fi, err := os.Stat(chain[i])
		if err != nil {
			return fmt.Errorf("%s: %w", chain[i], err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil // not a unix file system: nothing to check
		}
		var bit os.FileMode = 0o001
		switch {
		case st.Uid == u.Uid:
			bit = 0o100
		case st.Gid == u.Gid:
			bit = 0o010
		}
		if fi.Mode().Perm()&bit == 0 {
			return fmt.Errorf("user %s cannot reach %s: %s is %04o %d:%d (give it o+x, or choose a directory %s can reach)",
				u, abs, chain[i], fi.Mode().Perm(), st.Uid, st.Gid, u)
		}
	}
	return nil
}

// ensureDir creates dir (and missing parents with mode) and sets its mode
// exactly, so an existing directory gets it too.
func ensureDir(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return err
	}
	return os.Chmod(dir, mode)
}

// envAllowed reports whether a build_script line may see the platform's
// variable k: locale, time zone, PATH, the user name and the Go
// toolchain's settings.
// Everything else (tokens, cloud keys, DORA_*) stays with the platform.
func envAllowed(k string) bool {
	switch k {
	case "PATH", "LANG", "LANGUAGE", "TZ", "USER", "LOGNAME",
		"GOROOT", "GOPATH", "GOCACHE", "GOMODCACHE", "GOFLAGS", "GOPROXY", "GONOPROXY",
		"GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GOINSECURE", "GOTOOLCHAIN",
		"GOOS", "GOARCH", "GOAMD64", "GOARM64", "GOEXPERIMENT", "CGO_ENABLED":
		return true
	}
	return strings.HasPrefix(k, "LC_")
}
