package stats

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestScrapeAcrossProcesses: the Sampler over Scrape reads two routers'
// and an autoscaler's /metrics pages (real promhttp handlers on loopback)
// and sums the routers; a page that does not answer is named in the error
// while the others still give a sample.
func TestScrapeAcrossProcesses(t *testing.T) {
	serve := func(reg *prometheus.Registry) string {
		ts := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		t.Cleanup(ts.Close)
		return ts.URL + "/metrics"
	}
	var routers []*prometheus.CounterVec
	var urls []string
	for i := 0; i < 2; i++ {
		reg := prometheus.NewRegistry()
		reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricRequests}, []string{"ufop", "code"})
		reg.MustRegister(reqs)
		reqs.WithLabelValues("grepd", "200").Add(0) // the series exists from the start, as in the router
		routers = append(routers, reqs)
		urls = append(urls, serve(reg))
	}
	as := prometheus.NewRegistry()
	ready := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: metricReady}, []string{"deployment", "ufop", "version", "region"})
	as.MustRegister(ready)
	ready.WithLabelValues("d1", "grepd", "v1", "z0").Set(3)
	urls = append(urls, serve(as))

	s := New(Config{Gatherer: Scrape{URLs: urls}, Interval: time.Second})
	t0 := time.Unix(1000, 0)
	if err := s.Sample(t0); err != nil {
		t.Fatal(err)
	}
	routers[0].WithLabelValues("grepd", "200").Add(12)
	routers[1].WithLabelValues("grepd", "200").Add(6)
	routers[1].WithLabelValues("grepd", "503").Add(2)
	if err := s.Sample(t0.Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	ps := s.Series("grepd")
	if len(ps) != 2 || ps[1].RPS != 10 || ps[1].ErrorsPS != 1 || ps[1].Ready != 3 {
		t.Fatalf("points %+v; want 10 req/s (both routers), 1 error/s, 3 ready", ps)
	}

	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	s2 := New(Config{Gatherer: Scrape{URLs: []string{down.URL + "/metrics", urls[2]}, Timeout: 2 * time.Second}})
	mfs, err := s2.cfg.Gatherer.Gather()
	if err == nil || !strings.Contains(err.Error(), down.URL) || len(mfs) == 0 {
		t.Fatalf("gather with one page down: %d families, %v", len(mfs), err)
	}
	if err := s2.Sample(t0); err != nil {
		t.Fatalf("a partial gather must still sample: %v", err)
	}
	if ps := s2.Series("grepd"); len(ps) != 1 || ps[0].Ready != 3 {
		t.Fatalf("partial sample %+v", ps)
	}
}
