// Package stats keeps the last hour of the platform's own figures per ufop
// — requests per second, errors per second, mean step latency and ready
// instances — sampled in-process from its Prometheus registries, so that
// the web console can draw charts without an external Prometheus.
package stats

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/doraproject/dora/internal/tick"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Series read from the gathered families.
const (
	metricRequests = "dora_router_requests_total"        // {ufop, code}
	metricSteps    = "dora_router_step_seconds"          // histogram {ufop}
	metricReady    = "dora_autoscaler_ready_instances"   // gauge {deployment, ufop, version, region}
	metricDesired  = "dora_autoscaler_desired_instances" // gauge, same labels
)

// Defaults of Config.
const (
	DefaultInterval = 10 * time.Second
	DefaultWindow   = time.Hour
)

// Point is one sample of one ufop.
type Point struct {
	Time time.Time `json:"t"`
	// RPS is requests per second over the interval before Time.
	RPS float64 `json:"rps"`
	// ErrorsPS is 5xx (and 599) replies per second.
	ErrorsPS float64 `json:"eps"`
	// LatencyMS is the mean step latency (call to response headers) in
	// milliseconds over the interval; 0 without calls.
	LatencyMS float64 `json:"latencyMs"`
	// Ready and Desired are instance counts at Time, summed over versions
	// and regions.
	Ready   float64 `json:"ready"`
	Desired float64 `json:"desired"`
}

// Config configures a Sampler.
type Config struct {
	// Gatherer is sampled (the router's and the autoscaler's registries).
	Gatherer prometheus.Gatherer
	// Interval between samples; DefaultInterval when 0.
	Interval time.Duration
	// Window is how much history is kept; DefaultWindow when 0.
	Window time.Duration
}

// counters are the cumulative values of one ufop at one sample.
type counters struct {
	reqs, errs, stepSum, stepCount float64
}

// Sampler samples a Gatherer into a ring of Points per ufop.
type Sampler struct {
	cfg  Config
	keep int

	mu     sync.Mutex
	prev   map[string]counters
	prevAt time.Time
	series map[string][]Point
}

// New returns a Sampler; it samples once Run runs (or Sample is called).
func New(cfg Config) *Sampler {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	return &Sampler{cfg: cfg, keep: int(cfg.Window/cfg.Interval) + 1, prev: map[string]counters{}, series: map[string][]Point{}}
}

// Interval is the sampling interval.
func (s *Sampler) Interval() time.Duration { return s.cfg.Interval }

// Run samples every Interval until ctx ends.
func (s *Sampler) Run(ctx context.Context) error {
	_ = s.Sample(time.Now())
	// A failed gather leaves a gap, never stops sampling.
	tick.Every(ctx, s.cfg.Interval, func() { _ = s.Sample(time.Now()) })
	return nil
}

// Sample gathers once and appends a Point per ufop seen (rates are over
// the time since the previous sample; the first sample has rate 0).
func (s *Sampler) Sample(now time.Time) error {
	if s.cfg.Gatherer == nil {
		return nil
	}
	mfs, err := s.cfg.Gatherer.Gather()
	if err != nil && len(mfs) == 0 {
		return fmt.Errorf("stats: gather: %w", err)
	}
	cur := map[string]counters{}
	ready := map[string]float64{}
	desired := map[string]float64{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case metricRequests:
			for _, m := range mf.GetMetric() {
				u, code := label(m, "ufop"), label(m, "code")
				if u == "" || u == "-" || u == "unknown" {
					continue
				}
				c := cur[u]
				v := m.GetCounter().GetValue()
				c.reqs += v
				if n, _ := strconv.Atoi(code); n >= 500 {
					c.errs += v
				}
				cur[u] = c
			}
		case metricSteps:
			for _, m := range mf.GetMetric() {
				u := label(m, "ufop")
				if u == "" {
					continue
				}
				c := cur[u]
				c.stepSum += m.GetHistogram().GetSampleSum()
				c.stepCount += float64(m.GetHistogram().GetSampleCount())
				cur[u] = c
			}
		case metricReady:
			for _, m := range mf.GetMetric() {
				ready[label(m, "ufop")] += m.GetGauge().GetValue()
			}
		case metricDesired:
			for _, m := range mf.GetMetric() {
				desired[label(m, "ufop")] += m.GetGauge().GetValue()
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	secs := now.Sub(s.prevAt).Seconds()
	names := map[string]bool{}
	for u := range cur {
		names[u] = true
	}
	for u := range ready {
		names[u] = true
	}
	for u := range desired {
		names[u] = true
	}
	for u := range names {
		if u == "" {
			continue
		}
		p := Point{Time: now.UTC(), Ready: ready[u], Desired: desired[u]}
		c, prev := cur[u], s.prev[u]
		if !s.prevAt.IsZero() && secs > 0 {
			d := counters{reqs: c.reqs - prev.reqs, errs: c.errs - prev.errs, stepSum: c.stepSum - prev.stepSum, stepCount: c.stepCount - prev.stepCount}
			if d.reqs >= 0 { // a counter reset (restart) gives no rate
				p.RPS, p.ErrorsPS = d.reqs/secs, d.errs/secs
			}
			if d.stepCount > 0 {
				p.LatencyMS = d.stepSum / d.stepCount * 1000
			}
		}
		ser := append(s.series[u], p)
		if len(ser) > s.keep {
			ser = append(ser[:0:0], ser[len(ser)-s.keep:]...)
		}
		s.series[u] = ser
	}
	s.prev, s.prevAt = cur, now
	return nil
}

// Series returns a copy of the points of ufop, oldest first.
func (s *Sampler) Series(ufop string) []Point {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Point{}, s.series[ufop]...)
}

// Ufops lists the ufops with samples, sorted.
func (s *Sampler) Ufops() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.series))
	for u := range s.series {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
