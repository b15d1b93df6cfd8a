package router

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestRecycledPipelineEnds runs the HTTP path's recycled pipelines
// (Router.pipelines: body-mode steps) while the two parties that end a
// pipeline from outside its connection's goroutine are at work on
// others: the client connection's watch (clients that hang up on a
// step's streamed answer; the watch here looks every millisecond) and
// the shared deadline's endAll (streams still read, slowly, when their
// deadline passes). Each of those pipelines has its step's instance
// connection in its context's list, which the end closes. Meanwhile
// many body-mode requests take and give back pipelines: a watch cancel or
// a deadline end that reached a pipeline after its recycling would end
// an unrelated request (a 499/504, a cut answer, another access line),
// and under -race a touch of its memory is a race. Every answer must be
// its own object's bytes, every request logged once with its own key,
// pipeline, status and bytes; the held and hung-up streams end short
// with an error. (A churn request that fails once its own deadline has
// passed, on a machine too loaded, is counted apart, not failed: that end
// is its due.)
//
// The interleavings are not forced: this is the assembled check behind
// the deterministic TestWatchRemoveWaitsForCancel and
// TestSharedDeadlineRemoveWaitsForEnd.
func TestRecycledPipelineEnds(t *testing.T) {
	log := newLifetimeLog()
	const deadline = 2 * time.Second
	r, objs := hotRouterOpts(t, func(c *Config) {
		c.Logger = slog.New(log)
		c.Deadline = deadline
	}, func(r *Router) { r.watch = newConnWatch(time.Millisecond) })
	rng := rand.New(rand.NewPCG(3, 4))
	var datas [][]byte
	for i := range 8 {
		data := make([]byte, 4<<10+i)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		objs.add("photos", fmt.Sprintf("k%d", i), "application/octet-stream", data)
		datas = append(datas, data)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	defer tr.CloseIdleConnections()
	const host = "photos.localhost"

	get := func(uri string) (*http.Response, error) {
		req, err := http.NewRequest(http.MethodGet, "http://"+r.publicAddr()+uri, nil)
		if err != nil {
			return nil, err
		}
		req.Host = host
		resp, err := tr.RoundTrip(req)
		if err == nil && resp.StatusCode != 200 {
			resp.Body.Close()
			err = &statusError{uri, resp.StatusCode}
		}
		return resp, err
	}
	type ended struct {
		reqid    string
		pipeline string
		held     bool
		n        int64
		err      error
	}
	var mu sync.Mutex
	var ends []ended
	errs := make(chan error, 64)
	var wg sync.WaitGroup
	// Held: a stalling step's answer (64 KiB, then a byte every
	// stallEvery), read as it comes: when the deadline passes, the
	// router waits for the instance (no write of its own is due to time
	// out), and endAll's end closes that connection under it.
	for range 8 {
		wg.Go(func() {
			resp, err := get("/small?stall")
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil {
				err = errors.New("read to its end")
			}
			mu.Lock()
			ends = append(ends, ended{resp.Header.Get("X-Reqid"), "stall", true, n, err})
			mu.Unlock()
		})
	}
	// Hung up: a part read, then the connection closed, over the
	// deadline's first half; on the fast and the stalling answer.
	for i := range 16 {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * deadline / 32)
			pipeline := [2]string{"grow", "stall"}[i%2]
			resp, err := get("/small?" + pipeline)
			if err != nil {
				errs <- err
				return
			}
			_, err = io.ReadFull(resp.Body, make([]byte, 64<<10))
			resp.Body.Close() // not read to its end: the connection is closed
			if err != nil {
				errs <- fmt.Errorf("a stream to hang up on: %w", err)
				return
			}
			mu.Lock()
			ends = append(ends, ended{resp.Header.Get("X-Reqid"), pipeline, false, 0, nil})
			mu.Unlock()
		})
	}
	// Churn until the held streams are over (the deadline and a half).
	type done struct{ reqid, key, pipeline string }
	var dones []done
	late := 0
	stop := time.Now().Add(deadline * 3 / 2)
	var cw sync.WaitGroup
	for g := range 8 {
		cw.Go(func() {
			for i := 0; time.Now().Before(stop); i++ {
				k := (g + i) % len(datas)
				pipeline := "passthru"
				if i%3 == 2 {
					pipeline = "passthru|passthru"
				}
				key := fmt.Sprintf("k%d", k)
				start := time.Now()
				resp, err := get("/" + key + "?" + pipeline)
				var b []byte
				if err == nil {
					b, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				var se *statusError
				if err != nil && time.Since(start) >= deadline && (!errors.As(err, &se) || se.status == http.StatusGatewayTimeout) {
					// Its own deadline passed (a machine too loaded):
					// its end is its due. (A client that stays never
					// gets 499.)
					mu.Lock()
					late++
					mu.Unlock()
					continue
				}
				if err != nil || !bytes.Equal(b, datas[k]) {
					errs <- fmt.Errorf("/%s?%s: %d bytes (%d wanted), %v", key, pipeline, len(b), len(datas[k]), err)
					return
				}
				mu.Lock()
				dones = append(dones, done{resp.Header.Get("X-Reqid"), key, pipeline})
				mu.Unlock()
			}
		})
	}
	cw.Wait()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	if len(dones) == 0 {
		t.Fatalf("no churn request answered within its deadline (%d late)", late)
	}
	for _, d := range dones {
		l := log.line(t, d.reqid)
		if l.key != d.key || l.pipeline != d.pipeline || l.status != 200 || l.bytes != int64(len(datas[d.key[1]-'0'])) || l.err != "" {
			t.Errorf("/%s?%s (reqid %s): access line %+v", d.key, d.pipeline, d.reqid, l)
		}
	}
	why := map[string]int{}
	for _, e := range ends {
		if e.held && e.n >= growSize {
			t.Errorf("reqid %s: a held stream was not cut by the deadline: %d bytes, %v", e.reqid, e.n, e.err)
		}
		l := log.line(t, e.reqid)
		if l.key != "small" || l.pipeline != e.pipeline || l.status != 200 || l.bytes >= growSize || l.err == "" {
			t.Errorf("reqid %s: access line %+v", e.reqid, l)
		}
		if e.held {
			why[l.err]++
		}
	}
	t.Logf("%d churn requests (%d more past their own deadline), %d streams ended early; the held ones' errors: %v", len(dones), late, len(ends), why)
}

// statusError is an answer other than 200.
type statusError struct {
	uri    string
	status int
}

func (e *statusError) Error() string { return fmt.Sprintf("%s: status %d", e.uri, e.status) }
