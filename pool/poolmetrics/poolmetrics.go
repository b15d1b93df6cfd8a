// Package poolmetrics exports a pool.Pool's figures to Prometheus. It is a
// separate package so that pool itself stays free of the Prometheus client.
package poolmetrics

import (
	"time"

	"github.com/doraproject/dora/pool"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector reads the pool at every scrape (pool.Stats: lock-free, no
// effect on the request path).
type Collector struct {
	p                            *pool.Pool
	now                          func() time.Time
	instances, ejected, inFlight *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// New returns a collector of p, labelled by ufop, version and region:
// dora_pool_instances, dora_pool_ejected_instances, dora_pool_in_flight.
func New(p *pool.Pool) *Collector {
	labels := []string{"ufop", "version", "region"}
	return &Collector{
		p:         p,
		now:       time.Now,
		instances: prometheus.NewDesc("dora_pool_instances", "Instances discovery reports for a ufop version in a region.", labels, nil),
		ejected:   prometheus.NewDesc("dora_pool_ejected_instances", "Of those, instances ejected after connect failures.", labels, nil),
		inFlight:  prometheus.NewDesc("dora_pool_in_flight", "Requests in flight to a ufop version's instances in a region.", labels, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.instances
	ch <- c.ejected
	ch <- c.inFlight
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.p.Stats(c.now()) {
		l := []string{st.Key.Ufop, st.Key.Version, st.Key.Region}
		ch <- prometheus.MustNewConstMetric(c.instances, prometheus.GaugeValue, float64(st.Instances), l...)
		ch <- prometheus.MustNewConstMetric(c.ejected, prometheus.GaugeValue, float64(st.Ejected), l...)
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(st.InFlight), l...)
	}
}
