package store

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// layoutPrefixes reads the Prefix constants of store.go, so a prefix added
// later is checked without editing this test.
func layoutPrefixes(t *testing.T) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "store.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Prefix") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok {
					continue
				}
				v, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				out[name.Name] = v
			}
		}
	}
	if len(out) < 10 {
		t.Fatalf("found %d Prefix constants in store.go, want at least 10", len(out))
	}
	return out
}

// keyViolations reports, for one parsed file outside this package, every
// place that builds a store key by hand: a Prefix constant of this package
// used as an operand of + or as an argument of a formatting or joining call,
// or a string literal that spells a key of the layout ("ufops/grepd",
// "accounts/") passed to a call, concatenated or listed in a slice. (A
// literal elsewhere, such as a map key naming a directory "builds/grepd/1",
// is not taken for a store key.)
func keyViolations(fset *token.FileSet, f *ast.File, prefixes map[string]string) []string {
	storeName := ""
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == "github.com/doraproject/dora/internal/store" {
			storeName = "store"
			if imp.Name != nil {
				storeName = imp.Name.Name
			}
		}
	}
	isPrefix := func(e ast.Expr) bool {
		sel, ok := ast.Unparen(e).(*ast.SelectorExpr)
		if !ok || storeName == "" {
			return false
		}
		id, ok := sel.X.(*ast.Ident)
		_, known := prefixes[sel.Sel.Name]
		return ok && id.Name == storeName && known
	}
	var out []string
	report := func(n ast.Node, why string) {
		out = append(out, fset.Position(n.Pos()).String()+": "+why)
	}
	spellsKey := func(e ast.Expr) {
		lit, ok := ast.Unparen(e).(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return
		}
		v, err := strconv.Unquote(lit.Value)
		if err != nil {
			return
		}
		for name, p := range prefixes {
			if strings.HasPrefix(v, p) {
				report(lit, "string literal "+strconv.Quote(v)+" spells a store key under "+name+"; use a key builder of internal/store")
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BinaryExpr:
			if n.Op == token.ADD && (isPrefix(n.X) || isPrefix(n.Y)) {
				report(n, "store key concatenated from a Prefix constant; use a key builder of internal/store")
			}
			if n.Op == token.ADD {
				spellsKey(n.X)
			}
		case *ast.CompositeLit:
			for _, e := range n.Elts {
				if _, kv := e.(*ast.KeyValueExpr); !kv {
					spellsKey(e)
				}
			}
		case *ast.CallExpr:
			for _, a := range n.Args {
				spellsKey(a)
			}
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if id, ok := sel.X.(*ast.Ident); ok && (id.Name == "fmt" || id.Name == "strings" || id.Name == "path") &&
				(strings.HasPrefix(sel.Sel.Name, "Sprint") || sel.Sel.Name == "Join" || sel.Sel.Name == "Concat") {
				for _, a := range n.Args {
					if isPrefix(a) {
						report(n, "store key formatted from a Prefix constant; use a key builder of internal/store")
					}
				}
			}
		}
		return true
	})
	return out
}

// TestKeysBuiltOnlyInStore: no package but this one spells a metadata key.
// The layout lives in keys.go; everyone else calls its builders, so the
// layout can change in one place.
func TestKeysBuiltOnlyInStore(t *testing.T) {
	prefixes := layoutPrefixes(t)
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	self, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch {
			case path == self, d.Name() == ".git", d.Name() == "examples", d.Name() == "testdata", d.Name() == "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		files++
		for _, v := range keyViolations(fset, f, prefixes) {
			t.Error(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("scanned only %d files under %s", files, root)
	}
}

// TestKeyViolationsSeen keeps the check above honest on known bad code.
func TestKeyViolationsSeen(t *testing.T) {
	prefixes := layoutPrefixes(t)
	src := `package x

import (
	"fmt"

	st "github.com/doraproject/dora/internal/store"
)

var a = st.PrefixUfops + "grepd"
var b = fmt.Sprintf("%s%s/%06d", st.PrefixBuilds, "grepd", 1)
var c = st.Put(nil, nil, "releases/grepd/v1", nil)
var f = map[string]int{"builds/grepd/1": 1} // a path, not a key
var g = []string{"ufops/grepd"}
var d = st.List(nil, nil, st.PrefixAccounts) // listing a whole kind is fine
var e = st.UfopKey("grepd")                  // so is a builder
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "x.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := keyViolations(fset, f, prefixes)
	if len(got) != 4 {
		t.Fatalf("violations %d, want 4:\n%s", len(got), strings.Join(got, "\n"))
	}
	for i, line := range []string{"x.go:9:", "x.go:10:", "x.go:11:", "x.go:13:"} {
		if !strings.HasPrefix(got[i], line) {
			t.Errorf("violation %d = %q, want at %s", i, got[i], line)
		}
	}
}
