package platform

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doraproject/dora"
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
	// TrustedProxies are the TLS-terminating proxies in front of the
	// router (router.Config.TrustedProxies): from them X-Forwarded-Proto:
	// https makes a request https for download tokens.
	TrustedProxies []netip.Prefix
	// MaxImageJobs bounds the built-in image and media steps running at
	// once (router.Config.MaxImageJobs; router.DefaultMaxImageJobs when 0).
	MaxImageJobs int
	Logger       *slog.Logger
}

// StartRouter opens the backends and serves the data plane until Close.
// It keeps serving when Redis is down (load figures are dropped and
// counted) and when Consul is down (the last metadata snapshot and the
// last known instances stay).
func StartRouter(ctx context.Context, cfg RouterConfig) (*Service, error) {
	log := quietLogger(cfg.Logger).With("role", "router")
	s := newService("router")
	ok := false
	defer s.closeUnless(&ok)
	if err := checkPublicAddr("router", cfg.PublicAddr); err != nil {
		return nil, err
	}
	if cfg.MaxHeld < 0 {
		return nil, fmt.Errorf("router: %w: the bound of held requests %d must not be negative", ErrConfig, cfg.MaxHeld)
	}
	region := orDefault(cfg.Region, dora.DefaultRegion)
	urls := BackendURLs{
		Store:     orDefault(cfg.Store, DefaultStoreURL),
		Objects:   orDefault(cfg.Objects, DefaultObjectsURL),
		Discovery: orDefault(cfg.Discovery, DefaultDiscoveryURL),
		Load:      orDefault(cfg.Load, DefaultLoadURL),
	}
	be, err := s.openBackends(ctx, urls, openOptions{Region: region, Logger: log})
	if err != nil {
		return nil, err
	}
	if isScheme(urls.Discovery, "memory") {
		log.Warn("memory:// discovery only sees instances published in this process: this router will find none (use consul:// in production)")
	}
	ln, err := s.listen(orDefault(cfg.Listen, DefaultRouterListen))
	if err != nil {
		return nil, err
	}
	warnWildcardPublic(log, "router", cfg.PublicAddr, ln)
	if err := s.buildRouter(cfg, be, ln, nil, log); err != nil {
		return nil, err
	}
	warnUnshared(log, "router", backendUse{"store", urls.Store}, backendUse{"objects", urls.Objects},
		backendUse{"discovery", urls.Discovery}, backendUse{"load", urls.Load})
	log.Info("dora router started", "url", s.URL, "region", region, "store", redact(urls.Store),
		"discovery", redact(urls.Discovery), "load", redact(urls.Load))
	ok = true
	return s, nil
}

// buildRouter makes the router role on be and serves it on ln until
// Close: the pool watching be.Discovery and the router recording demand
// in be.Load. ownHosts are further host:ports that reach this router (the
// host's loopback as containers see it).
func (s *Service) buildRouter(cfg RouterConfig, be Backends, ln net.Listener, ownHosts []string, log *slog.Logger) error {
	p, rtr, err := s.newRouter(be, be.Metrics, cfg.PublicAddr, ownHosts, cfg.AllowPrivateMirror, router.Config{
		Region:       orDefault(cfg.Region, dora.DefaultRegion),
		Load:         be.Load,
		DomainSuffix: orDefault(cfg.DomainSuffix, "localhost"),
		Logger:       log,
		// Scale from zero: requests wait (bounded) for the instance the
		// autoscaler starts on their demand.
		HoldTimeout: cfg.HoldTimeout,
		MaxHeld:     cfg.MaxHeld,

		ResultCacheBytes:     cfg.ResultCacheBytes,
		ResultCacheDir:       cfg.ResultCacheDir,
		ResultCacheDiskBytes: cfg.ResultCacheDiskBytes,
		TrustedProxies:       cfg.TrustedProxies,
		MaxImageJobs:         cfg.MaxImageJobs,
	})
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.goRun("pool", func() error { p.Run(runCtx, be.Discovery); return nil })
	s.goRun("background", func() error { return rtr.Run(runCtx) })
	s.goRun("http", func() error { return rtr.Serve(runCtx, ln) })
	return nil
}

// newRouter builds a router on be's store, objects and discovery (the
// router role's, or a worker's embedded one) with its pool, whose metrics
// go to reg with the router's, and a public-only mirror; cfg holds the
// role's own settings (region, load, logger, holding), newRouter fills in
// the rest. A router.New error is returned as is, for the caller to name.
func (s *Service) newRouter(be Backends, reg prometheus.Registerer, publicAddr string, ownHosts []string, allowPrivateMirror bool, cfg router.Config) (*pool.Pool, *router.Router, error) {
	p := pool.New(pool.Options{})
	if err := reg.Register(poolmetrics.New(p)); err != nil {
		return nil, nil, fmt.Errorf("%s: pool metrics: %w", s.Name, err)
	}
	// Never into the platform's own network unless the operator allows it.
	mirror := httpmirror.New(httpmirror.Config{AllowPrivate: allowPrivateMirror})
	var own []string
	if publicAddr != "" {
		own = append(own, publicAddr)
	}
	cfg.Store = be.Store
	cfg.Objects = be.Objects
	cfg.Writer = be.Objects
	cfg.Mirror = mirror
	cfg.Pool = p
	cfg.PublicAddr = publicAddr
	cfg.OwnHosts = append(own, ownHosts...)
	cfg.Metrics = reg
	cfg.Conns = s.conns
	rtr, err := router.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	s.onClose(rtr.Close) // the result cache's directory, once Serve has returned
	s.routerReady = rtr.Ready()
	return p, rtr, nil
}
