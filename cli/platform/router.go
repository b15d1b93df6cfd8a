package platform

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/pool/poolmetrics"
	"github.com/doraproject/dora/router"
	"github.com/doraproject/dora/router/origin/httpmirror"
)

// RouterConfig configures `dorad router`. Zero fields take the defaults
// named beside them.
type RouterConfig struct {
	Listen    string // DefaultRouterListen
	Store     string // DefaultStoreURL
	Discovery string // DefaultDiscoveryURL
	Load      string // DefaultLoadURL
	Objects   string // DefaultObjectsURL
	// Region is the platform region this router serves (pools are keyed
	// by it); dora.DefaultRegion when empty.
	Region       string
	DomainSuffix string // "localhost"
	// PublicAddr is the host:port instances use to reach the router's
	// one-shot input URLs; default the listener's address.
	PublicAddr string
	// HoldTimeout bounds how long a request waits for an instance of a
	// ufop that has none, so that a deployment scaled to zero (floor 0)
	// is started by the autoscaler on the waiting demand instead of the
	// request failing at once: router.DefaultHoldTimeout (30 s) when 0;
	// negative answers 503 with Retry-After at once.
	HoldTimeout time.Duration
	// MaxHeld bounds the requests waiting for an instance at once, beyond
	// which 503 comes at once (router.DefaultMaxHeld, 1000, when 0).
	MaxHeld int
	// ResultCacheBytes bounds the result cache's memory
	// (router.DefaultResultCacheBytes when 0; negative disables the
	// cache). ResultCacheDir, when set, adds its disk tier there, bounded
	// by ResultCacheDiskBytes (router.DefaultResultCacheDiskBytes when 0).
	ResultCacheBytes     int64
	ResultCacheDir       string
	ResultCacheDiskBytes int64
	// AllowPrivateMirror lets buckets' mirrors be fetched from loopback
	// and private addresses (development only; the admin refuses such
	// mirrors unless it allows them too).
	AllowPrivateMirror bool
	Logger             *slog.Logger
}

// StartRouter opens the backends and serves the data plane until Close.
// It keeps serving when Redis is down (load figures are dropped and
// counted) and when Consul is down (the last metadata snapshot and the
// last known instances stay).
func StartRouter(ctx context.Context, cfg RouterConfig) (*Service, error) {
	log := quietLogger(cfg.Logger).With("role", "router")
	s := newService("router")
	ok := false
	defer func() {
		if !ok {
			s.closeAll()
		}
	}()
	if cfg.MaxHeld < 0 {
		return nil, fmt.Errorf("router: %w: the bound of held requests %d must not be negative", ErrConfig, cfg.MaxHeld)
	}
	dp, err := s.openDataPlane(ctx, log, cfg.Region, cfg.Store, cfg.Objects, cfg.Discovery,
		"memory:// discovery only sees instances published in this process: this router will find none (use consul:// in production)")
	if err != nil {
		return nil, err
	}
	loadURL := orDefault(cfg.Load, DefaultLoadURL)
	loads, err := OpenLoadWith(loadURL, log)
	if err != nil {
		return nil, err
	}
	s.onClose(func() error { return CloseLoad(loads) })

	ln, err := s.listen(orDefault(cfg.Listen, DefaultRouterListen))
	if err != nil {
		return nil, err
	}
	p, rtr, err := s.newRouter(dp, cfg.PublicAddr, cfg.AllowPrivateMirror, router.Config{
		Load:         loads,
		DomainSuffix: orDefault(cfg.DomainSuffix, "localhost"),
		Logger:       log,
		// Scale from zero: requests wait (bounded) for the instance the
		// autoscaler starts on their demand.
		HoldTimeout: cfg.HoldTimeout,
		MaxHeld:     cfg.MaxHeld,

		ResultCacheBytes:     cfg.ResultCacheBytes,
		ResultCacheDir:       cfg.ResultCacheDir,
		ResultCacheDiskBytes: cfg.ResultCacheDiskBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}

	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.goRun("pool", func() error { p.Run(runCtx, dp.disc); return nil })
	s.goRun("background", func() error { return rtr.Run(runCtx) })
	s.goRun("http", func() error { return rtr.Serve(runCtx, ln) })
	warnUnshared(log, "router", backendUse{"store", dp.storeURL}, backendUse{"objects", dp.objectsURL},
		backendUse{"discovery", dp.discoveryURL}, backendUse{"load", loadURL})
	log.Info("dora router started", "url", s.URL, "region", dp.region, "store", redact(dp.storeURL),
		"discovery", redact(dp.discoveryURL), "load", redact(loadURL))
	ok = true
	return s, nil
}

// dataPlane is what a router role and a worker's embedded router both
// open: the metadata store, the objects, a metrics registry and the
// discovery of instances.
type dataPlane struct {
	region, storeURL, objectsURL, discoveryURL string

	store   store.Store
	objects Objects
	reg     *prometheus.Registry
	disc    pool.Discovery
}

// openDataPlane opens the store, objects and discovery named by the
// role's settings (empty ones take the defaults) and logs memoryWarning
// when discovery is memory://, which sees no instance of another process.
func (s *Service) openDataPlane(ctx context.Context, log *slog.Logger, region, storeURL, objectsURL, discoveryURL, memoryWarning string) (dataPlane, error) {
	dp := dataPlane{
		region:       orDefault(region, dora.DefaultRegion),
		storeURL:     orDefault(storeURL, DefaultStoreURL),
		objectsURL:   orDefault(objectsURL, DefaultObjectsURL),
		discoveryURL: orDefault(discoveryURL, DefaultDiscoveryURL),
	}
	var err error
	if dp.store, err = s.openStore(ctx, dp.storeURL); err != nil {
		return dataPlane{}, err
	}
	if dp.objects, err = OpenObjects(ctx, dp.objectsURL, log.With("part", "objects")); err != nil {
		return dataPlane{}, err
	}
	s.onClose(dp.objects.Close)
	dp.reg = newRegistry()
	dp.disc, err = NewDiscovery(dp.discoveryURL, DiscoveryOptions{DefaultRegion: dp.region, Logger: log.With("part", "discovery"), Metrics: dp.reg})
	if err != nil {
		return dataPlane{}, err
	}
	if isScheme(dp.discoveryURL, "memory") {
		log.Warn(memoryWarning)
	}
	return dp, nil
}

// newRouter builds the router of dp with its pool (whose metrics it
// registers) and a public-only mirror; cfg holds the role's own settings
// (load, logger, holding), newRouter fills in the rest. A router.New error
// is returned as is, for the caller to name.
func (s *Service) newRouter(dp dataPlane, publicAddr string, allowPrivateMirror bool, cfg router.Config) (*pool.Pool, *router.Router, error) {
	p := pool.New(pool.Options{})
	if err := dp.reg.Register(poolmetrics.New(p)); err != nil {
		return nil, nil, fmt.Errorf("%s: pool metrics: %w", s.Name, err)
	}
	// Never into the platform's own network unless the operator allows it.
	mirror := httpmirror.New(httpmirror.Config{AllowPrivate: allowPrivateMirror})
	var ownHosts []string
	if publicAddr != "" {
		ownHosts = append(ownHosts, publicAddr)
	}
	cfg.Store = dp.store
	cfg.Objects = dp.objects
	cfg.Writer = dp.objects
	cfg.Mirror = mirror
	cfg.Pool = p
	cfg.Region = dp.region
	cfg.PublicAddr = publicAddr
	cfg.OwnHosts = ownHosts
	cfg.Metrics = dp.reg
	cfg.Conns = s.conns
	rtr, err := router.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	s.onClose(rtr.Close) // the result cache's directory, once Serve has returned
	return p, rtr, nil
}
