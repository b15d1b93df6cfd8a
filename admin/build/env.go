package build

import (
	"os"
	"path/filepath"
	"strings"
)

// Env is an ordered set of environment variables for a child process the
// platform starts with user code (a build_script line, an instance): it
// begins with the allowlisted variables of the platform's environment, so
// tokens and keys never leak, and the caller then sets its own. A key keeps
// the position it was first set at, even when deleted and set again.
type Env struct {
	keys []string
	vals map[string]string
}

// NewEnv starts an Env with the variables of base (os.Environ when nil)
// whose name allowed accepts, in base's order; a later duplicate wins.
func NewEnv(base []string, allowed func(key string) bool) *Env {
	if base == nil {
		base = os.Environ()
	}
	e := &Env{vals: map[string]string{}}
	for _, kv := range base {
		k, v, ok := strings.Cut(kv, "=")
		if ok && allowed(k) {
			e.Set(k, v)
		}
	}
	return e
}

// Set gives k the value v.
func (e *Env) Set(k, v string) {
	if _, ok := e.vals[k]; !ok {
		e.keys = append(e.keys, k)
	}
	e.vals[k] = v
}

// Get returns k's value and whether it is set.
func (e *Env) Get(k string) (string, bool) {
	v, ok := e.vals[k]
	return v, ok
}

// Delete unsets k.
func (e *Env) Delete(k string) {
	delete(e.vals, k)
}

// Environ returns the variables as "k=v" in order, for exec.Cmd.Env.
func (e *Env) Environ() []string {
	env := make([]string, 0, len(e.keys))
	listed := make(map[string]bool, len(e.keys))
	for _, k := range e.keys {
		if v, ok := e.vals[k]; ok && !listed[k] {
			env = append(env, k+"="+v)
			listed[k] = true // a key deleted and set again is listed once
		}
	}
	return env
}

// Within reports whether p is root or below it (both cleaned, both
// absolute or both relative); callers resolve symlinks first.
func Within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}
