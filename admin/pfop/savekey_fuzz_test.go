package pfop

import (
	"regexp"
	"strings"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
)

func TestParseSaveKey(t *testing.T) {
	v := saveKeyValues{bucket: "b", etag: "Fetag", fname: "a.tar.gz", mimeType: "application/gzip", endUser: "u",
		fsize: 42, now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("CST", 8*3600)), vars: map[string]string{"x:v": "X"}}
	for _, c := range []struct{ tmpl, want string }{
		{"plain/key.txt", "plain/key.txt"},
		{"$(bucket)/$(etag)$(ext)", "b/Fetag.gz"},
		{"${fprefix}-${fname}-$(fsize)-$(mimeType)-$(endUser)-$(x:v)-$(x:none)", "a.tar-a.tar.gz-42-application/gzip-u-X-"},
		{"$(year)$(mon)$(day)T$(hour)$(min)$(sec)", "20260101T190405"}, // UTC
		{"$ $x $(", ""},      // unclosed
		{"cost$5", "cost$5"}, // a "$" opening nothing is literal
		{"$(key)", ""},
		{"$(x:)", ""},
		{"$(etag}", ""},
		{"${etag)", ""},
	} {
		tmpl, err := parseSaveKey(c.tmpl)
		if c.want == "" {
			if err == nil {
				t.Errorf("%q: parsed as %v, want an error", c.tmpl, tmpl)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.tmpl, err)
			continue
		}
		if got := tmpl.expand(v); got != c.want {
			t.Errorf("%q expands to %q, want %q", c.tmpl, got, c.want)
		}
	}
	for _, c := range []struct{ fname, mt, want string }{
		{"x.JPG", "image/png", ".JPG"}, {"noext", "image/jpeg; q=1", ".jpg"}, {"", "application/x-unknown", ""}, {"dot.", "text/plain", ".txt"},
	} {
		if got := fileExt(c.fname, c.mt); got != c.want {
			t.Errorf("fileExt(%q, %q) = %q, want %q", c.fname, c.mt, got, c.want)
		}
	}
}

// FuzzSaveKey: parseSaveKey never panics; a template without "$" is its
// own static key; an expansion holds the template's literal text in order
// and stops soon after dora.MaxKeyBytes however large the variables.
func FuzzSaveKey(f *testing.F) {
	for _, s := range []string{
		"a/b.txt", "$(etag)", "${etag}", "$(bucket)/$(year)/$(mon)/$(day)/$(hour)$(min)$(sec)-$(fprefix)$(ext)",
		"$(x:a)$(x:a)$(x:a)", "$(uuid)", "$(", "${", "$$(etag)", "$(x:)", "$(key)", "$(etag}", "é/$(fname)",
		"$(fsize)-$(mimeType)-$(endUser)", "cost$5",
	} {
		f.Add(s, strings.Repeat("v", 100))
	}
	uuidRE := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	f.Fuzz(func(t *testing.T, s, x string) {
		tmpl, err := parseSaveKey(s)
		if err != nil {
			if tmpl != nil {
				t.Fatalf("%q: error %v with a template", s, err)
			}
			return
		}
		lit, static := tmpl.static()
		if !strings.Contains(s, "$") && (!static || lit != s) {
			t.Fatalf("%q: static %v %q", s, static, lit)
		}
		v := saveKeyValues{bucket: "b", etag: "E", fname: x, mimeType: "text/plain", endUser: x, fsize: 7,
			now: time.Unix(1700000000, 0), vars: map[string]string{}}
		for _, p := range tmpl {
			if strings.HasPrefix(p.name, "x:") {
				v.vars[p.name] = x
			}
			if p.name == "" && (p.lit == "" || strings.Contains(p.lit, "$(") || strings.Contains(p.lit, "${")) {
				t.Fatalf("%q: literal %q (a \"$(\" opens a variable or fails)", s, p.lit)
			}
		}
		got := tmpl.expand(v)
		maxVar := max(len(x), 64) // a variable's longest value here
		if len(got) > dora.MaxKeyBytes+maxVar+len(s) {
			t.Fatalf("%q: expansion of %d bytes", s, len(got))
		}
		if static && got != lit {
			t.Fatalf("%q: static %q expands to %q", s, lit, got)
		}
		rest := got
		for _, p := range tmpl {
			if p.name == "" {
				i := strings.Index(rest, p.lit)
				if i < 0 {
					if len(got) > dora.MaxKeyBytes {
						break // stopped early
					}
					t.Fatalf("%q: literal %q missing from %q", s, p.lit, got)
				}
				rest = rest[i+len(p.lit):]
			}
		}
		if s == "$(uuid)" && !uuidRE.MatchString(got) {
			t.Fatalf("uuid %q", got)
		}
	})
}
