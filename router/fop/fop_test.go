package fop

import (
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	const sig = "dGVzdHNpZ25hdHVyZXRlc3RzaWduYXQ="
	tests := []struct {
		in   string
		want Request
	}{
		{"", Request{}},
		{"qhash/md5", Request{Steps: []Step{{Name: "qhash", Args: []string{"md5"}, Raw: "qhash/md5"}}}},
		{"imageInfo", Request{Steps: []Step{{Name: "imageInfo", Raw: "imageInfo"}}}},
		{"grepd/test-param|imageView2/2/w/200/h/200", Request{Steps: []Step{
			{Name: "grepd", Args: []string{"test-param"}, Raw: "grepd/test-param"},
			{Name: "imageView2", Args: []string{"2", "w", "200", "h", "200"}, Raw: "imageView2/2/w/200/h/200"},
		}}},
		{"grepd/日本", Request{Steps: []Step{{Name: "grepd", Args: []string{"日本"}, Raw: "grepd/日本"}}}},
		// Ufop names may start with a digit, '-' or '_' (dora.ValidateUfopName).
		{"3dview/x|_priv-x|-dash1", Request{Steps: []Step{
			{Name: "3dview", Args: []string{"x"}, Raw: "3dview/x"},
			{Name: "_priv-x", Raw: "_priv-x"},
			{Name: "-dash1", Raw: "-dash1"},
		}}},
		{"e=1700000000&token=AK:" + sig, Request{
			Deadline: 1700000000, Token: "AK:" + sig, TokenAK: "AK", TokenSign: sig,
			SignedQuery: "e=1700000000",
		}},
		{"grepd/x&e=1700000000&token=my-ak:" + sig, Request{
			Steps:    []Step{{Name: "grepd", Args: []string{"x"}, Raw: "grepd/x"}},
			Deadline: 1700000000, Token: "my-ak:" + sig, TokenAK: "my-ak", TokenSign: sig,
			SignedQuery: "grepd/x&e=1700000000",
		}},
		{"grepd/x|saveas/b3V0OnJlcy9hLnR4dA==", Request{
			Steps:  []Step{{Name: "grepd", Args: []string{"x"}, Raw: "grepd/x"}},
			SaveAs: &SaveAs{Encoded: "b3V0OnJlcy9hLnR4dA==", Bucket: "out", Key: "res/a.txt"},
		}},
		{"saveas/Yjpr", Request{SaveAs: &SaveAs{Encoded: "Yjpr", Bucket: "b", Key: "k"}}},
		{"grepd/x|saveas/Yjpr/sign/AK:" + sig + "&e=5&token=AK2:" + sig, Request{
			Steps: []Step{{Name: "grepd", Args: []string{"x"}, Raw: "grepd/x"}},
			SaveAs: &SaveAs{Encoded: "Yjpr", Bucket: "b", Key: "k", AK: "AK", Sign: sig,
				SignedQuery: "grepd/x|saveas/Yjpr"},
			Deadline: 5, Token: "AK2:" + sig, TokenAK: "AK2", TokenSign: sig,
			SignedQuery: "grepd/x|saveas/Yjpr/sign/AK:" + sig + "&e=5",
		}},
		{"p/1/grepd/x", Request{Persisted: "grepd/x"}},
		{"p/1/grepd/x|imageInfo&e=9&token=a:b", Request{Persisted: "grepd/x|imageInfo",
			Deadline: 9, Token: "a:b", TokenAK: "a", TokenSign: "b", SignedQuery: "p/1/grepd/x|imageInfo&e=9"}},
		{"p/2/x", Request{Steps: []Step{{Name: "p", Args: []string{"2", "x"}, Raw: "p/2/x"}}}},
		{"a|b|c|d|e|f|g|h|i|j", Request{Steps: []Step{
			{Name: "a", Raw: "a"}, {Name: "b", Raw: "b"}, {Name: "c", Raw: "c"}, {Name: "d", Raw: "d"}, {Name: "e", Raw: "e"},
			{Name: "f", Raw: "f"}, {Name: "g", Raw: "g"}, {Name: "h", Raw: "h"}, {Name: "i", Raw: "i"}, {Name: "j", Raw: "j"},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse(%q)\n got %#v\nwant %#v", tt.in, got, tt.want)
			}
			if s := got.String(); s != tt.in {
				t.Fatalf("String() = %q, want %q", s, tt.in)
			}
		})
	}
}

// TestParseConventions: the URL conventions Qiniu users rely on (issue 12):
// percent-decoding once, ignored parameters, attname, signs over the raw text.
func TestParseConventions(t *testing.T) {
	const sig = "dGVzdHNpZ25hdHVyZXRlc3RzaWduYXQ="
	tests := []struct {
		in    string
		want  Request
		canon string // String(); "" means in, "<empty>" the empty string
	}{
		// A raw pipeline is kept verbatim: the ufop decodes its own text.
		{"grepd/a%20b=c", Request{Steps: []Step{{Name: "grepd", Args: []string{"a%20b=c"}, Raw: "grepd/a%20b=c"}}}, ""},
		{"grepd/100%", Request{Steps: []Step{{Name: "grepd", Args: []string{"100%"}, Raw: "grepd/100%"}}}, ""},
		// Encoded whole, decoded once: spaces may appear; the canonical
		// form is then the encoded one.
		{"grepd%2Fa%20b", Request{Steps: []Step{{Name: "grepd", Args: []string{"a b"}, Raw: "grepd/a b"}}}, ""},
		{"grepd%2F%E6%97%A5", Request{Steps: []Step{{Name: "grepd", Args: []string{"日"}, Raw: "grepd/日"}}}, "grepd/日"},
		// Fully percent-encoded pipelines decode once.
		{"grepd%2Fhello", Request{Steps: []Step{{Name: "grepd", Args: []string{"hello"}, Raw: "grepd/hello"}}}, "grepd/hello"},
		{"grepd%2fhello%7Cqhash%2Fmd5", Request{Steps: []Step{
			{Name: "grepd", Args: []string{"hello"}, Raw: "grepd/hello"},
			{Name: "qhash", Args: []string{"md5"}, Raw: "qhash/md5"},
		}}, "grepd/hello|qhash/md5"},
		{"grepd%2F100%2525", Request{Steps: []Step{{Name: "grepd", Args: []string{"100%25"}, Raw: "grepd/100%25"}}}, "grepd/100%25"},
		{"grepd/a%26b", Request{Steps: []Step{{Name: "grepd", Args: []string{"a%26b"}, Raw: "grepd/a%26b"}}}, ""},
		{"grepd%2Fa%26b", Request{Steps: []Step{{Name: "grepd", Args: []string{"a&b"}, Raw: "grepd/a&b"}}}, "grepd%2Fa%26b"},
		{"grepd/a+b", Request{Steps: []Step{{Name: "grepd", Args: []string{"a+b"}, Raw: "grepd/a+b"}}}, ""},
		// p/1/ is Dora's prefix: the pipeline after it may be encoded whole.
		{"p/1/grepd%2Fa%2520b%7Cqhash%2Fmd5", Request{Persisted: "grepd/a%20b|qhash/md5"}, "p/1/grepd/a%20b|qhash/md5"},
		{"p/1/grepd/a%20b", Request{Persisted: "grepd/a%20b"}, ""},
		// Parameters Qiniu ignores are ignored; attname is kept.
		{"v=123", Request{Ignored: []string{"v"}}, "<empty>"},
		{"imageView2/1/w/100&v=2", Request{Steps: []Step{{Name: "imageView2", Args: []string{"1", "w", "100"}, Raw: "imageView2/1/w/100"}}, Ignored: []string{"v"}}, "imageView2/1/w/100"},
		{"attname=report.txt", Request{AttName: "report.txt", HasAttName: true}, ""},
		{"attname=", Request{HasAttName: true}, ""},
		{"attname=%E6%8A%A5%E5%91%8A+1.txt&_=1", Request{AttName: "报告 1.txt", HasAttName: true, Ignored: []string{"_"}}, "attname=%E6%8A%A5%E5%91%8A+1.txt"},
		{"qhash/md5&attname=h.json&v=1&e=5&token=AK:" + sig, Request{
			Steps:   []Step{{Name: "qhash", Args: []string{"md5"}, Raw: "qhash/md5"}},
			AttName: "h.json", HasAttName: true, Ignored: []string{"v"},
			Deadline: 5, Token: "AK:" + sig, TokenAK: "AK", TokenSign: sig,
			SignedQuery: "qhash/md5&attname=h.json&v=1&e=5",
		}, "qhash/md5&attname=h.json&e=5&token=AK:" + sig},
		// A fully encoded saveas: the sign covers the raw text as sent.
		{"grepd%2Fx%7Csaveas%2FYjpr%2Fsign%2FAK:" + sig, Request{
			Steps:  []Step{{Name: "grepd", Args: []string{"x"}, Raw: "grepd/x"}},
			SaveAs: &SaveAs{Encoded: "Yjpr", Bucket: "b", Key: "k", AK: "AK", Sign: sig, SignedQuery: "grepd%2Fx%7Csaveas%2FYjpr"},
		}, "grepd/x|saveas/Yjpr/sign/AK:" + sig},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Parse(%q)\n got %#v\nwant %#v", tt.in, got, tt.want)
			}
			canon := tt.canon
			switch canon {
			case "":
				canon = tt.in
			case "<empty>":
				canon = ""
			}
			if s := got.String(); s != canon {
				t.Fatalf("String() = %q, want %q", s, canon)
			}
			again, err := Parse(canon)
			if err != nil {
				t.Fatalf("Parse(canonical %q): %v", canon, err)
			}
			if !sameMeaning(again, got) {
				t.Fatalf("canonical %q reads differently:\n %#v\n %#v", canon, again, got)
			}
		})
	}
}

// sameMeaning compares what runs and what is answered, not the raw text
// (SignedQuery, Ignored).
func sameMeaning(a, b Request) bool {
	a.SignedQuery, b.SignedQuery = "", ""
	a.Ignored, b.Ignored = nil, nil
	if a.SaveAs != nil && b.SaveAs != nil {
		x, y := *a.SaveAs, *b.SaveAs
		x.SignedQuery, y.SignedQuery = "", ""
		a.SaveAs, b.SaveAs = &x, &y
	}
	return reflect.DeepEqual(a, b)
}

// TestParseEncodedEqualsRaw: a pipeline percent-encoded whole reads
// exactly as the raw one.
func TestParseEncodedEqualsRaw(t *testing.T) {
	for _, raw := range []string{
		"grepd/hello", "grepd/test-param|imageView2/2/w/200/h/200", "p/1/grepd/x|qhash/md5",
		"imageMogr2/thumbnail/!50p|saveas/b3V0OnJlcy9hLnR4dA==",
	} {
		enc := url.PathEscape(raw)
		enc = strings.NewReplacer("/", "%2F", "|", "%7C", "!", "%21", "=", "%3D").Replace(enc)
		a, err := Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Parse(enc)
		if err != nil {
			t.Fatalf("Parse(%q): %v", enc, err)
		}
		if !sameMeaning(a, b) {
			t.Fatalf("%q and %q read differently:\n %#v\n %#v", raw, enc, a, b)
		}
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct{ in, want string }{
		{"|", "step 1: empty step"},
		{"a||b", "step 2: empty step"},
		{"a|", "step 2: empty step"},
		{"|a", "step 1: empty step"},
		{"a|b|/x", "step 3: empty name"},
		{"a.b/x", `step 1: invalid name "a.b"`},
		{"grepd/", "step 1 (grepd): empty argument 1"},
		{"grepd/a//b", "step 1 (grepd): empty argument 2"},
		{"a|b|c|d|e|f|g|h|i|j|k", "11 steps, more than 10"},
		{"a|b|c|d|e|f|g|h|i|j|saveas/Yjpr", "11 steps, more than 10"},
		{strings.Repeat("a", MaxQueryBytes+1), "more than 2048"},
		{"grepd/a\nb", "control character"},
		{"grepd/a b", "control character or space"},
		{"grepd/\x7f", "control character"},
		{"grepd/\xff", "invalid UTF-8"},
		{"saveas/Yjpr|grepd/x", "step 1: saveas must be the last step"},
		{"saveas/Yjp", "not padded URL-safe base64"},
		{"saveas/b3V0OnJlcy9hLnR4dA", "not padded URL-safe base64"},
		{"saveas/b3V0OnJlcy9hLnR4dA+=", "not padded URL-safe base64"},
		{"saveas/bm9rZXk=", "is not <bucket>:<key>"},
		{"saveas/Oms=", "empty bucket"},
		{"saveas/Yjo=", "empty key"},
		{"saveas", "want saveas/<EncodedEntryURI>"},
		{"saveas/Yjpr/sign", "want saveas/<EncodedEntryURI>"},
		{"saveas/Yjpr/sig/a:b", `got "sig" after the entry`},
		{"saveas/Yjpr/sign/ab", "is not <AK>:<sign>"},
		{"saveas/Yjpr/sign/:b", "empty AK"},
		{"p/1/", "p/1/: empty persisted fop"},
		{"p/1/a|saveas/Yjpr", "saveas is not allowed here"},
		{"p/1/a||b", "p/1/: malformed fop: step 2: empty step"},
		{"a&", "empty parameter after '&'"},
		{"&e=1&token=a:b", "empty fop before '&'"},
		{"a&x%41=1", `parameter 1: invalid name "x%41"`},
		{"a&b/c", `"b/c" is not name=value (steps of a pipeline are joined with '|', not '&')`},
		{"grepd/a%7Cb", `ambiguous fop: %7C at byte 7, in a pipeline whose other separators are raw`},
		{"grepd/a%2fb", `ambiguous fop: %2f at byte 7`},
		{"grepd%2Fa|qhash%2Fmd5", `ambiguous fop: %2F at byte 5`},
		{"p/1/grepd/a%7Cb", `ambiguous fop: %7C`},
		{"grepd%2Fa%257Cb", `ambiguous fop: %7C at byte 7 after decoding`},
		{"grepd%2Fa%2", `byte 9: '%' not followed by two hex digits in a percent-encoded pipeline`},
		{"grepd%2Fa%zz", `byte 9: '%' not followed by two hex digits`},
		{"grepd%2Fa%0Ab", "decoded fop byte 7: control character 0x0a"},
		{"grepd%2Fa%FFb", "decoded fop byte 7: invalid UTF-8"},
		{"grepd%2F%2Fx", "step 1 (grepd): empty argument 1"},
		{"a&attname=x&attname=y", "duplicate parameter attname"},
		{"a&attname=%0A", "attname: control character"},
		{"a&attname=%zz", "attname: invalid URL escape"},
		{"a&e=1&token=a:b&v=2", `parameter 3: "v=2" after token= is not covered by the download token`},
		{"a&e=1", "e without token"},
		{"a&token=a:b", "token without e"},
		{"token=a:b", "token without e"},
		{"a&e=1&e=2&token=a:b", "duplicate parameter e"},
		{"a&e=1&token=a:b&token=a:b", "after token= is not covered"},
		{"a&e=1&token=a:b&e=1", "after token= is not covered"},
		{"a&e=1x&token=a:b", "not a decimal"},
		{"a&e=-1&token=a:b", "not a decimal"},
		{"a&e=+1&token=a:b", "not a decimal"},
		{"a&e=01&token=a:b", "leading zero"},
		{"a&e=0&token=a:b", "leading zero"},
		{"a&e=&token=a:b", "empty deadline"},
		{"a&e=99999999999999999999&token=a:b", "out of range"},
		{"a&e=1&token=ab", "is not <AK>:<sign>"},
		{"a&e=1&token=a:b/c", "sign: invalid character"},
		{"a&e=1&token=a:", "empty sign"},
		{"a&e=1&&token=a:b", "parameter 2: empty"},
		{"a&e", `"e" is not name=value`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %#v, want error %q", tt.in, got, tt.want)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrMalformed", tt.in, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse(%q) error %q, want it to contain %q", tt.in, err, tt.want)
			}
			if !reflect.DeepEqual(got, Request{}) {
				t.Fatalf("Parse(%q) returned a partial request %#v with an error", tt.in, got)
			}
		})
	}
}

func TestPipeline(t *testing.T) {
	r, err := Parse("a/1|b/2/3|saveas/Yjpr&e=1&token=a:b")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Pipeline(); got != "a/1|b/2/3" {
		t.Fatalf("Pipeline() = %q", got)
	}
	if got := (Request{}).Pipeline(); got != "" {
		t.Fatalf("empty Pipeline() = %q", got)
	}
}

// TestParseAppend checks that the steps go into the caller's buffer when
// they fit, and into a new array when they do not.
func TestParseAppend(t *testing.T) {
	var buf [2]Step
	r, err := ParseAppend("grepd/x|qhash/md5", buf[:0])
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Steps) != 2 || &r.Steps[0] != &buf[0] || buf[1].Name != "qhash" {
		t.Fatalf("steps %#v not in the buffer %#v", r.Steps, buf)
	}
	r, err = ParseAppend("a|b|c", buf[:0])
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Steps) != 3 || &r.Steps[0] == &buf[0] || buf[0].Name != "grepd" {
		t.Fatalf("3 steps %#v written to the 2-step buffer %#v", r.Steps, buf)
	}
	want, _ := Parse("a|b|c")
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("ParseAppend %#v, Parse %#v", r, want)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", "qhash/md5", "grepd/x|imageView2/2/w/200/h/200", "grepd/x|saveas/Yjpr/sign/AK:c2ln",
		"e=1700000000&token=AK:c2ln", "p/1/grepd/x&e=1&token=a:b", "a||b", "saveas/Yjo=",
		"grepd%2Fhello%7Cqhash%2Fmd5", "grepd/a%7Cb", "grepd/a%20b", "imageView2/1/w/100&v=2",
		"attname=%E6%8A%A5.txt", "qhash/md5&attname=a.txt&e=5&token=a:b", "grepd%2Fx%7Csaveas%2FYjpr%2Fsign%2FAK:c2ln",
		"a&e=1&token=a:b&v=1", "grepd/100%25",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		r, err := Parse(q)
		// ParseAppend into a caller's buffer reads the same.
		ra, erra := ParseAppend(q, make([]Step, 0, 2))
		if (err == nil) != (erra == nil) || !reflect.DeepEqual(r, ra) {
			t.Fatalf("ParseAppend(%q) = %#v, %v; Parse: %#v, %v", q, ra, erra, r, err)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q): error %v does not wrap ErrMalformed", q, err)
			}
			return
		}
		// The canonical form reads the same, and is a fixed point.
		s := r.String()
		if len(s) > MaxQueryBytes {
			// MaxQueryBytes bounds what a client sends; the canonical form
			// escapes (attname's "<" becomes "%3C") and may pass the bound,
			// and then only the bound may refuse it.
			if _, err := Parse(s); err == nil || !strings.Contains(err.Error(), "bytes, more than") {
				t.Fatalf("re-Parse of a %d-byte canonical form of %q: %v, want the length error", len(s), q, err)
			}
			return
		}
		r2, err := Parse(s)
		if err != nil {
			t.Fatalf("re-Parse(%q) of %q: %v", s, q, err)
		}
		if !sameMeaning(r, r2) {
			t.Fatalf("round trip of %q via %q:\n %#v\n %#v", q, s, r, r2)
		}
		if s2 := r2.String(); s2 != s {
			t.Fatalf("String not canonical: %q then %q", s, s2)
		}
		// Without escapes or ignored parameters, the query is canonical.
		if !strings.Contains(q, "%") && !strings.Contains(q, "attname") && len(r.Ignored) == 0 && s != q {
			t.Fatalf("Parse(%q).String() = %q: not canonical", q, s)
		}
		// Signs cover raw text that is a prefix of the query.
		if r.Token != "" && !strings.HasPrefix(q, r.SignedQuery+"&token=") {
			t.Fatalf("SignedQuery %q is not the query's text before &token= in %q", r.SignedQuery, q)
		}
		if r.SaveAs != nil && r.SaveAs.SignedQuery != "" && !strings.HasPrefix(q, r.SaveAs.SignedQuery) {
			t.Fatalf("saveas SignedQuery %q is not a prefix of %q", r.SaveAs.SignedQuery, q)
		}
		if n := len(r.Steps); n > MaxSteps {
			t.Fatalf("%d steps accepted", n)
		}
		for _, st := range r.Steps {
			if strings.ContainsAny(st.Raw, "|\x00\n") {
				t.Fatalf("step text %q holds a separator or control byte", st.Raw)
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
	const q = "grepd/test-param|imageView2/2/w/200/h/200|saveas/b3V0OnJlcy9hLnR4dA==/sign/AK:dGVzdHNpZ25hdHVyZXRlc3RzaWduYXQ=&e=1700000000&token=AK:dGVzdHNpZ25hdHVyZXRlc3RzaWduYXQ="
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(q); err != nil {
			b.Fatal(err)
		}
	}
}
