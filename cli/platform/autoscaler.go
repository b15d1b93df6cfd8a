package platform

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/autoscaler"
	"github.com/doraproject/dora/autoscaler/lock"
	"github.com/doraproject/dora/internal/store/consulkv"
)

// AutoscalerConfig configures `dorad autoscaler`. Zero fields take the
// defaults named beside them.
type AutoscalerConfig struct {
	// Listen serves /healthz and /metrics (DefaultAutoscalerListen).
	Listen  string
	Store   string // DefaultStoreURL
	Runtime string // required: nomad://… (the local runtime lives in dorad dev only)
	Load    string // DefaultLoadURL
	// Regions map platform regions to the runtime's (Nomad) regions.
	Regions []RegionSpec
	Region  string
	// Interval is the evaluation tick (autoscaler.DefaultInterval).
	Interval time.Duration
	// LockTTL is the leader session's TTL (lock.DefaultTTL); a dead
	// leader is replaced after about this long.
	LockTTL time.Duration
	Logger  *slog.Logger
}

// StartAutoscaler runs the scaling loop until Close. With a consul:// store
// several autoscalers may run: they elect one leader through a Consul lock
// on <store prefix>locks/autoscaler and the others wait; otherwise the loop
// runs in this process alone. /healthz reports whether it leads.
func StartAutoscaler(ctx context.Context, cfg AutoscalerConfig) (*Service, error) {
	log := quietLogger(cfg.Logger).With("role", "autoscaler")
	s := newService("autoscaler")
	ok := false
	defer s.closeUnless(&ok)
	if cfg.Runtime == "" {
		return nil, fmt.Errorf("autoscaler: %w: --runtime is required (e.g. nomad://127.0.0.1:4646)", ErrConfig)
	}
	if cfg.LockTTL != 0 && (cfg.LockTTL < 10*time.Second || cfg.LockTTL > 24*time.Hour) {
		return nil, fmt.Errorf("autoscaler: %w: lock TTL %v must be between 10s and 24h (Consul's bounds)", ErrConfig, cfg.LockTTL)
	}
	if isScheme(cfg.Runtime, "local") {
		return nil, fmt.Errorf("autoscaler: %w: the local runtime runs inside one process (dorad dev); a separate autoscaler needs nomad://", ErrConfig)
	}
	regions, err := regionsOrDefault(cfg.Regions, cfg.Region)
	if err != nil {
		return nil, err
	}
	urls := BackendURLs{
		Store:   orDefault(cfg.Store, DefaultStoreURL),
		Load:    orDefault(cfg.Load, DefaultLoadURL),
		Runtime: cfg.Runtime,
	}
	lockClient, err := consulFor(urls.Store)
	if err != nil {
		return nil, err
	}
	be, err := s.openBackends(ctx, urls, openOptions{Logger: log, Runtime: RuntimeOptions{
		Region: regions[0].Name, Regions: regions, Consul: lockClient,
	}})
	if err != nil {
		return nil, err
	}
	var lockKey string
	if lockClient != nil {
		lockKey = LockKey
		if ck, ok := be.Store.(*consulkv.Store); ok {
			lockKey = ck.Prefix() + LockKey
		}
	}
	ln, err := s.listen(orDefault(cfg.Listen, DefaultAutoscalerListen))
	if err != nil {
		return nil, err
	}
	s.buildAutoscaler(cfg, be, ln, lockClient, lockKey, log)
	warnUnshared(log, "autoscaler", backendUse{"store", urls.Store}, backendUse{"load", urls.Load})
	log.Info("dora autoscaler started", "url", s.URL, "store", redact(urls.Store), "runtime", redact(cfg.Runtime),
		"load", redact(urls.Load), "lock", lockKey)
	ok = true
	return s, nil
}

// buildAutoscaler makes the autoscaler role on be (store, load, runtime)
// and runs it until Close. With a lock client it scales only while it
// holds the leader lock lockKey; otherwise the loop runs in this process
// alone. Its figures go to be.Metrics; ln, when not nil, serves them on
// /metrics beside /healthz, which reports whether it leads.
func (s *Service) buildAutoscaler(cfg AutoscalerConfig, be Backends, ln net.Listener, lockClient *consulapi.Client, lockKey string, log *slog.Logger) {
	reg := be.Metrics
	scaler := autoscaler.New(autoscaler.Config{
		Store:    be.Store,
		Load:     be.Load,
		Target:   runtime.ScaleTarget{Runtime: be.Runtime},
		Interval: cfg.Interval,
		Logger:   log,
		Metrics:  reg,
	})
	var leading atomic.Bool
	leaderGauge := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "dora_autoscaler_leader", Help: "1 while this autoscaler holds the leader lock and scales.",
	})
	reg.MustRegister(leaderGauge)
	lead := func(ctx context.Context) error {
		leaderGauge.Set(1) // first: /healthz (leading) never runs ahead of the gauge
		leading.Store(true)
		defer func() { leading.Store(false); leaderGauge.Set(0) }()
		return scaler.Run(ctx)
	}

	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if ln != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"status": "ok", "leader": leading.Load()})
		})
		s.serveHTTP(runCtx, ln, mux)
	}
	if lockClient != nil {
		host, _ := os.Hostname()
		s.goRun("lock", func() error {
			return lock.RunWith(runCtx, lockClient, lockKey, lock.Options{
				TTL:    cfg.LockTTL,
				Value:  []byte(fmt.Sprintf("%s pid %d %s", host, os.Getpid(), s.URL)),
				Logger: log,
			}, func(ctx context.Context) {
				if err := lead(ctx); err != nil && ctx.Err() == nil {
					log.Error("autoscaler loop", "err", err)
				}
			})
		})
	} else {
		s.goRun("loop", func() error { return lead(runCtx) })
	}
}
