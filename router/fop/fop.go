// Package fop parses the query of a processing URL (docs/builtins.md): a
// pipeline of fop steps, an optional trailing saveas step, the p/1/ prefix
// that reads back a persisted result, a download token, attname= and the
// parameters Qiniu ignores (cache-busters such as v=123).
//
// A query has exactly one reading; anything that could be read two ways is
// rejected with an error wrapping ErrMalformed that names the problem.
//
//	query    = [ fops [ "&" params ] ] | params
//	fops     = "p/1/" pipeline | pipeline [ "|" saveas ] | saveas
//	pipeline = step *( "|" step )
//	step     = name *( "/" arg )
//	name     = 1*[A-Za-z0-9_-]
//	arg      = 1*( any printable byte or UTF-8 except "/" "|" )
//	saveas   = "saveas/" EncodedEntryURI [ "/sign/" AK ":" sign ]
//	params   = param *( "&" param ), "token" last when present
//	param    = pname "=" value ; pname = 1*[A-Za-z0-9_.-]
//
// Percent-decoding: a pipeline written raw (its '/' and '|' unescaped) is
// kept verbatim, so a ufop gets its step text exactly as in the URL
// (grepd/a%20b runs as "grepd/a%20b", as on Qiniu). A pipeline written
// fully percent-encoded (no raw '/' or '|': grepd%2Fhello%7Cqhash%2Fmd5) is
// decoded exactly once and then read as a raw one. An encoded separator
// (%2F, %7C) in a raw pipeline, or left after the one decoding, could be a
// literal character in an argument or a separator: it is refused.
// '+' is a plain '+'.
//
// Parameters: e= and token= (the download token; token must be the last
// parameter and e must come before it), attname= (the download name,
// query-unescaped); any other well-named parameter is ignored, as Qiniu
// does. Signatures are checked over the raw bytes as sent
// (Request.SignedQuery, SaveAs.SignedQuery), and the decoded pipeline that
// runs is a function of those bytes, so a sign covers exactly what runs.
package fop

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
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
	Args []string // the "/"-separated arguments after the name, as in Raw
	// Raw is the step text as it runs, e.g. "grepd/foo": what a ufop gets
	// as cmd (verbatim from a raw pipeline, decoded once from an encoded one).
	Raw string
}

// SaveAs is the trailing "saveas/<EncodedEntryURI>[/sign/<AK>:<sign>]" step.
type SaveAs struct {
	Encoded     string // the EncodedEntryURI
	Bucket, Key string // decoded from Encoded
	AK, Sign    string // empty when no /sign/ part
	// SignedQuery is the raw query (as sent, escapes kept) up to, not
	// including, "/sign/" (or its escaped form): the sign covers
	// host+path+"?"+SignedQuery. Empty when there is no /sign/ part.
	SignedQuery string
}

// Request is a parsed processing query.
type Request struct {
	Steps  []Step  // pipeline without the saveas step; may be empty (plain download)
	SaveAs *SaveAs // nil when absent
	// Persisted is, for "p/1/<fop>", the pipeline text after "p/1/"
	// (validated, without saveas; decoded when it was encoded whole), as
	// the pfop result index keys it. Steps is then empty.
	Persisted string
	Deadline  int64  // e=, 0 when absent
	Token     string // token=, "" when absent
	TokenAK   string // the AK part of Token
	TokenSign string // the sign part of Token
	// SignedQuery is the raw query up to, not including, "&token=": the
	// download token covers scheme://host/path?SignedQuery. Empty without a token.
	SignedQuery string
	// AttName is attname='s value, query-unescaped: the client wants the
	// response as a download under this name. HasAttName tells an empty
	// attname= from none.
	AttName    string
	HasAttName bool
	// Ignored names the parameters that were accepted and ignored
	// (cache-busters), in order.
	Ignored []string
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

// HasParams reports whether the query carried any parameter (e=, token=,
// attname= or an ignored one).
func (r Request) HasParams() bool {
	return r.Token != "" || r.Deadline != 0 || r.HasAttName || len(r.Ignored) > 0
}

// String returns the canonical query of the request: the pipeline written
// raw (bytes that would be misread escaped), attname, then e and token;
// ignored parameters are dropped. Parsing it gives the same request (less
// the fields that record the raw text: SignedQuery, Ignored).
func (r Request) String() string {
	var b strings.Builder
	if r.Persisted != "" {
		b.WriteString(persistedPrefix)
		writeFops(&b, r.Persisted)
	} else {
		var f strings.Builder
		f.WriteString(r.Pipeline())
		if r.SaveAs != nil {
			if len(r.Steps) > 0 {
				f.WriteByte('|')
			}
			f.WriteString("saveas/")
			f.WriteString(r.SaveAs.Encoded)
			if r.SaveAs.AK != "" || r.SaveAs.Sign != "" {
				f.WriteString("/sign/")
				f.WriteString(r.SaveAs.AK)
				f.WriteByte(':')
				f.WriteString(r.SaveAs.Sign)
			}
		}
		writeFops(&b, f.String())
	}
	if r.HasAttName {
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString("attname=")
		b.WriteString(url.QueryEscape(r.AttName))
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

// writeFops writes pipeline text raw when that reads back as the same
// text, else percent-encoded whole (which is decoded once).
func writeFops(b *strings.Builder, s string) {
	raw := (strings.ContainsAny(s, "/|") || strings.IndexByte(s, '%') < 0) && encodedSep(s) < 0
	for i := 0; raw && i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f || c == '&' {
			raw = false
		}
	}
	if raw {
		b.WriteString(s)
		return
	}
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
}

// encodedSep returns the offset of the first %2F or %7C (any case) in s, or -1.
func encodedSep(s string) int {
	for i := 0; i+2 < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		hi, lo := s[i+1], s[i+2]|0x20
		if hi == '2' && lo == 'f' || hi == '7' && lo == 'c' {
			return i
		}
	}
	return -1
}

const persistedPrefix = "p/1/"

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Parse reads the raw (not percent-decoded) query of a processing URL.
// An empty query is a plain download: the zero Request.
func Parse(rawQuery string) (Request, error) { return ParseAppend(rawQuery, nil) }

// ParseAppend is Parse with the steps appended to steps[:0] when they fit
// in its capacity (a caller's buffer, so that a short pipeline takes no
// allocation of its own), else to a new slice. The result's Steps then
// share steps' array: the caller must not reuse it while the result is in
// use.
func ParseAppend(rawQuery string, steps []Step) (Request, error) {
	var r Request
	if len(rawQuery) > MaxQueryBytes {
		return r, malformed("query is %d bytes, more than %d", len(rawQuery), MaxQueryBytes)
	}
	if err := checkBytes(rawQuery, "byte"); err != nil {
		return r, err
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
		// The p/1/ prefix is Dora's own syntax, not the pipeline's: a
		// pipeline encoded whole after it is not ambiguous.
		pre := ""
		if strings.HasPrefix(fops, persistedPrefix) {
			pre = persistedPrefix
		}
		dec, pos, err := decodeFops(fops[len(pre):])
		if err != nil {
			return Request{}, err
		}
		if pre != "" {
			dec, pos = pre+dec, nil // no saveas after p/1/: pos is not needed
		}
		if err := r.parseFops(dec, fops, pos, steps); err != nil {
			return Request{}, err
		}
	}
	if params != "" {
		if err := r.parseParams(params); err != nil {
			return Request{}, err
		}
		if r.Token != "" {
			r.SignedQuery = rawQuery[:len(rawQuery)-len("&token=")-len(r.Token)]
		}
	}
	return r, nil
}

// checkBytes refuses control characters, spaces and invalid UTF-8.
func checkBytes(s, what string) error {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c <= ' ' || c == 0x7f {
				return malformed("%s %d: control character or space 0x%02x", what, i, c)
			}
			i++
			continue
		}
		ru, size := utf8.DecodeRuneInString(s[i:])
		if ru == utf8.RuneError && size <= 1 {
			return malformed("%s %d: invalid UTF-8", what, i)
		}
		i += size
	}
	return nil
}

// looksLikeParam reports whether the query starts with a name=value
// parameter rather than a fop: a fop name never contains '=' and ends at
// the first '/', '|', '%' or '&'.
func looksLikeParam(q string) bool {
	end := strings.IndexAny(q, "/|%&=")
	return end >= 0 && q[end] == '='
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// decodeFops returns the pipeline text: a raw one verbatim, one encoded
// whole decoded once. pos maps each byte of the decoded text (and its end)
// to its offset in raw (nil: the identity), so a sign over the raw text
// can be cut where the decoded text says.
func decodeFops(raw string) (dec string, pos []int, err error) {
	ambiguous := func(s string, i int, after string) error {
		return malformed("ambiguous fop: %s at byte %d%s, in a pipeline whose other separators are raw: a literal character in an argument, or a separator? Write the pipeline raw, or percent-encode all of it", s[i:i+3], i, after)
	}
	if strings.ContainsAny(raw, "/|") || strings.IndexByte(raw, '%') < 0 {
		if i := encodedSep(raw); i >= 0 {
			return "", nil, ambiguous(raw, i, "")
		}
		return raw, nil, nil
	}
	var b strings.Builder
	b.Grow(len(raw))
	pos = make([]int, 0, len(raw)+1)
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '%' {
			b.WriteByte(c)
			pos = append(pos, i)
			i++
			continue
		}
		var hi, lo byte
		ok := i+2 < len(raw)
		if ok {
			var ok1, ok2 bool
			hi, ok1 = unhex(raw[i+1])
			lo, ok2 = unhex(raw[i+2])
			ok = ok1 && ok2
		}
		if !ok {
			return "", nil, malformed("byte %d: '%%' not followed by two hex digits in a percent-encoded pipeline (write %%25 for a literal '%%')", i)
		}
		b.WriteByte(hi<<4 | lo)
		pos = append(pos, i)
		i += 3
	}
	pos = append(pos, len(raw))
	dec = b.String()
	if err := checkDecoded(dec); err != nil {
		return "", nil, err
	}
	if i := encodedSep(dec); i >= 0 {
		return "", nil, ambiguous(dec, i, " after decoding")
	}
	return dec, pos, nil
}

// checkDecoded refuses decoded text with control characters or invalid
// UTF-8 (a space is fine inside an argument once decoded).
func checkDecoded(s string) error {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < ' ' || c == 0x7f {
				return malformed("decoded fop byte %d: control character 0x%02x", i, c)
			}
			i++
			continue
		}
		ru, size := utf8.DecodeRuneInString(s[i:])
		if ru == utf8.RuneError && size <= 1 {
			return malformed("decoded fop byte %d: invalid UTF-8", i)
		}
		i += size
	}
	return nil
}

// parseFops reads the decoded fops text; raw and pos (nil: identity) give
// the raw text a saveas sign covers.
func (r *Request) parseFops(fops, raw string, pos []int, buf []Step) error {
	if rest, ok := strings.CutPrefix(fops, persistedPrefix); ok {
		if rest == "" {
			return malformed("p/1/: empty persisted fop")
		}
		if _, err := parseSteps(rest, false, buf); err != nil {
			return fmt.Errorf("p/1/: %w", err)
		}
		r.Persisted = rest
		return nil
	}
	steps, err := parseSteps(fops, true, buf)
	if err != nil {
		return err
	}
	if n := len(steps); n > 0 && steps[n-1].Name == "saveas" {
		sa, err := parseSaveAs(steps[n-1], n, fops)
		if err != nil {
			return err
		}
		if sa.SignedQuery != "" {
			end := len(sa.SignedQuery)
			if pos != nil {
				end = pos[end]
			}
			sa.SignedQuery = raw[:end]
		}
		r.SaveAs = sa
		steps = steps[:n-1]
	}
	if len(steps) > 0 {
		r.Steps = steps
	}
	return nil
}

// parseSteps splits a pipeline, into buf[:0] when n steps fit in it.
// When saveasOK, a "saveas" step is allowed as the last one (the caller
// decodes it).
func parseSteps(p string, saveasOK bool, buf []Step) ([]Step, error) {
	n := strings.Count(p, "|") + 1
	if n > MaxSteps {
		return nil, malformed("%d steps, more than %d", n, MaxSteps)
	}
	steps := buf[:0]
	if cap(buf) < n {
		steps = make([]Step, 0, n)
	}
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
	name, _, hasArgs := strings.Cut(text, "/")
	if name == "" {
		return Step{}, malformed("step %d: empty name", i)
	}
	if !validName(name) {
		return Step{}, malformed("step %d: invalid name %q (want [A-Za-z0-9_-]+)", i, name)
	}
	s := Step{Name: name, Raw: text}
	if hasArgs { // a step without arguments takes no allocation
		s.Args = strings.Split(text, "/")[1:]
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
		// Any of them first: a ufop name may start with a digit, '-' or
		// '_' (dora.ValidateUfopName).
		if !isAlnum(c) && c != '_' && c != '-' {
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

// parseParams reads the parameters after the fops: e= and token= (token
// last), attname=, and well-named parameters it ignores.
func (r *Request) parseParams(params string) error {
	var sawE, sawToken bool
	for i, p := range strings.Split(params, "&") {
		if p == "" {
			return malformed("parameter %d: empty", i+1)
		}
		if sawToken {
			return malformed("parameter %d: %q after token= is not covered by the download token (token= must be last)", i+1, p)
		}
		name, val, ok := strings.Cut(p, "=")
		if !ok {
			return malformed("parameter %d: %q is not name=value (steps of a pipeline are joined with '|', not '&')", i+1, p)
		}
		if !validParamName(name) {
			return malformed("parameter %d: invalid name %q (want [A-Za-z0-9_.-]+)", i+1, name)
		}
		switch name {
		case "e":
			if sawE {
				return malformed("duplicate parameter e")
			}
			sawE = true
			d, err := parseDeadline(val)
			if err != nil {
				return malformed("e: %v", err)
			}
			r.Deadline = d
		case "token":
			if !sawE {
				return malformed("token without e")
			}
			sawToken = true
			ak, sign, err := splitToken(val)
			if err != nil {
				return malformed("token: %v", err)
			}
			r.Token, r.TokenAK, r.TokenSign = val, ak, sign
		case "attname":
			if r.HasAttName {
				return malformed("duplicate parameter attname")
			}
			v, err := url.QueryUnescape(val)
			if err != nil {
				return malformed("attname: %v", err)
			}
			if err := checkAttName(v); err != nil {
				return err
			}
			r.AttName, r.HasAttName = v, true
		default:
			r.Ignored = append(r.Ignored, name)
		}
	}
	if sawE && !sawToken {
		return malformed("e without token")
	}
	return nil
}

// checkAttName refuses a download name with control characters or
// invalid UTF-8 (it goes into a response header).
func checkAttName(v string) error {
	if !utf8.ValidString(v) {
		return malformed("attname: invalid UTF-8")
	}
	for _, c := range v {
		if c < ' ' || c == 0x7f {
			return malformed("attname: control character 0x%02x", c)
		}
	}
	return nil
}

func validParamName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return s != ""
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
