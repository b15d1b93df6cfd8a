//go:build !linux

package router

import (
	"errors"
	"net"
)

// directIO: elsewhere *net.TCPConn.ReadFrom would copy through a fresh
// buffer per call, so relays read and write as usual.
const directIO = false

// waitQueued is only called when directIO is true.
func waitQueued(*net.TCPConn) (int, error) { return 0, errors.ErrUnsupported }
