package headsize

import (
	"io"
	"net"
	"strings"
	"testing"
)

// TestLineTooLong feeds a Conn known bytes and asks whether a window that
// just filled held a line feed.
func TestLineTooLong(t *testing.T) {
	cases := []struct {
		name   string
		read   string
		window int
		want   bool
	}{
		{"no line feed at all", strings.Repeat("a", 100), 100, true},
		{"a line feed in the window", "GET / HTTP/1.1\n" + strings.Repeat("h", 85), 100, false},
		{"line feed just before the window", "x\n" + strings.Repeat("a", 100), 100, true},
		{"line feed as the window's first byte", "x" + "\n" + strings.Repeat("a", 99), 100, false},
		{"earlier request, then a long line", "GET / HTTP/1.1\r\n\r\n" + strings.Repeat("a", 100), 100, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			go func() {
				for i := 0; i < len(c.read); i += 7 { // several reads
					io.WriteString(a, c.read[i:min(i+7, len(c.read))])
				}
				a.Close()
			}()
			hc := &Conn{Conn: b}
			if _, err := io.Copy(io.Discard, hc); err != nil {
				t.Fatal(err)
			}
			if got := LineTooLong(struct{ net.Conn }{hc}, c.window); got {
				t.Fatal("found a Conn inside a wrapper without Unwrap")
			}
			if got := LineTooLong(hc, c.window); got != c.want {
				t.Fatalf("LineTooLong = %v, want %v", got, c.want)
			}
		})
	}
}
