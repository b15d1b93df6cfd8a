package pfop

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// closeWatch sees the close delimiter however the body's reads split it,
// and only a delimiter at a line's start that closes the form.
func TestCloseWatch(t *testing.T) {
	const b = "BND"
	for _, c := range []struct {
		body string
		seen bool
	}{
		{"--BND\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--BND--\r\n", true},
		{"--BND\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--BND--", true},
		{"--BND--\r\n", true},
		{"--BND\n\nv\n--BND--\n", true}, // LF only
		{"--BND\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--BND\r\n", false},
		{"--BND\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--BND-", false},
		{"--BND\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv--BND--\r\n", false},
	} {
		for name, wrap := range map[string]func(io.Reader) io.Reader{
			"whole":      func(r io.Reader) io.Reader { return r },
			"byte":       iotest.OneByteReader,
			"half":       iotest.HalfReader,
			"data error": iotest.DataErrReader,
		} {
			w := &closeWatch{r: wrap(strings.NewReader(c.body)), delim: []byte("\n--" + b + "--")}
			if _, err := io.Copy(io.Discard, w); err != nil {
				t.Fatal(err)
			}
			if w.seen != c.seen {
				t.Errorf("%q read %s: seen %v, want %v", c.body, name, w.seen, c.seen)
			}
		}
	}
}
