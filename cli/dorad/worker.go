package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/cli/platform"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router"
	"github.com/doraproject/dora/router/origin/httpmirror"
)

// Defaults of `dorad worker`.
const (
	defaultWorkerListen = "127.0.0.1:8092"
	queueHelp           = "pfop queue URL: bolt://<file> (one process) or redis://<host:port>/<db> (shared by every worker)"
)

func newWorkerCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run persistent-processing (pfop) jobs from the queue",
		Long: `worker claims pfop jobs from --queue and runs each of their pipelines with
the same engine as the router (an embedded router: instances read their input
from its one-shot URLs at --public-addr), saves the results to --objects and
records the jobs' outcomes in --store, where prefop reads them. Each named
pipeline (queue) has a concurrency limit counted across every worker: give all
workers the same --limits. On SIGINT/SIGTERM it stops claiming, lets running
jobs finish for --grace and hands the others back. With a redis:// queue, the
jobs of a worker that died are taken over by another after --reclaim-after.

Backends are URLs, chosen by scheme:
  --store      bolt://./.dora/meta.db | consul://127.0.0.1:8500/dora
  --queue      bolt://./.dora/pfop.db | redis://127.0.0.1:6379/0
  --discovery  memory:// (in-process only) | consul://127.0.0.1:8500
  --objects    file://./.dora/objects

Every flag can also be set as DORA_<FLAG> (dashes as underscores) or as a key
of the --config file.`,
		Example: `  dorad worker --store consul://127.0.0.1:8500/dora --queue redis://127.0.0.1:6379/0 \
    --discovery consul://127.0.0.1:8500 --objects file:///srv/dora/objects \
    --listen 0.0.0.0:8092 --public-addr 10.0.0.8:8092 --limits 0.default=8,video=2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(v)
			if err != nil {
				return err
			}
			limits, err := parseLimits(v.GetString("limits"))
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			w, err := startWorker(ctx, workerConfig{
				Listen: v.GetString("listen"), PublicAddr: v.GetString("public-addr"),
				Store: v.GetString("store"), Queue: v.GetString("queue"), Discovery: v.GetString("discovery"),
				Objects: v.GetString("objects"), Region: v.GetString("region"),
				Limits: limits, DefaultLimit: v.GetInt("default-limit"), Concurrency: v.GetInt("concurrency"),
				ReclaimAfter: v.GetDuration("reclaim-after"), Grace: v.GetDuration("grace"),
				AllowPrivateNotify: v.GetBool("allow-private-notify"), Logger: log,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Dora pfop worker %s is running at %s\n", w.consumer, w.url)
			<-ctx.Done()
			log.Info("shutting down", "role", "worker")
			return w.close()
		},
	}
	f := cmd.Flags()
	f.SetNormalizeFunc(listenAlias)
	f.String("listen", defaultWorkerListen, "listen address of the embedded router (one-shot input URLs, /healthz, /metrics)")
	f.String("public-addr", "", "host:port instances reach this worker at for their input (default the listen address)")
	addBackendFlag(f, "store", platform.DefaultStoreURL, storeHelp)
	addBackendFlag(f, "queue", platform.DefaultQueueURL, queueHelp)
	addBackendFlag(f, "discovery", platform.DefaultDiscoveryURL, discoveryHelp)
	addBackendFlag(f, "objects", platform.DefaultObjectsURL, objectsHelp)
	f.String("region", dora.DefaultRegion, "the platform region whose instances run the steps")
	f.String("limits", "", "per-pipeline concurrency limits across all workers: name=n[,name=n...]")
	f.Int("default-limit", pfop.DefaultLimit, "concurrency limit of a pipeline not named in --limits")
	f.Int("concurrency", pfop.DefaultConcurrency, "jobs this worker runs at once")
	f.Duration("reclaim-after", pfop.DefaultReclaimAfter, "take over a job whose worker has been silent this long")
	f.Duration("grace", pfop.DefaultGrace, "on shutdown, how long running jobs may finish before they are handed back")
	f.Bool("allow-private-notify", false, "let notifyURLs reach loopback and private addresses (development only)")
	return cmd
}

// parseLimits reads "name=n,name=n".
func parseLimits(s string) (map[string]int, error) {
	out := map[string]int{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, n, ok := strings.Cut(part, "=")
		var limit int
		if _, err := fmt.Sscanf(n, "%d", &limit); !ok || err != nil || limit <= 0 || fmt.Sprint(limit) != n {
			return nil, fmt.Errorf("--limits: %q: want <pipeline>=<positive number>", part)
		}
		if err := pfop.ValidatePipeline(name); err != nil {
			return nil, fmt.Errorf("--limits: %w", err)
		}
		out[name] = limit
	}
	return out, nil
}

// workerConfig configures startWorker.
type workerConfig struct {
	Listen, PublicAddr               string
	Store, Queue, Discovery, Objects string
	Region                           string
	Limits                           map[string]int
	DefaultLimit, Concurrency        int
	ReclaimAfter, Grace              time.Duration
	AllowPrivateNotify               bool
	Logger                           *slog.Logger
}

// runningWorker is a started `dorad worker`.
type runningWorker struct {
	url, consumer string
	stopWorker    context.CancelFunc // ends the claim loop (grace follows)
	workerDone    chan struct{}
	stopRest      context.CancelFunc // ends the router and discovery
	wg            sync.WaitGroup
	closers       []func() error
}

// startWorker opens the backends (with cli/platform's openers), starts an
// embedded router for the pipeline engine and the worker.
func startWorker(ctx context.Context, cfg workerConfig) (_ *runningWorker, err error) {
	log := cfg.Logger.With("role", "worker")
	rw := &runningWorker{workerDone: make(chan struct{})}
	defer func() {
		if err != nil {
			rw.closeAll()
		}
	}()
	region := cfg.Region
	if region == "" {
		region = dora.DefaultRegion
	}
	st, err := platform.OpenStore(ctx, cfg.Store)
	if err != nil {
		return nil, err
	}
	rw.closers = append(rw.closers, st.Close)
	objects, err := platform.OpenObjects(cfg.Objects)
	if err != nil {
		return nil, err
	}
	disc, err := platform.NewDiscovery(cfg.Discovery, platform.DiscoveryOptions{DefaultRegion: region, Logger: log.With("part", "discovery")})
	if err != nil {
		return nil, err
	}
	q, closeQ, err := platform.OpenQueue(cfg.Queue)
	if err != nil {
		return nil, err
	}
	rw.closers = append(rw.closers, closeQ.Close)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("worker listener %s: %w", cfg.Listen, err)
	}
	rw.closers = append(rw.closers, func() error {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})
	rw.url = "http://" + ln.Addr().String()
	jobs := pfop.Jobs{Store: st}
	p := pool.New(pool.Options{})
	mirror := httpmirror.New(httpmirror.Config{}, nil)
	var own []string
	if cfg.PublicAddr != "" {
		own = append(own, cfg.PublicAddr)
	}
	rtr, err := router.New(router.Config{
		Store: st, Objects: objects, Writer: objects, Mirror: mirror, Pool: p, Region: region,
		PublicAddr: cfg.PublicAddr, OwnHosts: own, Logger: log.With("part", "router"),
		Persisted: pfop.PersistedLookup(jobs),
	})
	if err != nil {
		return nil, fmt.Errorf("worker router: %w", err)
	}
	mirror.SetMirrorFor(rtr.MirrorFor)
	w, err := pfop.NewWorker(pfop.WorkerConfig{
		Store: st, Queue: q, Processor: rtr, Objects: objects,
		Notify:       pfop.NotifyConfig{AllowPrivate: cfg.AllowPrivateNotify},
		Limits:       cfg.Limits,
		DefaultLimit: cfg.DefaultLimit, Concurrency: cfg.Concurrency,
		ReclaimAfter: cfg.ReclaimAfter, Grace: cfg.Grace, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	rw.consumer = w.Consumer()
	restCtx, stopRest := context.WithCancel(context.Background())
	rw.stopRest = stopRest
	rw.wg.Go(func() { p.Run(restCtx, disc) })
	rw.wg.Go(func() { rtr.Run(restCtx) })
	rw.wg.Go(func() {
		if err := rtr.Serve(restCtx, ln); err != nil {
			log.Error("worker router stopped", "err", err)
		}
	})
	workCtx, stopWorker := context.WithCancel(context.Background())
	rw.stopWorker = stopWorker
	go func() {
		defer close(rw.workerDone)
		w.Run(workCtx)
	}()
	log.Info("dora pfop worker started", "url", rw.url, "consumer", rw.consumer)
	return rw, nil
}

// close stops claiming, waits for the running jobs (the worker's grace),
// then stops the router and releases the backends.
func (rw *runningWorker) close() error {
	rw.stopWorker()
	<-rw.workerDone
	rw.stopRest()
	rw.wg.Wait()
	return rw.closeAll()
}

func (rw *runningWorker) closeAll() error {
	var errs []error
	for i := len(rw.closers) - 1; i >= 0; i-- {
		if err := rw.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	rw.closers = nil
	return errors.Join(errs...)
}
