package admin

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// badText describes the first rune of s, the value of a free-text field
// (an account name, a description), that is not shown as it is written:
// a control character (C0, DEL, C1: terminal escapes, NUL, line breaks
// forging rows of a table), a line or paragraph separator, or a
// bidirectional formatting character (U+061C, U+200E, U+200F,
// U+202A–U+202E, U+2066–U+2069: text shown in another order than it
// reads); or bytes that are not UTF-8. It returns "" when s has none.
func badText(s string) string {
	for i, r := range s {
		switch {
		case r == utf8.RuneError:
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				return fmt.Sprintf("byte %d is not UTF-8", i)
			}
		case r == '\n' || r == '\r' || unicode.In(r, unicode.Zl, unicode.Zp):
			return fmt.Sprintf("U+%04X at byte %d is a line break: one line of text, please", r, i)
		case r == '\t':
			return fmt.Sprintf("U+0009 at byte %d is a tab: use spaces", i)
		case unicode.IsControl(r), bidiControl(r):
			return fmt.Sprintf("U+%04X at byte %d: control and bidirectional formatting characters are not allowed", r, i)
		}
	}
	return ""
}

// bidiControl reports whether r is one of Unicode's bidirectional
// formatting characters (the Bidi_Control property).
func bidiControl(r rune) bool {
	return r == 0x061C || r == 0x200E || r == 0x200F ||
		(r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069)
}
