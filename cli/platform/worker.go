package platform

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/router"
)

// WorkerConfig configures `dorad worker`. Zero fields take the defaults
// named beside them.
type WorkerConfig struct {
	// Listen serves the embedded router: the one-shot URLs instances read
	// their input from, /healthz and /metrics (DefaultWorkerListen).
	Listen string
	// PublicAddr is the host:port instances reach Listen at; default the
	// listener's address.
	PublicAddr string
	Store      string // DefaultStoreURL
	Queue      string // DefaultQueueURL; redis:// to share it with the admins and other workers
	Discovery  string // DefaultDiscoveryURL
	Objects    string // DefaultObjectsURL
	// Region is the platform region whose instances run the steps
	// (dora.DefaultRegion when empty).
	Region string
	// Limits are the per-pipeline concurrency limits counted across every
	// worker (give all workers the same); DefaultLimit applies to the
	// others (pfop.DefaultLimit when 0).
	Limits       map[string]int
	DefaultLimit int
	// Concurrency is how many jobs this worker runs at once
	// (pfop.DefaultConcurrency when 0).
	Concurrency int
	// Consumer names the worker in the queue (host-pid-random when empty).
	Consumer string
	// ReclaimAfter is how long a job's worker may stay silent before
	// another takes the job over (pfop.DefaultReclaimAfter when 0).
	ReclaimAfter time.Duration
	// JobRetention is how long finished jobs' records are kept
	// (pfop.DefaultJobRetention when 0; negative: forever).
	JobRetention time.Duration
	// Grace is how long Close lets running jobs finish before handing
	// them back to the queue (pfop.DefaultGrace when 0).
	Grace time.Duration
	// AllowPrivateNotify lets notifications reach loopback and private
	// addresses (development only).
	AllowPrivateNotify bool
	// AllowPrivateMirror: as RouterConfig's.
	AllowPrivateMirror bool
	// MaxImageJobs: as RouterConfig's, for the steps this worker runs.
	MaxImageJobs int
	Logger       *slog.Logger
}

// Worker is a running `dorad worker`.
type Worker struct {
	*Service
	// Consumer is the worker's name in the queue.
	Consumer string
}

// StartWorker opens the backends and runs pfop jobs from the queue until
// Close. The pipelines run through an embedded router (the same engine as
// the data plane, instances found by Discovery) serving its one-shot input
// URLs on Listen. Close first stops claiming and lets running jobs finish
// for Grace (handing the others back to the queue), then stops the router:
// instances may read their input until the last job is over.
func StartWorker(ctx context.Context, cfg WorkerConfig) (*Worker, error) {
	log := quietLogger(cfg.Logger).With("role", "worker")
	w := &Worker{Service: newService("worker")}
	ok := false
	defer w.closeUnless(&ok)
	if err := checkPublicAddr("worker", cfg.PublicAddr); err != nil {
		return nil, err
	}
	region := orDefault(cfg.Region, dora.DefaultRegion)
	urls := BackendURLs{
		Store:     orDefault(cfg.Store, DefaultStoreURL),
		Objects:   orDefault(cfg.Objects, DefaultObjectsURL),
		Discovery: orDefault(cfg.Discovery, DefaultDiscoveryURL),
		Queue:     orDefault(cfg.Queue, DefaultQueueURL),
	}
	be, err := w.openBackends(ctx, urls, openOptions{Region: region, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if isScheme(urls.Discovery, "memory") {
		log.Warn("memory:// discovery only sees instances published in this process: only built-in fops will run (use consul:// in production)")
	}
	ln, err := w.listen(orDefault(cfg.Listen, DefaultWorkerListen))
	if err != nil {
		return nil, err
	}
	warnWildcardPublic(log, "worker", cfg.PublicAddr, ln)
	if err := w.build(cfg, be, ln, workerEnv{log: log}); err != nil {
		return nil, err
	}
	warnUnshared(log, "worker", backendUse{"store", urls.Store}, backendUse{"objects", urls.Objects},
		backendUse{"queue", urls.Queue}, backendUse{"discovery", urls.Discovery})
	log.Info("dora pfop worker started", "url", w.URL, "consumer", w.Consumer, "region", region,
		"store", redact(urls.Store), "queue", redact(urls.Queue), "discovery", redact(urls.Discovery))
	ok = true
	return w, nil
}

// workerEnv is what building the worker role takes beyond its config and
// backends.
type workerEnv struct {
	// jobMetrics receives the job outcomes, latencies and queue depth;
	// be.Metrics (the worker's /metrics) when nil.
	jobMetrics prometheus.Registerer
	// routerMetrics receives the embedded router's and its pool's
	// figures; be.Metrics when nil.
	routerMetrics prometheus.Registerer
	// ownHosts are further host:ports that reach the embedded router.
	ownHosts []string
	log      *slog.Logger
}

// build makes the worker role on be and runs it until Close: the claim
// loop on be.Queue and the embedded router (its pool watching
// be.Discovery, demand recorded in be.Load when there is one) serving the
// one-shot input URLs on ln.
func (w *Worker) build(cfg WorkerConfig, be Backends, ln net.Listener, env workerEnv) error {
	log := env.log
	jobMetrics, routerMetrics := env.jobMetrics, env.routerMetrics
	if jobMetrics == nil {
		jobMetrics = be.Metrics
	}
	if routerMetrics == nil {
		routerMetrics = be.Metrics
	}
	p, rtr, err := w.newRouter(be, routerMetrics, cfg.PublicAddr, env.ownHosts, cfg.AllowPrivateMirror, router.Config{
		Region:       orDefault(cfg.Region, dora.DefaultRegion),
		Load:         be.Load,
		Logger:       log.With("part", "router"),
		MaxImageJobs: cfg.MaxImageJobs,
	})
	if err != nil {
		return fmt.Errorf("worker: router: %w", err)
	}
	worker, err := pfop.NewWorker(pfop.WorkerConfig{
		Store:     be.Store,
		Queue:     be.Queue,
		Processor: rtr,
		Objects:   be.Objects,
		Notify:    pfop.NotifyConfig{AllowPrivate: cfg.AllowPrivateNotify},
		// Job outcomes, latencies and queue depth.
		Metrics:      jobMetrics,
		Limits:       cfg.Limits,
		DefaultLimit: cfg.DefaultLimit,
		Concurrency:  cfg.Concurrency,
		Consumer:     cfg.Consumer,
		ReclaimAfter: cfg.ReclaimAfter,
		JobRetention: cfg.JobRetention,
		Grace:        cfg.Grace,
		Logger:       log,
	})
	if err != nil {
		return fmt.Errorf("worker: %w: %w", ErrConfig, err)
	}
	w.Consumer = worker.Consumer()

	// Two lifetimes: the claim loop stops first (its grace needs the
	// router), the router and discovery once it is over.
	restCtx, stopRest := context.WithCancel(context.Background())
	workCtx, stopWork := context.WithCancel(context.Background())
	workDone := make(chan struct{})
	w.cancel = func() {
		stopWork()
		<-workDone
		stopRest()
	}
	w.goRun("pool", func() error { p.Run(restCtx, be.Discovery); return nil })
	w.goRun("background", func() error { return rtr.Run(restCtx) })
	w.goRun("http", func() error { return rtr.Serve(restCtx, ln) })
	w.goRun("jobs", func() error {
		defer close(workDone)
		return worker.Run(workCtx)
	})
	return nil
}
