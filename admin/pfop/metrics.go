package pfop

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DepthReader is implemented by queues that can count their jobs (boltq,
// redisq): the waiting ones and those a worker holds.
type DepthReader interface {
	Depth(ctx context.Context, pipeline string) (waiting, inFlight int64, err error)
}

// depthTimeout bounds the queue reads of one scrape.
const depthTimeout = 2 * time.Second

var queueJobsDesc = prometheus.NewDesc("dora_pfop_queue_jobs",
	"Persistent processing jobs in a pipeline's queue, by state (waiting, in_flight).", []string{"pipeline", "state"}, nil)

// queueCollector reads the queue's depth at scrape time.
type queueCollector struct {
	q interface {
		Queue
		DepthReader
	}
}

func (c queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- queueJobsDesc }

func (c queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), depthTimeout)
	defer cancel()
	ps, err := c.q.Pipelines(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(queueJobsDesc, err)
		return
	}
	for _, p := range ps {
		w, f, err := c.q.Depth(ctx, p)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(queueJobsDesc, err)
			return
		}
		ch <- prometheus.MustNewConstMetric(queueJobsDesc, prometheus.GaugeValue, float64(w), p, "waiting")
		ch <- prometheus.MustNewConstMetric(queueJobsDesc, prometheus.GaugeValue, float64(f), p, "in_flight")
	}
}

// workerMetrics are a worker's job outcomes and latencies.
type workerMetrics struct {
	jobs    *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

// outcomeLabel names a final job code for the metrics.
func outcomeLabel(code int) string {
	switch code {
	case CodeSuccess:
		return "success"
	case CodeFailed:
		return "failed"
	case CodeNotifyFailed:
		return "notify_failed"
	}
	return "other"
}

func newWorkerMetrics(reg prometheus.Registerer, q Queue) (*workerMetrics, error) {
	m := &workerMetrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dora_pfop_jobs_total",
			Help: "Persistent processing jobs ended, by pipeline and outcome (success, failed, notify_failed)."}, []string{"pipeline", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "dora_pfop_job_duration_seconds",
			Help:    "Time from a job's submission to its end, by pipeline and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.05, 3, 10)}, []string{"pipeline", "outcome"}),
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.jobs, m.latency}
	if dq, ok := q.(interface {
		Queue
		DepthReader
	}); ok {
		cs = append(cs, queueCollector{q: dq})
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *workerMetrics) ended(job Job, code int, now time.Time) {
	o := outcomeLabel(code)
	m.jobs.WithLabelValues(job.Pipeline, o).Inc()
	if !job.Created.IsZero() {
		m.latency.WithLabelValues(job.Pipeline, o).Observe(now.Sub(job.Created).Seconds())
	}
}
