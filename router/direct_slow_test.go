package router

import (
	"bufio"
	"crypto/md5"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
)

// A receiver that stops reading for longer than the step's idle timeout
// (a slow client, or a next step that reads its input at its own pace)
// does not fail a step that sent everything at once: the idle timeout
// bounds the instance's silence, not the receiver's, as on the Read path
// (whose deadline is re-armed before each read). The relay runs the way
// countingBody.WriteTo and srcBody.WriteTo run it.
func TestDirectRelaySlowReceiver(t *testing.T) {
	e := newEnv(t, nil)
	const size = 4 << 20
	bi := startBigInstance(t, &bigInstance{size: size, pause: time.Millisecond})
	// Idle 320 ms (slack 20 ms); the receiver pauses 1.5 s.
	_, sb := streamStep(t, e, bi, dora.Release{Protocol: dora.ProtocolDora, Timeouts: dora.StepTimeouts{Idle: 320 * time.Millisecond}})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan [2]any, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- [2]any{[16]byte{}, int64(-1)}
			return
		}
		defer c.Close()
		c.(*net.TCPConn).SetReadBuffer(16 << 10)
		h := md5.New()
		n, _ := io.CopyN(h, c, 1)
		time.Sleep(1500 * time.Millisecond) // the receiver stalls
		m, _ := io.Copy(h, c)
		var s [16]byte
		copy(s[:], h.Sum(nil))
		got <- [2]any{s, n + m}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetWriteBuffer(16 << 10)
	w := bufio.NewWriterSize(conn, 16<<10)

	n, done, err := sb.sendDirect(w)
	if err == nil && !done {
		var m int64
		m, err = writeTo(w, sb)
		n += m
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil || n != size {
		t.Fatalf("relay to a receiver that paused: %d bytes, %v; want %d, nil", n, err, size)
	}
	sb.Close()
	conn.Close()
	res := <-got
	if res[1].(int64) != size || res[0].([16]byte) != patternMD5(size) {
		t.Fatalf("receiver got %d bytes (md5 %x), want %d (md5 %x)", res[1], res[0], size, patternMD5(size))
	}
}

// An instance that stops sending mid-stream is still cut off by its idle
// timeout during a relay (the wait for its next bytes is bounded), not
// only when the pipeline ends. The relay runs as countingBody.WriteTo
// runs it: a slow part may hand the rest to Read.
func TestDirectRelayStalledInstance(t *testing.T) {
	e := newEnv(t, nil)
	bi := startBigInstance(t, &bigInstance{size: 4 << 20, cut: 1 << 20, stall: true})
	_, sb := streamStep(t, e, bi, dora.Release{Protocol: dora.ProtocolDora, Timeouts: dora.StepTimeouts{Idle: 320 * time.Millisecond}})
	w, _, _ := sink(t)
	type result struct {
		n   int64
		err error
	}
	res := make(chan result, 1)
	go func() {
		n, done, err := sb.sendDirect(w)
		if err == nil && !done {
			var m int64
			m, err = writeTo(w, sb)
			n += m
		}
		res <- result{n, err}
	}()
	select {
	case r := <-res:
		if !errors.Is(r.err, os.ErrDeadlineExceeded) || r.n != 1<<20 {
			t.Fatalf("relay from a stalled instance: %d bytes, err %v; want the %d sent, then a timeout", r.n, r.err, 1<<20)
		}
	case <-time.After(20 * time.Second): // a hang bound, not a timing assertion
		t.Fatal("the relay from a stalled instance did not end")
	}
	sb.Close()
}
