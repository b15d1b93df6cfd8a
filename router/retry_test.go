package router

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/pool"
)

// upperOrDropInstance is a Dora-protocol instance on loopback that reads its
// input (url= or the body) and answers it upper-cased or, when drop (asked
// once per request) says so, closes the connection after reading the
// input, without a byte of answer (a process killed mid-request, a
// keep-alive connection closed by its peer).
func upperOrDropInstance(t *testing.T, drop func() bool) string {
	t.Helper()
	return fakeInstance(t, func(w http.ResponseWriter, r *http.Request, in io.Reader) {
		dropIt := drop()
		b, err := io.ReadAll(in)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if dropIt {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		_, _ = w.Write(bytes.ToUpper(b))
	})
}

// dyingOrUpperInstance is upperOrDropInstance dropping every request when
// die is set; hits counts its requests.
func dyingOrUpperInstance(t *testing.T, die bool, hits *atomic.Int64) string {
	t.Helper()
	return upperOrDropInstance(t, func() bool { hits.Add(1); return die })
}

// A request whose instance dies after taking its input is replayed on
// another instance when the input is the object (re-openable): no request
// fails although every call to the dying instance does. (The input is
// the body here, so each of those calls counts as a failed connect: after
// pool.DefaultEjectAfter of them the dying instance is ejected, which
// bounds how often it is called.)
func TestDeadInstanceRequestRetried(t *testing.T) {
	e := newEnv(t, nil)
	var dyingHits, goodHits atomic.Int64
	dying := dyingOrUpperInstance(t, true, &dyingHits)
	good := dyingOrUpperInstance(t, false, &goodHits)
	e.ufop(dora.Ufop{Name: "upper", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("dying", "upper", "v1", dying), poolInst("good", "upper", "v1", good)})
	data := strings.Repeat("some text\n", 1000)
	e.objs.add("photos", "t.txt", "text/plain", []byte(data))
	for i := 0; dyingHits.Load() < pool.DefaultEjectAfter; i++ {
		if i == 200 {
			t.Fatalf("the dying instance was called %d times in 200 requests", dyingHits.Load())
		}
		resp, body := e.get("photos.localhost", "/t.txt?upper")
		if resp.StatusCode != http.StatusOK || string(body) != strings.ToUpper(data) {
			t.Fatalf("request %d (dying instance called %d times): %d %.200s", i, dyingHits.Load(), resp.StatusCode, body)
		}
	}
}

// chunkyInstance is a Dora-protocol instance answering its input unchanged
// in several flushed writes: a chunked response of unknown size, as most
// programs' output is once it passes their server's buffer.
func chunkyInstance(t *testing.T) string {
	t.Helper()
	return fakeInstance(t, func(w http.ResponseWriter, r *http.Request, src io.Reader) {
		in, err := io.ReadAll(src)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		for len(in) > 0 {
			n := min(len(in), 1000)
			w.Write(in[:n])
			w.(http.Flusher).Flush()
			in = in[n:]
		}
	})
}

// A later step whose input is a previous step's small output (under the
// body-mode threshold) is replayed on another instance when the one that
// took the input dies, although that input is a stream and not the object:
// the router holds the bytes. Both url= cases: an output of unknown size
// (chunked), and one of known size to a release that never takes a body.
func TestDeadInstanceRequestRetriedLaterStep(t *testing.T) {
	e := newEnv(t, nil)
	e.ufop(dora.Ufop{Name: "chunky", Owner: alice.ID}, dora.ProtocolDora)
	e.ufop(dora.Ufop{Name: "echo", Owner: alice.ID}, dora.ProtocolDora)
	e.ufopRelease(dora.Ufop{Name: "upper", Owner: alice.ID}, dora.Release{Protocol: dora.ProtocolDora, BodyLimit: -1})
	var dyingHits, goodHits, echoHits atomic.Int64
	dying := dyingOrUpperInstance(t, true, &dyingHits)
	good := dyingOrUpperInstance(t, false, &goodHits)
	e.pool.Update([]pool.Instance{
		poolInst("chunky", "chunky", "v1", chunkyInstance(t)),
		poolInst("echo", "echo", "v1", dyingOrUpperInstance(t, false, &echoHits)), // answers upper-cased, known size
		poolInst("dying", "upper", "v1", dying), poolInst("good", "upper", "v1", good),
	})
	data := strings.Repeat("some text\n", 3000) // 30 000 bytes: under the threshold
	e.objs.add("photos", "t.txt", "text/plain", []byte(data))
	for _, path := range []string{"/t.txt?chunky|upper", "/t.txt?echo|upper"} {
		t.Run(path, func(t *testing.T) {
			dyingHits.Store(0)
			for i := 0; dyingHits.Load() < 5; i++ {
				if i == 200 {
					t.Fatalf("the dying instance was called %d times in 200 requests", dyingHits.Load())
				}
				resp, body := e.get("photos.localhost", path)
				if resp.StatusCode != http.StatusOK || string(body) != strings.ToUpper(data) {
					t.Fatalf("request %d (dying instance called %d times): %d %.200s", i, dyingHits.Load(), resp.StatusCode, body)
				}
			}
		})
	}
}

// flakyConnInstance is upperOrDropInstance dropping every other request (as a
// keep-alive connection closed by its peer, or a program restarting, looks
// to the router); drops counts the dropped ones.
func flakyConnInstance(t *testing.T, drops *atomic.Int64) string {
	t.Helper()
	var n atomic.Int64
	return upperOrDropInstance(t, func() bool {
		if n.Add(1)%2 == 1 {
			drops.Add(1)
			return true
		}
		return false
	})
}

// A step whose only instance drops a connection before answering is tried
// once more on that instance (there is no other): with every other
// connection dropped, no request fails, in both input modes.
func TestOnlyInstanceDropRetried(t *testing.T) {
	e := newEnv(t, nil)
	var drops atomic.Int64
	e.ufop(dora.Ufop{Name: "upper", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("only", "upper", "v1", flakyConnInstance(t, &drops))})
	small := strings.Repeat("small\n", 100)       // body mode
	large := strings.Repeat("some text\n", 10000) // 100 000 bytes: url= mode, the object replayed
	e.objs.add("photos", "small.txt", "text/plain", []byte(small))
	e.objs.add("photos", "large.txt", "text/plain", []byte(large))
	for i := range 10 {
		for path, want := range map[string]string{"/small.txt?upper": small, "/large.txt?upper": large} {
			resp, body := e.get("photos.localhost", path)
			if resp.StatusCode != http.StatusOK || string(body) != strings.ToUpper(want) {
				t.Fatalf("request %d %s (%d drops so far): %d %.200s", i, path, drops.Load(), resp.StatusCode, body)
			}
		}
	}
	if drops.Load() < 10 {
		t.Fatalf("%d connections dropped, want at least 10", drops.Load())
	}
}

// forwarderInstance is an instance behind a user-space port forwarder (as
// podman's rootlessport publishes a container's port): the forwarder
// accepts every connection, and while its program is not listening (not
// started yet, or killed and not yet noticed) it closes the connection
// without a byte. The first closeFirst connections are closed that way
// (-1: all, a dead program); the later ones reach a program that answers
// its input upper-cased. conns counts the connections accepted.
func forwarderInstance(t *testing.T, closeFirst int64, conns *atomic.Int64) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int64
	program := dyingOrUpperInstance(t, false, &hits)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := conns.Add(1)
			if closeFirst < 0 || n <= closeFirst {
				c.Close()
				continue
			}
			go func() {
				defer c.Close()
				p, err := net.Dial("tcp", program)
				if err != nil {
					return
				}
				defer p.Close()
				go io.Copy(p, c)
				io.Copy(c, p)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// The soak's `502 grepd: EOF`: while an instance is replaced behind a port
// forwarder, the dead one stays listed until its runtime notices and the
// new one is listed before its program listens; both accept connections
// and close them unanswered. One retry was not enough (dead, then the new
// one, or the new one twice): a request must be answered by the new
// instance once its program listens, in both input modes.
func TestClosedUnansweredRetried(t *testing.T) {
	small := strings.Repeat("small\n", 100)       // body mode
	large := strings.Repeat("some text\n", 10000) // 100 000 bytes: url= mode, the object replayed
	cases := []struct {
		name           string
		dead           bool  // a dead instance is listed too
		startingCloses int64 // connections the new instance closes first
	}{
		{"dead and new instance", true, 1},
		{"only a new instance", false, 2},
	}
	for _, c := range cases {
		for path, want := range map[string]string{"/small.txt?upper": small, "/large.txt?upper": large} {
			t.Run(c.name+path, func(t *testing.T) {
				e := newEnv(t, nil)
				e.ufop(dora.Ufop{Name: "upper", Owner: alice.ID}, dora.ProtocolDora)
				e.objs.add("photos", "small.txt", "text/plain", []byte(small))
				e.objs.add("photos", "large.txt", "text/plain", []byte(large))
				var deadConns, newConns atomic.Int64
				insts := []pool.Instance{poolInst("new", "upper", "v1", forwarderInstance(t, c.startingCloses, &newConns))}
				if c.dead {
					insts = append(insts, poolInst("dead", "upper", "v1", forwarderInstance(t, -1, &deadConns)))
				}
				e.pool.Update(insts)
				resp, body := e.get("photos.localhost", path)
				if resp.StatusCode != http.StatusOK || string(body) != strings.ToUpper(want) {
					t.Fatalf("%d %.200s (connections: new instance %d, dead %d)", resp.StatusCode, body, newConns.Load(), deadConns.Load())
				}
				if newConns.Load() <= c.startingCloses {
					t.Fatalf("answered with the new instance's first %d connections closed after %d", c.startingCloses, newConns.Load())
				}
			})
		}
	}
}
