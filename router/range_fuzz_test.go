package router

import (
	"regexp"
	"strconv"
	"testing"
)

// rangeGrammar is RFC 9110's single byte range, "bytes=" first-pos "-"
// [last-pos] or "bytes=-" suffix-length, the numbers ASCII digits only,
// with optional whitespace (SP, HTAB) around the header and the numbers.
const rangeGrammar = `^[ \t]*bytes=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*$`

// refRange is a plain reading of a Range header against size bytes, the
// reference parseRange must agree with; grammar is rangeGrammar compiled.
// A header outside the grammar, an empty range, a number past int64 or a
// last-pos before first-pos is ignored (serve the whole, as RFC 9110
// allows).
func refRange(grammar *regexp.Regexp, s string, size int64) (start, length int64, ok, unsat bool) {
	m := grammar.FindStringSubmatch(s)
	if m == nil || (m[1] == "" && m[2] == "") {
		return 0, 0, false, false
	}
	if m[1] == "" {
		n, err := strconv.ParseInt(m[2], 10, 64)
		switch {
		case err != nil:
			return 0, 0, false, false
		case n == 0 || size == 0:
			return 0, 0, false, true
		}
		n = min(n, size)
		return size - n, n, true, false
	}
	first, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, 0, false, false
	}
	last := size - 1
	if m[2] != "" {
		l, err := strconv.ParseInt(m[2], 10, 64)
		if err != nil || l < first {
			return 0, 0, false, false
		}
		last = min(l, size-1)
	}
	if first >= size {
		return 0, 0, false, true
	}
	return first, last - first + 1, true, false
}

// FuzzParseRange shows that parseRange, which reads the client's Range
// header, never answers a range outside the object, and agrees with
// refRange (the RFC 9110 grammar of one byte range) on what it accepts,
// ignores and answers 416 to.
func FuzzParseRange(f *testing.F) {
	for _, c := range []struct {
		s    string
		size int64
	}{
		{"bytes=0-99", 1000}, {"bytes=500-", 1000}, {"bytes=-200", 1000}, {"bytes=0-0", 1},
		{"bytes=1000-", 1000}, {"bytes=-0", 10}, {"bytes=0-", 0}, {"bytes= 5 - 9 ", 10},
		{"bytes=0-1,4-5", 10}, {"items=0-1", 10}, {"bytes=9-3", 10}, {"bytes=-", 10},
		{"bytes=0-9223372036854775807", 10}, {"bytes=99999999999999999999-", 10},
	} {
		f.Add(c.s, c.size)
	}
	grammar := regexp.MustCompile(rangeGrammar)
	f.Fuzz(func(t *testing.T, s string, size int64) {
		if size < 0 { // the caller serves an unknown size whole
			return
		}
		start, length, ok, unsat := parseRange(s, size)
		if ok && unsat {
			t.Fatalf("parseRange(%q, %d): both ok and unsat", s, size)
		}
		if ok && (start < 0 || length < 1 || start >= size || length > size-start) {
			t.Fatalf("parseRange(%q, %d) = [%d, +%d), outside the object", s, size, start, length)
		}
		if !ok && (start != 0 || length != 0) {
			t.Fatalf("parseRange(%q, %d) = %d, %d without a range", s, size, start, length)
		}
		rs, rl, rok, runsat := refRange(grammar, s, size)
		if start != rs || length != rl || ok != rok || unsat != runsat {
			t.Fatalf("parseRange(%q, %d) = %d, %d, ok %v, unsat %v; the grammar reads %d, %d, ok %v, unsat %v",
				s, size, start, length, ok, unsat, rs, rl, rok, runsat)
		}
	})
}
