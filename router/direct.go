package router

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"time"
)

// A step's response streamed from its instance connection is relayed to
// the next hop (the next step's one-shot input, or the client) by the
// kernel where it can be: splice(2) from the instance's socket to the
// receiving socket, so that the bytes never cross into the router's user
// space. Go's *net.TCPConn.ReadFrom does the splice when it is handed an
// io.LimitedReader over another *net.TCPConn; fasthttp's response writer
// (a bufio.Writer) and the router's listener wrappers pass ReadFrom down to
// the connection. Only a body of known length is relayed this way (a
// chunked one must be decoded), and only on Linux (directIO): elsewhere
// ReadFrom would copy through a fresh buffer per call.
//
// Measured on loopback (docs/benchmarks.md, issue 11): the router spends
// 3–14 % less CPU per GiB through three steps; the receivers of spliced
// bytes spend about as much more, so the machine's total does not drop.
// sendfile(2) of a local object to the first step was tried and left out:
// it cost the receiving instance more than it saved the router.

// directSource is a stream that can send (part of) what remains of it to
// w without passing it through a user-space buffer.
type directSource interface {
	// sendDirect writes what it can of the rest of the stream to w and
	// returns the bytes written; done reports that the stream is fully
	// sent (or failed, err set). When it returns with done false and no
	// error, the rest is read with Read as usual.
	sendDirect(w io.Writer) (n int64, done bool, err error)
}

// sendDirectFrom sends what r can send directly to w (directSource).
func sendDirectFrom(w io.Writer, r io.Reader) (int64, bool, error) {
	if ds, ok := r.(directSource); ok && directIO {
		return ds.sendDirect(w)
	}
	return 0, false, nil
}

// directChunk is the most a relay moves per splice round (between two
// checks of the pipeline's context and two pushes of the idle deadline).
const directChunk = 256 << 10

// sendDirect relays the rest of a step's response of known length from
// its connection to w: first the bytes already read into the connection's
// buffer, then the rest by splice, directChunk bytes at a time. Between
// chunks the pipeline's context is checked and the read deadline moved to
// now + the idle timeout + its slack; a chunk slower than the slack hands
// the rest back to Read (the deadline then now + idle, moved at every
// read), so a stalled instance still times out between idle and idle +
// slack after its last byte — unless its rate fell within the chunk in
// progress, when the deadline fires idle + slack after that chunk began.
func (b *stepBody) sendDirect(w io.Writer) (total int64, done bool, err error) {
	if b.rc == nil || b.sc == nil || b.size < 0 || b.eof || b.err != nil || b.closed {
		return 0, false, nil
	}
	if _, inMem := b.rc.(*bytes.Reader); inMem {
		return 0, false, nil
	}
	ic, ok := b.sc.conn.(*idleConn)
	if !ok {
		return 0, false, nil
	}
	tc, ok := ic.Conn.(*net.TCPConn)
	if !ok || b.sc.br == nil {
		return 0, false, nil
	}
	rf, ok := w.(io.ReaderFrom)
	if !ok {
		return 0, false, nil
	}
	fail := func(err error) (int64, bool, error) {
		if cerr := b.ctx.Err(); cerr != nil {
			err = cerr // the context's end closed the connection
		} else {
			err = &streamError{step: b.step, err: err}
		}
		b.err = err
		return total, true, err
	}
	// The bytes read past the response headers are in the connection's
	// buffer: they go first, written from there.
	br := b.sc.br
	for br.Buffered() > 0 && b.n < b.size {
		if err := b.ctx.Err(); err != nil {
			return fail(err)
		}
		p, _ := br.Peek(int(min(int64(br.Buffered()), b.size-b.n)))
		m, werr := w.Write(p)
		br.Discard(m)
		b.n += int64(m)
		total += int64(m)
		b.r.metrics.bytesIn.Add(float64(m))
		if werr != nil {
			return fail(werr)
		}
	}
	// The writer's buffer (headers, those bytes) goes out before the
	// splice: bufio.Writer.ReadFrom hands over to the connection only
	// when it is empty.
	if bw, ok := w.(*bufio.Writer); ok {
		if err := bw.Flush(); err != nil {
			return fail(err)
		}
	}
	idle := b.sc.ic.t.Idle
	slack := deadlineSlack(idle)
	lr := &io.LimitedReader{R: tc}
	for b.n < b.size {
		if err := b.ctx.Err(); err != nil {
			return fail(err)
		}
		// The idle timeout bounds the wait for the instance's next bytes
		// only: the splice then moves no more than are queued, without
		// a read deadline, so a receiver slow to take them (bounded by
		// its own write deadline) does not pass for a stalled instance.
		start := time.Now()
		if idle > 0 {
			if err := ic.SetReadDeadline(start.Add(idle)); err != nil {
				return fail(err)
			}
		}
		queued, err := waitQueued(tc)
		if err != nil {
			return fail(err)
		}
		if idle > 0 {
			if err := ic.SetReadDeadline(time.Time{}); err != nil {
				return fail(err)
			}
		}
		want := min(int64(directChunk), b.size-b.n)
		if queued > 0 {
			want = min(want, int64(queued))
		}
		lr.N = want
		m, err := rf.ReadFrom(lr)
		b.n += m
		total += m
		b.r.metrics.bytesIn.Add(float64(m))
		if err != nil {
			return fail(err)
		}
		if m < want {
			// The instance closed its connection before Content-Length
			// bytes: a truncated step.
			ic.eof.Store(true)
			return fail(io.ErrUnexpectedEOF)
		}
		if now := time.Now(); idle > 0 && now.Sub(start) > slack && b.n < b.size {
			// A slow stream: Read keeps its idle timeout exact, from
			// the last byte on.
			if err := ic.SetReadDeadline(now.Add(idle)); err != nil {
				return fail(err)
			}
			return total, false, nil
		}
	}
	b.eof = true
	return total, true, nil
}
