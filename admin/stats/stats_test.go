package stats

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestSamplerRatesAndRing(t *testing.T) {
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricRequests}, []string{"ufop", "code"})
	steps := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: metricSteps}, []string{"ufop"})
	ready := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: metricReady}, []string{"deployment", "ufop", "version", "region"})
	reg.MustRegister(reqs, steps, ready)
	s := New(Config{Gatherer: reg, Interval: time.Second, Window: 3 * time.Second})
	t0 := time.Unix(1000, 0)
	ready.WithLabelValues("d1", "grepd", "v1", "z0").Set(2)
	if err := s.Sample(t0); err != nil {
		t.Fatal(err)
	}
	reqs.WithLabelValues("grepd", "200").Add(18)
	reqs.WithLabelValues("grepd", "599").Add(2)
	reqs.WithLabelValues("-", "200").Add(100) // plain downloads are no ufop
	steps.WithLabelValues("grepd").Observe(0.010)
	steps.WithLabelValues("grepd").Observe(0.030)
	if err := s.Sample(t0.Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	ps := s.Series("grepd")
	if len(ps) != 2 {
		t.Fatalf("points %+v", ps)
	}
	p := ps[1]
	if p.RPS != 10 || p.ErrorsPS != 1 || p.Ready != 2 || p.LatencyMS < 19.9 || p.LatencyMS > 20.1 {
		t.Fatalf("second point %+v", p)
	}
	if ps[0].RPS != 0 {
		t.Fatalf("the first point has no rate: %+v", ps[0])
	}
	if got := s.Ufops(); len(got) != 1 || got[0] != "grepd" {
		t.Fatalf("ufops %v", got)
	}
	for i := 3; i < 10; i++ {
		s.Sample(t0.Add(time.Duration(i) * time.Second))
	}
	if n := len(s.Series("grepd")); n != 4 {
		t.Fatalf("a 3s window at 1s keeps 4 points, got %d", n)
	}
}
