package router

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/doraproject/dora/autoscaler/load"
)

// metrics are the router's Prometheus figures. They are registered in a
// private registry (served on /metrics when Config.Metrics is not a
// Gatherer) and in Config.Metrics when given.
type metrics struct {
	requests    *prometheus.CounterVec   // by ufop (each checked step's name; "-" for plain downloads, "unknown" for pipelines refused before their names were checked) and code
	duration    prometheus.Histogram     // whole request, until the body is sent
	steps       *prometheus.HistogramVec // per step: time to the step's response headers
	bytesIn     prometheus.Counter
	bytesOut    prometheus.Counter
	loadDropped prometheus.Counter
	loadFailed  prometheus.Counter
	handler     fasthttp.RequestHandler

	// The children of requests and steps used so far, looked up without
	// the vectors' label validation, hashing and lock (about a third of a
	// microsecond per request): copy-on-write maps, written only the
	// first time a label set is seen (their number is that of the
	// vectors' children: bounded by the registered ufops and statuses).
	reqs   cowMap[reqLabels, prometheus.Counter]
	stepOb cowMap[string, prometheus.Observer]
}

// reqLabels are the labels of a requests child.
type reqLabels struct {
	ufop   string
	status int
}

// cowMap is a copy-on-write map: lock-free reads, a copy per new key.
type cowMap[K comparable, V any] struct {
	mu sync.Mutex
	m  atomic.Pointer[map[K]V]
}

// get returns the value of k, made by mk and kept the first time.
func (c *cowMap[K, V]) get(k K, mk func(K) V) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
	}
	n := make(map[K]V, 1+len(mapOrNil(old)))
	for k, v := range mapOrNil(old) {
		n[k] = v
	}
	v := mk(k)
	n[k] = v
	c.m.Store(&n)
	return v
}

func mapOrNil[K comparable, V any](p *map[K]V) map[K]V {
	if p == nil {
		return nil
	}
	return *p
}

func newMetrics(reg prometheus.Registerer, r *Router) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dora_router_requests_total", Help: "Requests served, by ufop (every step's name; - for plain downloads; unknown for pipelines refused before their step names were checked) and status code.",
		}, []string{"ufop", "code"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "dora_router_request_duration_seconds", Help: "Request duration until the response body is sent.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dora_router_step_seconds", Help: "Time from calling a pipeline step to its response headers (built-ins: to their result).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"ufop"}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dora_router_read_bytes_total", Help: "Bytes read from origins and instances.",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dora_router_sent_bytes_total", Help: "Response body bytes sent to clients.",
		}),
		loadDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dora_router_load_dropped_total", Help: "Load flushes dropped because the recorder was still busy.",
		}),
		loadFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dora_router_load_errors_total", Help: "Load flushes the recorder failed to store.",
		}),
	}
	cs := []prometheus.Collector{m.requests, m.duration, m.steps, m.bytesIn, m.bytesOut, m.loadDropped, m.loadFailed, &gauges{r: r}}
	private := prometheus.NewRegistry()
	for _, c := range cs {
		private.MustRegister(c)
		if reg != nil {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	var g prometheus.Gatherer = private
	if rg, ok := reg.(prometheus.Gatherer); ok {
		g = rg
	}
	m.handler = fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return m, nil
}

func (m *metrics) serve(ctx *fasthttp.RequestCtx) { m.handler(ctx) }

// statusCodes holds the label text of every HTTP status, so that counting
// a request allocates nothing.
var statusCodes = func() (t [600]string) {
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func statusLabel(status int) string {
	if status >= 0 && status < len(statusCodes) {
		return statusCodes[status]
	}
	return strconv.Itoa(status)
}

func (m *metrics) reqCounter(l reqLabels) prometheus.Counter {
	return m.requests.WithLabelValues(l.ufop, statusLabel(l.status))
}

func (m *metrics) stepObserver(name string) prometheus.Observer {
	return m.steps.WithLabelValues(name)
}

func (m *metrics) request(names []string, status int, d time.Duration, _ int64) {
	if len(names) == 0 {
		m.reqs.get(reqLabels{"-", status}, m.reqCounter).Inc()
	}
	for i, n := range names {
		dup := false
		for _, p := range names[:i] {
			dup = dup || p == n
		}
		if !dup {
			m.reqs.get(reqLabels{n, status}, m.reqCounter).Inc()
		}
	}
	m.duration.Observe(d.Seconds())
}

func (m *metrics) step(name string, d time.Duration) {
	m.stepOb.get(name, m.stepObserver).Observe(d.Seconds())
}

// gauges reads in-flight calls (the load counters), healthy instances (the
// pool) and held requests (Router.Held) at scrape time.
type gauges struct{ r *Router }

var (
	inflightDesc = prometheus.NewDesc("dora_router_inflight_calls", "Calls in flight per ufop version and region.",
		[]string{"ufop", "version", "region"}, nil)
	healthyDesc = prometheus.NewDesc("dora_router_healthy_instances", "Instances not ejected per ufop version and region.",
		[]string{"ufop", "version", "region"}, nil)
	heldDesc = prometheus.NewDesc("dora_router_held_requests",
		"Requests waiting for an instance of a ufop that has none (scale from zero), at most Config.MaxHeld.", nil, nil)
)

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- inflightDesc
	ch <- healthyDesc
	ch <- heldDesc
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	g.r.load.m.Range(func(k, v any) bool {
		key := k.(load.Key)
		ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue,
			float64(v.(*loadCounter).inflight.Load()), key.Ufop, key.Version, key.Region)
		return true
	})
	ch <- prometheus.MustNewConstMetric(heldDesc, prometheus.GaugeValue, float64(g.r.Held()))
	now := g.r.now()
	for _, k := range g.r.cfg.Pool.Keys() {
		ch <- prometheus.MustNewConstMetric(healthyDesc, prometheus.GaugeValue,
			float64(g.r.cfg.Pool.HealthyAt(k, now)), k.Ufop, k.Version, k.Region)
	}
}
