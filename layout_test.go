package dora_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const modulePath = "github.com/doraproject/dora"

// pkgImports maps each package directory of the module (slash-separated,
// relative to the module root, "." for the root) to the module packages its
// files import: deps from non-test files, testDeps from _test.go files.
type pkgImports struct {
	deps, testDeps map[string]bool
}

// moduleImports parses the import clauses of every Go file of the module
// (examples/ and testdata/ excluded: they are standalone programs).
func moduleImports(t *testing.T) map[string]*pkgImports {
	t.Helper()
	pkgs := map[string]*pkgImports{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "examples", "testdata", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		dir := filepath.ToSlash(filepath.Dir(path))
		p := pkgs[dir]
		if p == nil {
			p = &pkgImports{deps: map[string]bool{}, testDeps: map[string]bool{}}
			pkgs[dir] = p
		}
		for _, imp := range f.Imports {
			ip, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				return err
			}
			rel, ok := strings.CutPrefix(ip, modulePath)
			if !ok || (rel != "" && rel[0] != '/') {
				continue
			}
			rel = strings.TrimPrefix(rel, "/")
			if rel == "" {
				rel = "."
			}
			if strings.HasSuffix(path, "_test.go") {
				p.testDeps[rel] = true
			} else {
				p.deps[rel] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("parse the module: %v", err)
	}
	return pkgs
}

// closure returns every module package reachable from start through
// non-test imports, with the chain that reaches it.
func closure(pkgs map[string]*pkgImports, start map[string]bool) map[string]string {
	chain := map[string]string{}
	var queue []string
	for s := range start {
		chain[s] = s
		queue = append(queue, s)
	}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		p := pkgs[cur]
		if p == nil {
			continue
		}
		for dep := range p.deps {
			if _, seen := chain[dep]; !seen {
				chain[dep] = chain[cur] + " → " + dep
				queue = append(queue, dep)
			}
		}
	}
	return chain
}

func under(pkg, root string) bool { return pkg == root || strings.HasPrefix(pkg, root+"/") }

// TestDataPlaneImportsNothingUnderAdmin: the data plane (router, pool,
// autoscaler, with their tests) and the neutral ground it stands on
// (the root package, internal/) import nothing under admin/, directly or
// through another package. The control plane may import the data plane,
// never the reverse.
func TestDataPlaneImportsNothingUnderAdmin(t *testing.T) {
	pkgs := moduleImports(t)
	if len(pkgs) < 10 {
		t.Fatalf("found only %d packages: is the test running at the module root?", len(pkgs))
	}
	var roots []string
	for dir := range pkgs {
		for _, r := range []string{"router", "pool", "autoscaler", "internal", "."} {
			if under(dir, r) {
				roots = append(roots, dir)
			}
		}
	}
	sort.Strings(roots)
	for _, dir := range roots {
		start := map[string]bool{dir: true}
		for dep := range pkgs[dir].testDeps {
			start[dep] = true
		}
		for pkg, via := range closure(pkgs, start) {
			if under(pkg, "admin") || under(pkg, "cli") {
				if pkg != dir && !strings.HasPrefix(via, dir) {
					via = dir + " (test) → " + via
				}
				t.Errorf("%s reaches %s: %s", dir, pkg, via)
			}
		}
	}
}

// TestLayoutCheckSeesAViolation keeps the check above honest: a package
// importing admin/ is reported.
func TestLayoutCheckSeesAViolation(t *testing.T) {
	pkgs := map[string]*pkgImports{
		"router":             {deps: map[string]bool{"internal/store": true}, testDeps: map[string]bool{}},
		"internal/store":     {deps: map[string]bool{"admin/whatever": true}, testDeps: map[string]bool{}},
		"admin/whatever":     {deps: map[string]bool{}, testDeps: map[string]bool{}},
		"autoscaler":         {deps: map[string]bool{}, testDeps: map[string]bool{"admin/runtime": true}},
		"admin/runtime":      {deps: map[string]bool{}, testDeps: map[string]bool{}},
		"pool/consul":        {deps: map[string]bool{"internal/agenttest": true}, testDeps: map[string]bool{}},
		"internal/agenttest": {deps: map[string]bool{}, testDeps: map[string]bool{}},
	}
	if via := closure(pkgs, map[string]bool{"router": true})["admin/whatever"]; via != "router → internal/store → admin/whatever" {
		t.Errorf("router's chain to admin/whatever = %q", via)
	}
	if _, ok := closure(pkgs, map[string]bool{"pool/consul": true})["admin/whatever"]; ok {
		t.Error("pool/consul reported as reaching admin/whatever")
	}
	if _, err := os.Stat("go.mod"); err != nil {
		t.Fatalf("not at the module root: %v", err)
	}
}
