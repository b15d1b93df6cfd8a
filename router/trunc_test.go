package router

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/pool"
)

// An instance that dies in the middle of a chunked (unknown-size) response
// must not yield a complete-looking 200: the client's read fails.
func TestInstanceDyingMidChunkedStream(t *testing.T) {
	e := newEnv(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, err := http.Get(r.URL.Query().Get("url"))
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		io.WriteString(w, strings.Repeat("partial ", 1000))
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	e.ufop(dora.Ufop{Name: "half", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("h", "half", "v1", ln.Addr().String())})
	e.objs.add("photos", "t.txt", "text/plain", []byte("input"))
	req, _ := http.NewRequest("GET", "http://"+e.addr+"/t.txt?half", nil)
	req.Host = "photos.localhost"
	resp, err := e.client.Do(req)
	if err != nil {
		return // refused before the headers: fine
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode == 200 {
		t.Fatalf("a truncated step output reached the client as a complete 200 (%d bytes)", len(body))
	}
}
