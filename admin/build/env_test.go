package build

import (
	"slices"
	"testing"
)

func TestEnv(t *testing.T) {
	allow := func(k string) bool { return k == "PATH" || k == "LANG" }
	tests := []struct {
		name string
		edit func(e *Env)
		want []string
	}{
		{"allowlist only, base order, later duplicate wins", func(*Env) {},
			[]string{"PATH=/b", "LANG=C"}},
		{"set appends a new key, replaces an old one in place", func(e *Env) {
			e.Set("HOME", "/h")
			e.Set("PATH", "/p")
		}, []string{"PATH=/p", "LANG=C", "HOME=/h"}},
		{"deleted and set again keeps its first position, listed once", func(e *Env) {
			e.Delete("PATH")
			e.Set("HOME", "/h")
			e.Set("PATH", "/p")
		}, []string{"PATH=/p", "LANG=C", "HOME=/h"}},
		{"deleted stays out", func(e *Env) { e.Delete("LANG") }, []string{"PATH=/b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEnv([]string{"PATH=/a", "SECRET=x", "LANG=C", "noequals", "PATH=/b"}, allow)
			tt.edit(e)
			if got := e.Environ(); !slices.Equal(got, tt.want) {
				t.Fatalf("Environ() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWithin(t *testing.T) {
	tests := []struct {
		root, p string
		want    bool
	}{
		{"/a/b", "/a/b", true},
		{"/a/b", "/a/b/c/d", true},
		{"/a/b", "/a", false},
		{"/a/b", "/a/bc", false},
		{"/a/b", "/a/b/../c", false},
		{"/a/b", "/a/b/..c", true},
		{"/a/b", "rel", false},
	}
	for _, tt := range tests {
		if got := Within(tt.root, tt.p); got != tt.want {
			t.Errorf("Within(%q, %q) = %v, want %v", tt.root, tt.p, got, tt.want)
		}
	}
}
