package autoscaler

import (
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler/load"
)

// metrics are the autoscaler's Prometheus series, per deployment.
type metrics struct {
	desired, ready, panic, stable, panicAvg *prometheus.GaugeVec
	events                                  *prometheus.CounterVec
	errors                                  *prometheus.CounterVec
	// decisions counts every evaluation by its direction (up, down,
	// hold) and the reason Decide gave, changes or not.
	decisions *prometheus.CounterVec
}

var deploymentLabels = []string{"deployment", "ufop", "version", "region"}

func newMetrics(reg prometheus.Registerer, log *slog.Logger) *metrics {
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "dora", Subsystem: "autoscaler", Name: name, Help: help}, deploymentLabels)
	}
	m := &metrics{
		desired:  gauge("desired_instances", "Instances the autoscaler asks the runtime to run."),
		ready:    gauge("ready_instances", "Instances passing their health check."),
		panic:    gauge("panic_mode", "1 while the deployment is in panic mode."),
		stable:   gauge("stable_concurrency", "Average in-flight requests over the stable window."),
		panicAvg: gauge("panic_concurrency", "Average in-flight requests over the panic window."),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "dora", Subsystem: "autoscaler", Name: "scale_events_total",
			Help: "Scaling changes made, by reason."}, []string{"reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "dora", Subsystem: "autoscaler", Name: "errors_total",
			Help: "Failed operations, by kind (ready, load, store, scale)."}, []string{"op"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "dora", Subsystem: "autoscaler", Name: "decisions_total",
			Help: "Scaling evaluations, by direction (up, down, hold) and the reason of the decision."}, []string{"direction", "reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.desired, m.ready, m.panic, m.stable, m.panicAvg, m.events, m.errors, m.decisions} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					log.Warn("registering autoscaler metrics", "err", err)
				}
			}
		}
	}
	return m
}

func (m *metrics) observe(d dora.Deployment, ready int, av load.Averages, dec Decision) {
	l := prometheus.Labels{"deployment": d.ID, "ufop": d.Ufop, "version": d.Version, "region": d.Region}
	m.desired.With(l).Set(float64(dec.Desired))
	m.ready.With(l).Set(float64(ready))
	p := 0.0
	if dec.State.InPanic() {
		p = 1
	}
	m.panic.With(l).Set(p)
	m.stable.With(l).Set(av.Stable)
	m.panicAvg.With(l).Set(av.Panic)
	dir := "hold"
	switch {
	case dec.Desired > d.Desired:
		dir = "up"
	case dec.Desired < d.Desired:
		dir = "down"
	}
	m.decisions.WithLabelValues(dir, dec.Reason).Inc()
}

func (m *metrics) forget(id string) {
	for _, g := range []*prometheus.GaugeVec{m.desired, m.ready, m.panic, m.stable, m.panicAvg} {
		g.DeletePartialMatch(prometheus.Labels{"deployment": id})
	}
}

func (m *metrics) reset() {
	for _, g := range []*prometheus.GaugeVec{m.desired, m.ready, m.panic, m.stable, m.panicAvg} {
		g.Reset()
	}
}
