package agenttest

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// KeepAliveConn dials the HTTP server at addr and sends req (a whole
// HTTP/1.1 request) n times on the connection, reading each response
// whole, so that a test can then send what it checks on a connection
// that already served requests (a server's per-connection limits must not
// depend on what came before). It returns the connection, with a 30 s
// deadline and closed when the test ends, and its reader.
func KeepAliveConn(t testing.TB, addr, req string, n int) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	for range n {
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	return conn, br
}
