//go:build !linux

package router

// directIO: elsewhere *net.TCPConn.ReadFrom would copy through a fresh
// buffer per call, so relays read and write as usual.
const directIO = false
