package platform

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync/atomic"
	"time"

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
	defer func() {
		if !ok {
			s.closeAll()
		}
	}()
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
	storeURL := orDefault(cfg.Store, DefaultStoreURL)
	st, err := s.openStore(ctx, storeURL)
	if err != nil {
		return nil, err
	}
	loadURL := orDefault(cfg.Load, DefaultLoadURL)
	loads, err := OpenLoadWith(loadURL, log)
	if err != nil {
		return nil, err
	}
	s.onClose(func() error { return CloseLoad(loads) })
	lockClient, err := consulFor(storeURL)
	if err != nil {
		return nil, err
	}
	rt, err := OpenRuntime(cfg.Runtime, RuntimeOptions{Region: regions[0].Name, Regions: regions, Consul: lockClient, Logger: log.With("part", "runtime")})
	if err != nil {
		return nil, err
	}
	if c, ok := rt.(io.Closer); ok {
		s.onClose(c.Close)
	}
	var lockKey string
	if lockClient != nil {
		lockKey = LockKey
		if ck, ok := st.(*consulkv.Store); ok {
			lockKey = ck.Prefix() + LockKey
		}
	}
	ln, err := s.listen(orDefault(cfg.Listen, DefaultAutoscalerListen))
	if err != nil {
		return nil, err
	}
	reg := newRegistry()
	scaler := autoscaler.New(autoscaler.Config{
		Store:    st,
		Load:     loads,
		Target:   runtime.ScaleTarget{Runtime: rt},
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
		leading.Store(true)
		leaderGauge.Set(1)
		defer func() { leading.Store(false); leaderGauge.Set(0) }()
		return scaler.Run(ctx)
	}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "ok", "leader": leading.Load()})
	})

	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.serveHTTP(runCtx, ln, mux)
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
	warnUnshared(log, "autoscaler", backendUse{"store", storeURL}, backendUse{"load", loadURL})
	log.Info("dora autoscaler started", "url", s.URL, "store", redact(storeURL), "runtime", redact(cfg.Runtime),
		"load", redact(loadURL), "lock", lockKey)
	ok = true
	return s, nil
}
