// Command load is Dora's HTTP load generator: a fasthttp client that sends
// one request shape as fast as -c workers can for -d (or -n requests), then
// prints requests/s and latency percentiles, or, with -stream, the bytes
// and MB/s of streamed responses (a response body is read in chunks and
// discarded, so a 1 GiB body costs the tool no memory).
//
//	load -url 'http://127.0.0.1:8080/k?passthru' -host photos.localhost -c 32 -d 10s
//	load -url 'http://127.0.0.1:9100/handler?cmd=passthru' -method POST -body small.bin
//	load -url 'http://127.0.0.1:8080/big?passthru|passthru|passthru' -host b.localhost -n 1 -stream
//	load -url 'http://127.0.0.1:8080/k?passthru' -host photos.localhost -c 32 -d 10s -rate 5000
//
// With -rate the tool sends at a fixed total rate (open loop: request i is
// due at i/rate, a precise clock releases it, whichever of the -c
// connections is free sends it, and its latency counts from its due time,
// so a stall is not hidden by the requests it delays; every request due
// before the end is sent and counted). It then also prints p90, p99.9,
// max, how late requests left the tool, and its own CPU time and wait for
// a CPU; -hist adds a histogram. With -kv a last line "kv rps=… p50us=…
// p99us=… mbps=… ok=… failed=…" (and more) is printed for scripts.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

type options struct {
	url, host, method, bodyFile, label string
	conc, n, procs                     int
	dur                                time.Duration
	stream, kv, hist                   bool
	rate                               float64
	sched                              string
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", "", "request URL (path and query sent verbatim)")
	flag.StringVar(&o.host, "host", "", "Host header (default: the URL's host)")
	flag.StringVar(&o.method, "method", "GET", "request method")
	flag.StringVar(&o.bodyFile, "body", "", "file sent as the request body")
	flag.StringVar(&o.label, "label", "", "label printed before the figures")
	flag.IntVar(&o.conc, "c", 16, "concurrent workers")
	flag.IntVar(&o.n, "n", 0, "total requests (0: run for -d)")
	flag.DurationVar(&o.dur, "d", 10*time.Second, "duration when -n is 0")
	flag.BoolVar(&o.stream, "stream", false, "stream response bodies and report MB/s")
	flag.Float64Var(&o.rate, "rate", 0, "fixed total request rate per second (0: as fast as possible)")
	flag.BoolVar(&o.kv, "kv", false, "print a last machine-readable kv line")
	flag.BoolVar(&o.hist, "hist", false, "print a histogram of the latencies")
	flag.IntVar(&o.procs, "procs", 0, "GOMAXPROCS of the tool (0: 1 with -rate, Go's default otherwise)")
	flag.StringVar(&o.sched, "sched", "shared", "with -rate: \"shared\" (one precise clock; the next due request goes to any free connection) or \"worker\" (each connection has its own fixed schedule and sleeps with time.Sleep)")
	flag.Parse()
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

// result is what the workers measured.
type result struct {
	ok, failed int64
	bytes      int64
	elapsed    time.Duration
	lat        []time.Duration
	late       []time.Duration // with -rate: how late each request left the tool
	sent       []time.Duration // with -rate: each latency counted from when the request left the tool
	firstErr   string
}

func run(o options, out io.Writer) error {
	u, err := url.Parse(o.url)
	if err != nil || u.Host == "" {
		return fmt.Errorf("bad -url %q", o.url)
	}
	var body []byte
	if o.bodyFile != "" {
		if body, err = os.ReadFile(o.bodyFile); err != nil {
			return err
		}
	}
	// At a fixed rate the tool needs a fraction of a core, and with one P
	// the Go runtime does not wake a second thread to look for work at
	// every request: the tool takes less of the CPU the measured
	// processes share with it (8–37 % less CPU in five interleaved pairs).
	if o.procs == 0 && o.rate > 0 {
		o.procs = 1
	}
	if o.procs > 0 {
		runtime.GOMAXPROCS(o.procs)
	}
	if o.sched != "shared" && o.sched != "worker" {
		return fmt.Errorf("bad -sched %q: shared or worker", o.sched)
	}
	if o.conc < 1 {
		o.conc = 1
	}
	if o.n > 0 && o.conc > o.n {
		o.conc = o.n
	}
	hc := &fasthttp.HostClient{
		Addr:                u.Host,
		MaxConns:            o.conc * 2,
		ReadTimeout:         10 * time.Minute,
		WriteTimeout:        time.Minute,
		StreamResponseBody:  o.stream,
		MaxResponseBodySize: 64 << 20,
		ReadBufferSize:      16 << 10,
	}
	host := o.host
	if host == "" {
		host = u.Host
	}
	uri := u.RequestURI()
	if u.RawQuery != "" {
		uri = u.EscapedPath() + "?" + u.RawQuery
	}

	var (
		mu       sync.Mutex
		res      result
		issued   atomic.Int64
		deadline = time.Now().Add(o.dur)
		wg       sync.WaitGroup
	)
	start := time.Now()
	var due chan time.Time
	if o.rate > 0 && o.sched != "worker" {
		interval := time.Duration(float64(time.Second) / o.rate)
		t0, wait, stop, err := newTicker(interval)
		if err != nil {
			return err
		}
		defer stop()
		start, deadline = t0, t0.Add(o.dur)
		due = make(chan time.Time, 1<<16)
		go pace(start, interval, wait, deadline, due)
	}
	for w := range o.conc {
		wg.Go(func() {
			req := fasthttp.AcquireRequest()
			resp := fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			lat := make([]time.Duration, 0, 1<<14)
			var late, sent []time.Duration
			if o.rate > 0 {
				late = make([]time.Duration, 0, 1<<14)
				sent = make([]time.Duration, 0, 1<<14)
			}
			var ok, failed, nbytes int64
			var firstErr string
			buf := make([]byte, 256<<10)
			for k := 0; ; k++ {
				var sched time.Time
				if o.rate > 0 && o.sched == "worker" {
					// Request k of worker w is due at (k*conc+w)/rate,
					// whatever w's previous response took.
					sched = start.Add(time.Duration(float64(k*o.conc+w) / o.rate * float64(time.Second)))
					if d := time.Until(sched); d > 0 {
						time.Sleep(d)
					}
				} else if o.rate > 0 {
					var ok bool
					if sched, ok = <-due; !ok {
						break
					}
				}
				if o.n > 0 {
					if issued.Add(1) > int64(o.n) {
						break
					}
				} else if o.rate > 0 {
					// Every request due before the deadline is sent and
					// counted, however late: dropping the late ones at
					// the end would hide exactly the latency measured.
					if sched.After(deadline) {
						break
					}
				} else if time.Now().After(deadline) {
					break
				}
				req.Reset()
				req.SetRequestURI(uri)
				req.UseHostHeader = true
				req.Header.SetHost(host)
				req.Header.SetMethod(o.method)
				if body != nil {
					req.SetBodyRaw(body)
				}
				t0 := time.Now()
				var lateBy time.Duration
				if o.rate > 0 {
					lateBy = t0.Sub(sched)
					late = append(late, lateBy)
					t0 = sched
				}
				err := hc.Do(req, resp)
				var n int64
				if err == nil {
					n, err = drain(resp, buf)
				}
				d := time.Since(t0)
				if err == nil && resp.StatusCode() != 200 {
					err = fmt.Errorf("status %d: %.200s", resp.StatusCode(), resp.Body())
				}
				if err != nil {
					failed++
					if firstErr == "" {
						firstErr = err.Error()
					}
					continue
				}
				ok++
				nbytes += n
				lat = append(lat, d)
				if o.rate > 0 {
					sent = append(sent, d-lateBy)
				}
			}
			mu.Lock()
			res.ok += ok
			res.failed += failed
			res.bytes += nbytes
			res.lat = append(res.lat, lat...)
			res.late = append(res.late, late...)
			res.sent = append(res.sent, sent...)
			if res.firstErr == "" {
				res.firstErr = firstErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	report(out, o, res)
	if res.ok == 0 {
		return errors.New("no request succeeded: " + res.firstErr)
	}
	return nil
}

// pace sends the due time of every request, start + i×interval for i =
// 1, 2, …, on due at that time (one tick of a precise clock, newTicker,
// per request), and closes due once the deadline has passed. A free
// worker takes the next due time: a slow response delays no other request
// unless every connection is busy, and then the requests wait in due and
// that wait counts in their latency (measured from the due time). If due
// is full the pacer blocks, and the due times it sends afterwards are
// still those of the schedule.
func pace(start time.Time, interval time.Duration, wait func() (int64, error), deadline time.Time, due chan<- time.Time) {
	defer close(due)
	for i := int64(1); ; {
		n, err := wait()
		if err != nil {
			return
		}
		for end := i + n; i < end; i++ {
			t := start.Add(time.Duration(i) * interval)
			if t.After(deadline) {
				return
			}
			due <- t
		}
	}
}

// drain reads the response body (streamed or not) and returns its size.
func drain(resp *fasthttp.Response, buf []byte) (int64, error) {
	if s := resp.BodyStream(); s != nil {
		var n int64
		for {
			m, err := s.Read(buf)
			n += int64(m)
			if err == io.EOF {
				break
			}
			if err != nil {
				resp.CloseBodyStream()
				return n, err
			}
		}
		return n, resp.CloseBodyStream()
	}
	return int64(len(resp.Body())), nil
}

func pct(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	i := int(float64(len(lat)-1) * p)
	return lat[i]
}

func report(w io.Writer, o options, r result) {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	slices.Sort(r.lat)
	slices.Sort(r.late)
	slices.Sort(r.sent)
	secs := r.elapsed.Seconds()
	label := o.label
	if label == "" {
		label = o.url
	}
	us := func(d time.Duration) time.Duration { return d.Round(time.Microsecond) }
	if o.stream {
		fmt.Fprintf(bw, "%-28s %8d ok %4d failed  %10.1f MB  %8.1f MB/s  in %.2fs\n",
			label, r.ok, r.failed, float64(r.bytes)/1e6, float64(r.bytes)/1e6/secs, secs)
	} else {
		fmt.Fprintf(bw, "%-28s %8d ok %4d failed  %9.0f req/s  p50 %8s  p99 %8s\n",
			label, r.ok, r.failed, float64(r.ok)/secs, us(pct(r.lat, 0.50)), us(pct(r.lat, 0.99)))
	}
	if o.rate > 0 && len(r.lat) > 0 {
		fmt.Fprintf(bw, "%-28s latency p90 %s  p99.9 %s  max %s;  left the tool late: p50 %s  p99 %s  max %s;  from leaving the tool: p50 %s  p99 %s\n", "",
			us(pct(r.lat, 0.90)), us(pct(r.lat, 0.999)), us(r.lat[len(r.lat)-1]),
			us(pct(r.late, 0.50)), us(pct(r.late, 0.99)), us(r.late[len(r.late)-1]),
			us(pct(r.sent, 0.50)), us(pct(r.sent, 0.99)))
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		var maxPause uint64
		for _, p := range ms.PauseNs {
			maxPause = max(maxPause, p)
		}
		fmt.Fprintf(bw, "%-28s the tool itself: %s of CPU, its threads waited %s for one; GC %d cycles, longest pause %s\n", "",
			cpuTime().Round(time.Millisecond), runDelay(os.Getpid()).Round(time.Millisecond), ms.NumGC, us(time.Duration(maxPause)))
	}
	if o.hist {
		histogram(bw, r.lat)
	}
	if r.failed > 0 {
		fmt.Fprintf(bw, "%-28s first error: %s\n", "", r.firstErr)
	}
	if o.kv {
		fmt.Fprintf(bw, "kv rps=%.1f p50us=%d p90us=%d p99us=%d p999us=%d maxus=%d lateus99=%d sentp99us=%d mbps=%.1f ok=%d failed=%d\n",
			float64(r.ok)/secs, pct(r.lat, 0.50).Microseconds(), pct(r.lat, 0.90).Microseconds(),
			pct(r.lat, 0.99).Microseconds(), pct(r.lat, 0.999).Microseconds(), pct(r.lat, 1).Microseconds(),
			pct(r.late, 0.99).Microseconds(), pct(r.sent, 0.99).Microseconds(), float64(r.bytes)/1e6/secs, r.ok, r.failed)
	}
}

// histogram prints the count of sorted latencies lat in buckets of a
// quarter power of two (…, 1 ms, 1.19 ms, 1.41 ms, 1.68 ms, 2 ms, …), with
// the cumulative share, skipping empty buckets.
func histogram(w io.Writer, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	i := 0
	for k := 0; i < len(lat); k++ {
		hi := time.Duration(float64(16*time.Microsecond) * math.Pow(2, float64(k)/4))
		n := 0
		for i < len(lat) && lat[i] < hi {
			i++
			n++
		}
		if n > 0 {
			fmt.Fprintf(w, "  < %9s %8d  %7.3f %%\n", hi.Round(time.Microsecond), n, 100*float64(i)/float64(len(lat)))
		}
	}
}
