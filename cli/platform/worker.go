package platform

import (
	"context"
	"fmt"
	"log/slog"
	"time"

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
	// Grace is how long Close lets running jobs finish before handing
	// them back to the queue (pfop.DefaultGrace when 0).
	Grace time.Duration
	// AllowPrivateNotify lets notifications reach loopback and private
	// addresses (development only).
	AllowPrivateNotify bool
	// AllowPrivateMirror: as RouterConfig's.
	AllowPrivateMirror bool
	Logger             *slog.Logger
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
	defer func() {
		if !ok {
			w.closeAll()
		}
	}()
	dp, err := w.openDataPlane(ctx, log, cfg.Region, cfg.Store, cfg.Objects, cfg.Discovery,
		"memory:// discovery only sees instances published in this process: only built-in fops will run (use consul:// in production)")
	if err != nil {
		return nil, err
	}
	queueURL := orDefault(cfg.Queue, DefaultQueueURL)
	queue, queueCloser, err := OpenQueue(queueURL)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	w.onClose(queueCloser.Close)
	ln, err := w.listen(orDefault(cfg.Listen, DefaultWorkerListen))
	if err != nil {
		return nil, err
	}
	p, rtr, err := w.newRouter(dp, cfg.PublicAddr, cfg.AllowPrivateMirror, router.Config{Logger: log.With("part", "router")})
	if err != nil {
		return nil, fmt.Errorf("worker: router: %w", err)
	}
	worker, err := pfop.NewWorker(pfop.WorkerConfig{
		Store:     dp.store,
		Queue:     queue,
		Processor: rtr,
		Objects:   dp.objects,
		Notify:    pfop.NotifyConfig{AllowPrivate: cfg.AllowPrivateNotify},
		// Job outcomes, latencies and queue depth on the worker's /metrics.
		Metrics:      dp.reg,
		Limits:       cfg.Limits,
		DefaultLimit: cfg.DefaultLimit,
		Concurrency:  cfg.Concurrency,
		Consumer:     cfg.Consumer,
		ReclaimAfter: cfg.ReclaimAfter,
		Grace:        cfg.Grace,
		Logger:       log,
	})
	if err != nil {
		return nil, fmt.Errorf("worker: %w: %w", ErrConfig, err)
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
	w.goRun("pool", func() error { p.Run(restCtx, dp.disc); return nil })
	w.goRun("background", func() error { return rtr.Run(restCtx) })
	w.goRun("http", func() error { return rtr.Serve(restCtx, ln) })
	w.goRun("jobs", func() error {
		defer close(workDone)
		return worker.Run(workCtx)
	})
	warnUnshared(log, "worker", backendUse{"store", dp.storeURL}, backendUse{"objects", dp.objectsURL},
		backendUse{"queue", queueURL}, backendUse{"discovery", dp.discoveryURL})
	log.Info("dora pfop worker started", "url", w.URL, "consumer", w.Consumer, "region", dp.region,
		"store", redact(dp.storeURL), "queue", redact(queueURL), "discovery", redact(dp.discoveryURL))
	ok = true
	return w, nil
}
