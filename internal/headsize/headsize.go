// Package headsize tells the two ways a request head can be too large
// apart, for servers that only report "too large": a request line (its
// URI) longer than the server's head buffer is 414 URI Too Long, header
// fields that overflow it after a request line that fit are 431 Request
// Header Fields Too Large (RFC 9110 15.5.15, RFC 6585 5). Both answers
// carry a JSON error.
//
// A server reads a request head into a bounded window; when the window
// fills, the bytes it read from the connection for that request are
// exactly the window, the last ones read. So the request line overflowed
// iff none of the last window bytes read was a line feed. Conn counts the
// bytes read and remembers where the last line feed was: two integers per
// connection, no copy of the head.
//
// fasthttp (the router) reports ErrSmallBuffer to its ErrorHandler, which
// asks LineTooLong. net/http (the admin) writes a fixed text/plain 431
// itself on the raw connection; a Listen(ln, window) connection replaces
// exactly that response with the JSON 414 or 431.
package headsize

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
)

// Conn is a connection that tracks line feeds in what is read from it.
type Conn struct {
	net.Conn
	window int64 // > 0: rewrite net/http's own 431
	total  atomic.Int64
	lastNL atomic.Int64 // offset of the last '\n' read plus one; 0: none
}

// Listen wraps ln's connections in Conns. window > 0 is the head window
// of a net/http server on ln (its MaxHeaderBytes + 4096, see
// NetHTTPWindow): net/http's own plain-text 431 is then replaced by the
// JSON 414 or 431. For a fasthttp server pass 0 and call LineTooLong from
// its ErrorHandler.
func Listen(ln net.Listener, window int) net.Listener {
	return &listener{Listener: ln, window: int64(window)}
}

// NetHTTPWindow is the bytes of a request head a net/http server with
// MaxHeaderBytes maxHeaderBytes reads before it gives up (its limit plus
// 4096 bytes of bufio slop, net/http's initialReadLimitSize).
func NetHTTPWindow(maxHeaderBytes int) int {
	if maxHeaderBytes <= 0 {
		maxHeaderBytes = 1 << 20 // http.DefaultMaxHeaderBytes
	}
	return maxHeaderBytes + 4096
}

type listener struct {
	net.Listener
	window int64
}

func (ln *listener) Accept() (net.Conn, error) {
	c, err := ln.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c, window: ln.window}, nil
}

// Read counts the bytes read and notes the last line feed among them.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		t := c.total.Add(int64(n))
		if i := bytes.LastIndexByte(p[:n], '\n'); i >= 0 {
			c.lastNL.Store(t - int64(n) + int64(i) + 1)
		}
	}
	return n, err
}

// LineTooLong reports whether none of the last window bytes read was a
// line feed: when a server's head window of that size has just filled,
// the request line did not fit in it.
func (c *Conn) LineTooLong(window int) bool {
	return c.total.Load()-c.lastNL.Load() >= int64(window)
}

// LineTooLong finds the Conn under c (through Unwrap() net.Conn) and asks
// it; false when c is not tracked.
func LineTooLong(c net.Conn, window int) bool {
	for c != nil {
		if hc, ok := c.(*Conn); ok {
			return hc.LineTooLong(window)
		}
		u, ok := c.(interface{ Unwrap() net.Conn })
		if !ok {
			return false
		}
		c = u.Unwrap()
	}
	return false
}

// JSON error bodies of an oversized head.
const (
	URITooLongBody     = `{"error":"request URI too long"}` + "\n"
	HeadersTooBigBody  = `{"error":"request headers too large"}` + "\n"
	netHTTPTooLarge    = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large"
	jsonResponseHeader = "Content-Type: application/json\r\nConnection: close\r\nContent-Length: "
)

// Response returns a complete HTTP/1.1 response for an oversized head:
// 414 when the request line did not fit, else 431, with a JSON error.
func Response(lineTooLong bool) string {
	status, body := "431 Request Header Fields Too Large", HeadersTooBigBody
	if lineTooLong {
		status, body = "414 URI Too Long", URITooLongBody
	}
	return "HTTP/1.1 " + status + "\r\n" + jsonResponseHeader + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// Write replaces net/http's own 431 (written in one call on the raw
// connection, nothing else is ever exactly that text) with Response.
func (c *Conn) Write(p []byte) (int, error) {
	if c.window > 0 && len(p) == len(netHTTPTooLarge) && string(p) == netHTTPTooLarge {
		if _, err := io.WriteString(c.Conn, Response(c.LineTooLong(int(c.window)))); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// ReadFrom keeps the underlying connection's fast path (sendfile, splice).
func (c *Conn) ReadFrom(r io.Reader) (int64, error) { return io.Copy(c.Conn, r) }

// SyscallConn exposes the underlying descriptor (the router peeks whether
// a client hung up).
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

// CloseWrite half-closes the underlying connection when it can.
func (c *Conn) CloseWrite() error {
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok {
		return errors.ErrUnsupported
	}
	return cw.CloseWrite()
}

// Unwrap returns the underlying connection.
func (c *Conn) Unwrap() net.Conn { return c.Conn }
