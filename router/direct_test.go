package router

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/fop"
)

// bigInstance serves the Dora protocol with a response of size pattern
// bytes announced by Content-Length, written in 64 KiB pieces: all of it,
// or only the first cut bytes before it closes the connection (cut > 0),
// or the first cut bytes and then nothing until the test ends (stall), or
// with pause between the pieces. It counts the connections it accepted.
type bigInstance struct {
	size, cut int64
	stall     bool
	pause     time.Duration
	conns     atomic.Int32
	addr      string
}

func startBigInstance(t *testing.T, bi *bigInstance) *bigInstance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Length", strconv.FormatInt(bi.size, 10))
			w.Header().Set("Content-Type", "application/octet-stream")
			src := io.LimitReader(&pattern{}, bi.size)
			if bi.cut > 0 {
				src = io.LimitReader(src, bi.cut)
			}
			buf := make([]byte, 64<<10)
			for {
				n, _ := io.ReadFull(src, buf)
				if n == 0 {
					break
				}
				if _, err := w.Write(buf[:n]); err != nil {
					return
				}
				if bi.pause > 0 {
					w.(http.Flusher).Flush()
					time.Sleep(bi.pause)
				}
			}
			if bi.cut > 0 {
				w.(http.Flusher).Flush()
				if bi.stall {
					<-done
				}
				if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
					conn.Close()
				}
			}
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				bi.conns.Add(1)
			}
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() { close(done); srv.Close() })
	bi.addr = ln.Addr().String()
	return bi
}

// patternMD5 is the md5 of the first n bytes of pattern.
func patternMD5(n int64) [16]byte {
	h := md5.New()
	io.Copy(h, io.LimitReader(&pattern{}, n))
	var s [16]byte
	copy(s[:], h.Sum(nil))
	return s
}

// sink accepts one connection and reports the md5 and length of all it
// reads; w writes to it through a bufio.Writer, as fasthttp's server does.
func sink(t *testing.T) (w *bufio.Writer, conn net.Conn, got <-chan [2]any) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan [2]any, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- [2]any{[16]byte{}, int64(-1)}
			return
		}
		defer c.Close()
		h := md5.New()
		n, _ := io.Copy(h, c)
		var s [16]byte
		copy(s[:], h.Sum(nil))
		ch <- [2]any{s, n}
	}()
	conn, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return bufio.NewWriterSize(conn, 16<<10), conn, ch
}

// streamStep runs one step of ufop "big" (served by bi) in a pipeline and
// returns its response body, which must be streamed from the connection.
func streamStep(t *testing.T, e *env, bi *bigInstance, rel dora.Release) (*pipeline, *stepBody) {
	t.Helper()
	e.ufopRelease(dora.Ufop{Name: "big", Owner: alice.ID}, rel)
	e.pool.Update([]pool.Instance{poolInst("b", "big", "v1", bi.addr)})
	u, _ := e.r.meta.Snapshot().Ufop("big")
	p := newPipeline(e.r, context.Background(), nil, "direct-test", dora.Bucket{Name: "photos", Owner: alice.ID}, "k")
	t.Cleanup(p.teardown)
	cur, herr := p.runUfop(0, stage{step: fop.Step{Name: "big", Raw: "big"}, ufop: u}, heldFlow([]byte("in"), "text/plain"))
	if herr != nil {
		t.Fatal(herr)
	}
	sb, ok := cur.body.(*stepBody)
	if !ok || sb.sc == nil {
		t.Fatalf("the step's body is %T, not streamed from its connection", cur.body)
	}
	return p, sb
}

// A step's response is relayed whole by sendDirect (splice on Linux):
// every byte in order after what the writer had buffered, the stream at
// its end, and its connection reused by the next step.
func TestDirectRelay(t *testing.T) {
	e := newEnv(t, nil)
	const size = 3<<20 + 12345 // > DefaultBufferedBodyMax: streamed
	bi := startBigInstance(t, &bigInstance{size: size})
	_, sb := streamStep(t, e, bi, dora.Release{Protocol: dora.ProtocolDora})
	w, conn, got := sink(t)
	w.WriteString("HEAD")
	n, done, err := sb.sendDirect(w)
	if err != nil || !done || n != size {
		t.Fatalf("sendDirect: %d bytes, done %v, err %v; want %d, true, nil", n, done, err, size)
	}
	if m, err := sb.Read(make([]byte, 1)); m != 0 || err != io.EOF {
		t.Fatalf("after the relay Read gave %d, %v; want 0, EOF", m, err)
	}
	sb.Close()
	conn.Close()
	res := <-got
	want := md5.New()
	io.Copy(want, io.MultiReader(bytes.NewReader([]byte("HEAD")), io.LimitReader(&pattern{}, size)))
	if res[1].(int64) != size+4 || res[0].([16]byte) != [16]byte(want.Sum(nil)) {
		t.Fatalf("sink got %d bytes (md5 %x), want %d (md5 %x)", res[1], res[0], size+4, want.Sum(nil))
	}
	// The connection went back to the pool: the next step uses it.
	_, sb2 := streamStep(t, e, bi, dora.Release{Protocol: dora.ProtocolDora})
	if _, err := io.Copy(io.Discard, sb2); err != nil {
		t.Fatal(err)
	}
	sb2.Close()
	if c := bi.conns.Load(); c != 1 {
		t.Fatalf("the instance accepted %d connections, want 1 (reused after the relay)", c)
	}
}

// An instance that closes its connection before its Content-Length is a
// truncated step: sendDirect fails with the step's stream error and the
// connection is not reused.
func TestDirectRelayTruncated(t *testing.T) {
	e := newEnv(t, nil)
	bi := startBigInstance(t, &bigInstance{size: 3 << 20, cut: 1 << 20})
	_, sb := streamStep(t, e, bi, dora.Release{Protocol: dora.ProtocolDora})
	w, _, _ := sink(t)
	n, done, err := sb.sendDirect(w)
	var se *streamError
	if !done || !errors.As(err, &se) || !errors.Is(err, io.ErrUnexpectedEOF) || se.step != 0 {
		t.Fatalf("sendDirect: %d bytes, done %v, err %v; want a step 0 stream error (unexpected EOF)", n, done, err)
	}
	if n != 1<<20 {
		t.Fatalf("relayed %d bytes, want the %d the instance sent", n, 1<<20)
	}
	sb.Close()
	_, sb2 := streamStep(t, e, bi, dora.Release{Protocol: dora.ProtocolDora})
	io.Copy(io.Discard, sb2)
	sb2.Close()
	if c := bi.conns.Load(); c != 2 {
		t.Fatalf("the instance accepted %d connections, want 2 (the cut one not reused)", c)
	}
}

// The pipeline's end stops a relay in progress at once: the instance's
// connection is closed and sendDirect returns the context's error.
func TestDirectRelayCancelled(t *testing.T) {
	e := newEnv(t, nil)
	bi := startBigInstance(t, &bigInstance{size: 3 << 20, cut: 1 << 20, stall: true})
	p, sb := streamStep(t, e, bi, dora.Release{Protocol: dora.ProtocolDora})
	w, _, _ := sink(t)
	type result struct {
		n    int64
		done bool
		err  error
	}
	res := make(chan result, 1)
	go func() {
		n, done, err := sb.sendDirect(w)
		res <- result{n, done, err}
	}()
	time.Sleep(100 * time.Millisecond) // the relay waits for bytes that do not come
	p.teardown()
	select {
	case r := <-res:
		if !r.done || !errors.Is(r.err, context.Canceled) {
			t.Fatalf("sendDirect after the pipeline's end: %d bytes, done %v, err %v; want context.Canceled", r.n, r.done, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not stop when the pipeline ended")
	}
	sb.Close()
}

// A stream slower than the idle timeout's slack hands the rest back to
// Read (whose idle deadline moves at every read): the bytes still all
// arrive, the first part spliced and the rest read.
func TestDirectRelaySlowFallsBack(t *testing.T) {
	e := newEnv(t, nil)
	const size = 1 << 20
	bi := startBigInstance(t, &bigInstance{size: size, pause: 25 * time.Millisecond})
	// Idle 320 ms: a slack of 20 ms, shorter than a 256 KiB chunk takes.
	_, sb := streamStep(t, e, bi, dora.Release{Protocol: dora.ProtocolDora, Timeouts: dora.StepTimeouts{Idle: 320 * time.Millisecond}})
	w, conn, got := sink(t)
	n, done, err := sb.sendDirect(w)
	if err != nil || done || n <= 0 || n >= size {
		t.Fatalf("sendDirect: %d bytes, done %v, err %v; want part of the stream and done false", n, done, err)
	}
	m, err := writeTo(w, sb)
	if err != nil || n+m != size {
		t.Fatalf("the rest through Read: %d bytes, %v; want %d", m, err, size-n)
	}
	w.Flush()
	sb.Close()
	conn.Close()
	res := <-got
	if res[1].(int64) != size || res[0].([16]byte) != patternMD5(size) {
		t.Fatalf("sink got %d bytes (md5 %x), want %d (md5 %x)", res[1], res[0], size, patternMD5(size))
	}
}

// End to end: a 3 MiB object through passthru|passthru — the first
// step's output relayed to the second step's one-shot input, the second's
// to the client — arrives whole.
func TestDirectRelayThroughPipeline(t *testing.T) {
	e := newEnv(t, nil)
	const size = 3<<20 + 777
	data, _ := io.ReadAll(io.LimitReader(&pattern{}, size))
	e.objs.add("photos", "big.bin", "application/octet-stream", data)
	p := startExample(t, "passthru")
	e.ufop(dora.Ufop{Name: "passthru", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("p0", "passthru", "v1", p.addr)})
	for range 2 { // the second time on kept connections
		resp, body := e.get("photos.localhost", "/big.bin?passthru|passthru")
		if resp.StatusCode != 200 || !bytes.Equal(body, data) {
			t.Fatalf("status %d, %d bytes (want %d, the object's)", resp.StatusCode, len(body), size)
		}
	}
}
