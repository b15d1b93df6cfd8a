package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// allowedDora are the only packages of this module the CLI may link: the
// domain model, the wire types, request signing, the API client and the
// CLI itself. Anything else of the module is server code.
var allowedDora = map[string]bool{
	"github.com/doraproject/dora":                  true,
	"github.com/doraproject/dora/internal/api":     true,
	"github.com/doraproject/dora/internal/auth":    true,
	"github.com/doraproject/dora/cli/buildinfo":    true,
	"github.com/doraproject/dora/admin/client":     true,
	"github.com/doraproject/dora/cli/qdoractl":     true,
	"github.com/doraproject/dora/cli/qdoractl/cmd": true,
}

// forbidden are import path prefixes of server-side libraries that must
// never reach the CLI binary (this module's own server packages are caught
// by allowedDora).
var forbidden = []string{
	"github.com/valyala/fasthttp",
	"go.etcd.io/bbolt",
	"github.com/prometheus/",
	"github.com/hashicorp/consul",
	"github.com/hashicorp/nomad",
	"github.com/redis/",
}

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(gobin); err != nil {
		if gobin, err = exec.LookPath("go"); err != nil {
			t.Fatalf("no go tool to list dependencies: %v", err)
		}
	}
	out, err := exec.Command(gobin, append([]string{"list"}, args...)...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list %v: %v\n%s", args, err, ee.Stderr)
		}
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Fields(string(out))
}

// TestNoServerPackages fails when qdoractl links a server package: the CLI
// talks to the admin API through admin/client and the wire types of
// internal/api only, so it stays small and builds without the servers'
// dependencies.
func TestNoServerPackages(t *testing.T) {
	deps := goList(t, "-deps", "github.com/doraproject/dora/cli/qdoractl")
	if len(deps) < 10 {
		t.Fatalf("go list -deps returned %d packages: %v", len(deps), deps)
	}
	for _, p := range deps {
		if strings.HasPrefix(p, "github.com/doraproject/dora") && !allowedDora[p] {
			t.Errorf("qdoractl links %s, a server package of this module", p)
		}
		for _, f := range forbidden {
			if strings.HasPrefix(p, f) {
				t.Errorf("qdoractl links %s (matches %q)", p, f)
			}
		}
	}
}

// TestWireTypesAreStdlibOnly keeps internal/api a package of pure types: the
// standard library and the domain model, nothing else.
func TestWireTypesAreStdlibOnly(t *testing.T) {
	for _, pkg := range []string{"github.com/doraproject/dora/internal/api", "github.com/doraproject/dora"} {
		deps := goList(t, "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg)
		for _, p := range deps {
			if p != "github.com/doraproject/dora" && p != "github.com/doraproject/dora/internal/api" {
				t.Errorf("%s depends on %s; wire types must need the standard library only", pkg, p)
			}
		}
	}
}
