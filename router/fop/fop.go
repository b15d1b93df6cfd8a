// Package fop parses the query of a processing URL (PROTOCOLS.md §1): a
// pipeline of fop steps, an optional trailing saveas step, the p/1/ prefix
// that reads back a persisted result, and a download token.
//
// The grammar is canonical and strict: a query has exactly one reading, and
// Request.String re-creates it byte for byte. Anything else is rejected with
// an error wrapping ErrMalformed that names the problem.
//
//	query    = [ fops [ "&" params ] ] | params
//	fops     = "p/1/" pipeline | pipeline [ "|" saveas ] | saveas
//	pipeline = step *( "|" step )
//	step     = name *( "/" arg )
//	name     = [A-Za-z] *[A-Za-z0-9_-]
//	arg      = 1*( any printable byte or UTF-8 except "/" "|" "&" )
//	saveas   = "saveas/" EncodedEntryURI [ "/sign/" AK ":" sign ]
//	params   = "e=" deadline "&token=" AK ":" sign
//
// Arguments are kept verbatim (not percent-decoded): a ufop receives its step
// text exactly as it appears in the URL.
package fop

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxSteps bounds the number of steps of one request. The saveas step counts
// as a step (it does work: a write), and so does every step of a p/1/ fop.
const MaxSteps = 10

// MaxQueryBytes bounds the length of the raw query.
const MaxQueryBytes = 2048

// ErrMalformed is wrapped by every Parse error; the message names the problem.
var ErrMalformed = errors.New("malformed fop")

// Step is one operation of a pipeline.
type Step struct {
	Name string   // the fop name, e.g. "imageView2"
	Args []string // the "/"-separated arguments after the name, verbatim
	Raw  string   // the step text verbatim, e.g. "grepd/foo": what a ufop gets as cmd
}

// SaveAs is the trailing "saveas/<EncodedEntryURI>[/sign/<AK>:<sign>]" step.
type SaveAs struct {
	Encoded     string // the EncodedEntryURI as in the URL
	Bucket, Key string // decoded from Encoded
	AK, Sign    string // empty when no /sign/ part
	// SignedQuery is the raw query up to (not including) "/sign/": the sign
	// covers host+path+"?"+SignedQuery. Empty when there is no /sign/ part.
	SignedQuery string
}

// Request is a parsed processing query.
type Request struct {
	Steps  []Step  // pipeline without the saveas step; may be empty (plain download)
	SaveAs *SaveAs // nil when absent
	// Persisted is, for "p/1/<fop>", the fop text after "p/1/" (validated as
	// a pipeline without saveas); Steps is then empty.
	Persisted string
	Deadline  int64  // e=, 0 when absent
	Token     string // token=, "" when absent
	TokenAK   string // the AK part of Token
	TokenSign string // the sign part of Token
	// SignedQuery is the raw query up to and including "e=<deadline>": the
	// download token covers scheme://host/path?SignedQuery. Empty without a token.
	SignedQuery string
}

// Pipeline returns the canonical step texts joined by "|" (without saveas;
// empty for a plain download or a p/1/ request).
func (r Request) Pipeline() string {
	switch len(r.Steps) {
	case 0:
		return ""
	case 1:
		return r.Steps[0].Raw
	}
	var b strings.Builder
	for i, s := range r.Steps {
		if i > 0 {
			b.WriteByte('|')
		}
		b.WriteString(s.Raw)
	}
	return b.String()
}

// String re-serialises the request; for a parsed Request it is exactly the
// query that was parsed.
func (r Request) String() string {
	var b strings.Builder
	if r.Persisted != "" {
		b.WriteString(persistedPrefix)
		b.WriteString(r.Persisted)
	} else {
		b.WriteString(r.Pipeline())
		if r.SaveAs != nil {
			if len(r.Steps) > 0 {
				b.WriteByte('|')
			}
			b.WriteString("saveas/")
			b.WriteString(r.SaveAs.Encoded)
			if r.SaveAs.AK != "" || r.SaveAs.Sign != "" {
				b.WriteString("/sign/")
				b.WriteString(r.SaveAs.AK)
				b.WriteByte(':')
				b.WriteString(r.SaveAs.Sign)
			}
		}
	}
	if r.Token != "" || r.Deadline != 0 {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString("e=")
		b.WriteString(strconv.FormatInt(r.Deadline, 10))
		b.WriteString("&token=")
		b.WriteString(r.Token)
	}
	return b.String()
}

const persistedPrefix = "p/1/"

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Parse reads the raw (not percent-decoded) query of a processing URL.
// An empty query is a plain download: the zero Request.
func Parse(rawQuery string) (Request, error) {
	var r Request
	if len(rawQuery) > MaxQueryBytes {
		return r, malformed("query is %d bytes, more than %d", len(rawQuery), MaxQueryBytes)
	}
	for i := 0; i < len(rawQuery); {
		c := rawQuery[i]
		if c < utf8.RuneSelf {
			if c <= ' ' || c == 0x7f {
				return r, malformed("byte %d: control character or space 0x%02x", i, c)
			}
			i++
			continue
		}
		ru, size := utf8.DecodeRuneInString(rawQuery[i:])
		if ru == utf8.RuneError && size <= 1 {
			return r, malformed("byte %d: invalid UTF-8", i)
		}
		i += size
	}
	if rawQuery == "" {
		return r, nil
	}

	fops, params := rawQuery, ""
	if looksLikeParam(rawQuery) {
		fops, params = "", rawQuery
	} else if i := strings.IndexByte(rawQuery, '&'); i >= 0 {
		fops, params = rawQuery[:i], rawQuery[i+1:]
		if fops == "" {
			return r, malformed("empty fop before '&'")
		}
		if params == "" {
			return r, malformed("empty parameter after '&'")
		}
	}

	if fops != "" {
		if err := r.parseFops(fops); err != nil {
			return Request{}, err
		}
	}
	if params != "" {
		if err := r.parseParams(params); err != nil {
			return Request{}, err
		}
		r.SignedQuery = rawQuery[:len(rawQuery)-len("&token=")-len(r.Token)]
	}
	return r, nil
}

// looksLikeParam reports whether the query starts with a name=value
// parameter rather than a fop: a fop name can never contain '='.
func looksLikeParam(q string) bool {
	end := strings.IndexAny(q, "/|&")
	if end < 0 {
		end = len(q)
	}
	return strings.IndexByte(q[:end], '=') >= 0
}

func (r *Request) parseFops(fops string) error {
	if rest, ok := strings.CutPrefix(fops, persistedPrefix); ok {
		if rest == "" {
			return malformed("p/1/: empty persisted fop")
		}
		if _, err := parseSteps(rest, false); err != nil {
			return fmt.Errorf("p/1/: %w", err)
		}
		r.Persisted = rest
		return nil
	}
	steps, err := parseSteps(fops, true)
	if err != nil {
		return err
	}
	if n := len(steps); n > 0 && steps[n-1].Name == "saveas" {
		sa, err := parseSaveAs(steps[n-1], n, fops)
		if err != nil {
			return err
		}
		r.SaveAs = sa
		steps = steps[:n-1]
	}
	if len(steps) > 0 {
		r.Steps = steps
	}
	return nil
}

// parseSteps splits a pipeline. When saveasOK, a "saveas" step is allowed
// as the last one (the caller decodes it).
func parseSteps(p string, saveasOK bool) ([]Step, error) {
	n := strings.Count(p, "|") + 1
	if n > MaxSteps {
		return nil, malformed("%d steps, more than %d", n, MaxSteps)
	}
	steps := make([]Step, 0, n)
	for i := 1; ; i++ {
		text, rest, more := strings.Cut(p, "|")
		s, err := parseStep(text, i)
		if err != nil {
			return nil, err
		}
		if s.Name == "saveas" && (!saveasOK || more) {
			if !saveasOK {
				return nil, malformed("step %d: saveas is not allowed here", i)
			}
			return nil, malformed("step %d: saveas must be the last step", i)
		}
		steps = append(steps, s)
		if !more {
			return steps, nil
		}
		p = rest
	}
}

func parseStep(text string, i int) (Step, error) {
	if text == "" {
		return Step{}, malformed("step %d: empty step", i)
	}
	parts := strings.Split(text, "/")
	name := parts[0]
	if name == "" {
		return Step{}, malformed("step %d: empty name", i)
	}
	if !validName(name) {
		return Step{}, malformed("step %d: invalid name %q (want [A-Za-z][A-Za-z0-9_-]*)", i, name)
	}
	s := Step{Name: name, Raw: text}
	if len(parts) > 1 {
		s.Args = parts[1:]
		for j, a := range s.Args {
			if a == "" {
				return Step{}, malformed("step %d (%s): empty argument %d", i, name, j+1)
			}
		}
	}
	return s, nil
}

func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case i > 0 && (c >= '0' && c <= '9' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return s != ""
}

func parseSaveAs(s Step, i int, fops string) (*SaveAs, error) {
	var sa SaveAs
	switch len(s.Args) {
	case 1:
	case 3:
		if s.Args[1] != "sign" {
			return nil, malformed("step %d (saveas): want saveas/<EncodedEntryURI>[/sign/<AK>:<sign>], got %q after the entry", i, s.Args[1])
		}
		ak, sign, err := splitToken(s.Args[2])
		if err != nil {
			return nil, malformed("step %d (saveas): sign: %v", i, err)
		}
		sa.AK, sa.Sign = ak, sign
		sa.SignedQuery = fops[:len(fops)-len("/sign/")-len(s.Args[2])]
	default:
		return nil, malformed("step %d (saveas): want saveas/<EncodedEntryURI>[/sign/<AK>:<sign>]", i)
	}
	sa.Encoded = s.Args[0]
	b, err := base64.URLEncoding.Strict().DecodeString(sa.Encoded)
	if err != nil {
		return nil, malformed("step %d (saveas): EncodedEntryURI is not padded URL-safe base64: %v", i, err)
	}
	entry := string(b)
	bucket, key, ok := strings.Cut(entry, ":")
	switch {
	case !ok:
		return nil, malformed("step %d (saveas): entry %q is not <bucket>:<key>", i, entry)
	case bucket == "":
		return nil, malformed("step %d (saveas): entry %q has an empty bucket", i, entry)
	case key == "":
		return nil, malformed("step %d (saveas): entry %q has an empty key", i, entry)
	case !utf8.ValidString(entry):
		return nil, malformed("step %d (saveas): entry is not UTF-8", i)
	case strings.ContainsRune(entry, 0):
		return nil, malformed("step %d (saveas): entry holds a NUL byte", i)
	}
	sa.Bucket, sa.Key = bucket, key
	return &sa, nil
}

// splitToken splits "<AK>:<sign>": AK of [A-Za-z0-9._~-], sign of URL-safe
// base64 characters (padding included).
func splitToken(t string) (ak, sign string, err error) {
	ak, sign, ok := strings.Cut(t, ":")
	switch {
	case !ok:
		return "", "", fmt.Errorf("%q is not <AK>:<sign>", t)
	case ak == "":
		return "", "", errors.New("empty AK")
	case sign == "":
		return "", "", errors.New("empty sign")
	}
	for i := 0; i < len(ak); i++ {
		c := ak[i]
		if !(isAlnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
			return "", "", fmt.Errorf("AK: invalid character %q", c)
		}
	}
	for i := 0; i < len(sign); i++ {
		c := sign[i]
		if !(isAlnum(c) || c == '-' || c == '_' || c == '=') {
			return "", "", fmt.Errorf("sign: invalid character %q", c)
		}
	}
	return ak, sign, nil
}

func isAlnum(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
}

// parseParams reads "e=<deadline>&token=<AK>:<sign>", in that order.
func (r *Request) parseParams(params string) error {
	var sawE, sawToken bool
	for i, p := range strings.Split(params, "&") {
		if p == "" {
			return malformed("parameter %d: empty", i+1)
		}
		name, val, ok := strings.Cut(p, "=")
		if !ok {
			return malformed("parameter %d: %q is not name=value", i+1, p)
		}
		switch name {
		case "e":
			if sawE {
				return malformed("duplicate parameter e")
			}
			if sawToken {
				return malformed("e must come before token")
			}
			sawE = true
			d, err := parseDeadline(val)
			if err != nil {
				return malformed("e: %v", err)
			}
			r.Deadline = d
		case "token":
			if sawToken {
				return malformed("duplicate parameter token")
			}
			if !sawE {
				return malformed("token without e")
			}
			sawToken = true
			ak, sign, err := splitToken(val)
			if err != nil {
				return malformed("token: %v", err)
			}
			r.Token, r.TokenAK, r.TokenSign = val, ak, sign
		default:
			return malformed("parameter %d: unknown parameter %q", i+1, name)
		}
	}
	if !sawToken {
		return malformed("e without token")
	}
	return nil
}

// parseDeadline accepts a positive decimal without sign or leading zeros.
func parseDeadline(v string) (int64, error) {
	if v == "" {
		return 0, errors.New("empty deadline")
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, fmt.Errorf("%q is not a decimal unix time", v)
		}
	}
	if v[0] == '0' {
		return 0, fmt.Errorf("%q: zero or leading zero", v)
	}
	d, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: out of range", v)
	}
	return d, nil
}
