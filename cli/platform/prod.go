package platform

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin"
	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/registry"
	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/autoscaler"
	"github.com/doraproject/dora/autoscaler/lock"
	"github.com/doraproject/dora/internal/connlimit"
	"github.com/doraproject/dora/internal/httpguard"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/consulkv"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/pool/poolmetrics"
	"github.com/doraproject/dora/router"
	"github.com/doraproject/dora/router/origin/httpmirror"
)

// Default listen addresses of the production roles.
const (
	DefaultAdminListen      = "127.0.0.1:8090"
	DefaultRouterListen     = "127.0.0.1:8080"
	DefaultAutoscalerListen = "127.0.0.1:8091"
	DefaultWorkerListen     = "127.0.0.1:8092"
)

// LockKey is the store-relative key of the autoscaler's leader lock; it
// lives under the Consul store's prefix so that two Dora clusters on one
// Consul never share a leader.
const LockKey = "locks/autoscaler"

// ErrConfig is wrapped by every configuration error of the Start functions.
var ErrConfig = errors.New("bad configuration")

// Service is one running production role (admin, router, autoscaler or
// worker):
// its listener's URL and its lifecycle, shaped like Dev.
type Service struct {
	// Name is the role: "admin", "router", "autoscaler" or "worker".
	Name string
	// URL is http://host:port of the role's listener (/healthz and
	// /metrics answer there).
	URL string

	parts
	// conns is the connection budget of the role's listeners.
	conns *connlimit.Limiter
}

func newService(name string) *Service {
	return &Service{Name: name, parts: newParts(name + " "), conns: connlimit.New(connlimit.Config{})}
}

// Close stops every part, waits for them and then releases the backends
// (stores, load store, runtime, listener).
func (s *Service) Close() error {
	s.stop()
	s.wg.Wait()
	return s.closeAll()
}

// serveHTTP serves h on ln until ctx ends, then shuts down gracefully
// (in-flight requests get 5 s).
func (s *Service) serveHTTP(ctx context.Context, ln net.Listener, h http.Handler) {
	srv := httpguard.Server(h, httpguard.Config{})
	s.goRun("http", func() error {
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(s.conns.Listen(ln)) }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("shutdown: %w", err)
		}
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
}

// listen opens the role's listener and sets its URL.
func (s *Service) listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener %s: %w", s.Name, addr, err)
	}
	s.onClose(func() error {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})
	s.URL = "http://" + ln.Addr().String()
	return ln, nil
}

// newRegistry is a role's metrics registry, with the Go runtime's and the
// process's collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func quietLogger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return l
}

// openStore opens the role's metadata store and closes it with the role.
func (s *Service) openStore(ctx context.Context, rawURL string) (store.Store, error) {
	st, err := OpenStore(ctx, orDefault(rawURL, DefaultStoreURL))
	if err != nil {
		return nil, err
	}
	s.onClose(st.Close)
	return st, nil
}

// ---- admin ----

// AdminConfig configures `dorad admin`. Zero fields take the defaults
// named beside them.
type AdminConfig struct {
	Listen  string // DefaultAdminListen
	Store   string // DefaultStoreURL
	Runtime string // DefaultRuntimeURL
	Objects string // DefaultObjectsURL
	// Queue is the pfop queue jobs submitted here are put on (see
	// OpenQueue); default bolt://<DataDir>/pfop.db. A bolt file is locked
	// by this process, so `dorad worker` processes need redis://.
	Queue string
	// AllowPrivateNotify lets pfop notifyURLs name loopback and private
	// addresses; off in production, so that a user's notifyURL is no way
	// into the platform's own network.
	AllowPrivateNotify bool
	// AllowPrivateMirror lets buckets mirror loopback and private
	// addresses; off in production, so that a bucket's mirror is no way
	// into the platform's own network.
	AllowPrivateMirror bool
	// DomainSuffix is the routers' (buckets answer at <bucket>.<suffix>);
	// no bucket may bind a domain under it. Default "localhost".
	DomainSuffix string
	// RouterHost is the routers' public host:port, which the SDKs' region
	// query (uc /v4/query) is answered with as the download (io) host;
	// the admin's own host when empty.
	RouterHost string
	// DataDir holds what stays on the admin's host: builds, the OCI
	// registry's blobs, local-runtime instances and (with a bolt store)
	// the generated root keys. Default "./.dora".
	DataDir string
	// Regions are the deployment regions offered; the first is the
	// default. Default: one region named Region.
	Regions []RegionSpec
	// Region names the single region when Regions is empty
	// (dora.DefaultRegion when empty too).
	Region  string
	Flavors []dora.Flavor
	// PublicURL is how runtimes on other hosts reach this admin (artifact
	// URLs, registry references); default http://<listener address>.
	PublicURL string
	// RootAK and RootSK are the operator's keys (DORA_ROOT_AK/SK). They
	// are required with a shared (consul://) store; with a bolt store they
	// are read from or generated into <DataDir>/root.credentials.
	RootAK, RootSK string
	// RunAs is the operating-system user build scripts and (with the
	// local runtime) instances run as: "" (default) is nobody when dorad
	// runs as root, else the admin's own user with a warning; RunAsSelf is
	// the admin's own user (a loud warning: user code can then read the
	// data directory, the metadata store's file or token, and the admin's
	// environment); anything else is a user name, uid or uid:gid (dorad
	// must run as root). The data directory must be reachable by it. Nomad
	// instances run as the task driver decides (docs/security.md).
	RunAs string
	// GoCache is a Go build cache shared by every build running as the
	// run-as user (created 0700, owned by it). Empty (the default) gives
	// each build a fresh private cache: slower (the standard library is
	// compiled every time), but one account's build cannot plant compiled
	// code that another account's build picks up, which a shared cache
	// allows. Unused when user code runs as the admin's own user (builds
	// then use the admin's GOCACHE).
	GoCache string
	Logger  *slog.Logger
}

// Admin is a running `dorad admin`.
type Admin struct {
	*Service
	RootAK, RootSK string
	// NewRoot reports whether the root keys were generated by this start.
	NewRoot bool
}

// StartAdmin opens the backends, ensures the root account and serves the
// admin API (with /healthz and /metrics) until Close. Persistent
// processing sits in front of it on the same listener, where Qiniu's SDKs
// expect it: POST /pfop and /pfop/, GET /status/get/prefop and the form
// upload POST / (pfop.Handler); jobs go on Queue for `dorad worker`.
func StartAdmin(ctx context.Context, cfg AdminConfig) (*Admin, error) {
	log := quietLogger(cfg.Logger).With("role", "admin")
	a := &Admin{Service: newService("admin")}
	ok := false
	defer func() {
		if !ok {
			a.closeAll()
		}
	}()
	dataDir := orDefault(cfg.DataDir, "./.dora")
	regions, err := regionsOrDefault(cfg.Regions, cfg.Region)
	if err != nil {
		return nil, err
	}
	storeURL := orDefault(cfg.Store, DefaultStoreURL)
	if IsConsulURL(storeURL) && (cfg.RootAK == "" || cfg.RootSK == "") {
		return nil, fmt.Errorf("admin: %w: a shared store (%s) needs the root keys from DORA_ROOT_AK and DORA_ROOT_SK (or --root-ak/--root-sk), the same on every admin", ErrConfig, storeURL)
	}
	runAs, err := resolveRunAs(cfg.RunAs, log)
	if err != nil {
		return nil, fmt.Errorf("admin: %w: %w", ErrConfig, err)
	}
	creds, err := LoadOrCreateRootCredentials(dataDir, cfg.RootAK, cfg.RootSK)
	if err != nil {
		return nil, err
	}
	if err := secureDataDir(dataDir); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if err := build.CheckReachable(dataDir, runAs); err != nil {
		return nil, fmt.Errorf("admin: %w: data dir: build scripts and instances run as %s (run-as): %w", ErrConfig, runAs, err)
	}
	a.RootAK, a.RootSK, a.NewRoot = creds.AccessKey, creds.SecretKey, creds.Generated

	st, err := a.openStore(ctx, storeURL)
	if err != nil {
		return nil, err
	}
	if _, err := admin.EnsureRoot(ctx, st, creds.AccessKey, creds.SecretKey); err != nil {
		return nil, fmt.Errorf("admin: root account in %s: %w", redact(storeURL), err)
	}
	objects, err := OpenObjects(ctx, orDefault(cfg.Objects, DefaultObjectsURL), log.With("part", "objects"))
	if err != nil {
		return nil, err
	}
	a.onClose(objects.Close)
	bcfg := build.Config{Root: filepath.Join(dataDir, "builds"), RunAs: runAs}
	if runAs != nil {
		bcfg.GoCache = cfg.GoCache
	}
	builder, err := build.NewWithConfig(bcfg)
	if err != nil {
		return nil, fmt.Errorf("admin: builder: %w", err)
	}
	ln, err := a.listen(orDefault(cfg.Listen, DefaultAdminListen))
	if err != nil {
		return nil, err
	}
	publicURL := cfg.PublicURL
	if publicURL == "" {
		publicURL = loopbackURL(ln.Addr())
	}

	runtimeURL := orDefault(cfg.Runtime, DefaultRuntimeURL)
	consul, err := consulFor(storeURL)
	if err != nil {
		return nil, err
	}
	rt, err := OpenRuntime(runtimeURL, RuntimeOptions{
		DataDir: dataDir,
		Region:  regions[0].Name,
		Regions: regions,
		Consul:  consul,
		RunAs:   runAs,
		Logger:  log.With("part", "runtime"),
	})
	if err != nil {
		return nil, err
	}
	if c, ok := rt.(io.Closer); ok {
		a.onClose(c.Close)
	}
	if isScheme(runtimeURL, "local") {
		log.Warn("the local runtime runs instances as children of this admin; only a router in this process could find them (use dorad dev, or nomad:// in production)")
	}
	queueURL := orDefault(cfg.Queue, "bolt://"+filepath.Join(dataDir, "pfop.db"))
	queue, queueCloser, err := OpenQueue(queueURL)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	a.onClose(queueCloser.Close)
	if isScheme(queueURL, "bolt") {
		log.Warn("the bolt:// pfop queue is locked by this admin: no dorad worker can claim its jobs (use redis:// shared with the workers in production)", "queue", queueURL)
	}
	pfopHandler, err := pfop.NewHandler(pfop.HandlerConfig{
		Store:    st,
		Queue:    queue,
		Objects:  objects,
		Notify:   pfop.NotifyConfig{AllowPrivate: cfg.AllowPrivateNotify},
		IDPrefix: regions[0].Name,
		Logger:   log.With("part", "pfop"),
		// Blocks and parts of resumable uploads wait here until complete.
		SpoolDir: filepath.Join(dataDir, "uploads"),
	})
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}

	rsHandler, err := rs.New(rs.Config{
		Store: st, Objects: objects, IOHost: cfg.RouterHost, Region: regions[0].Name,
		AllowPrivateFetch: cfg.AllowPrivateMirror, Logger: log.With("part", "rs"),
	})
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}

	reg, err := registry.New(registry.Config{
		Dir:          filepath.Join(dataDir, "registry"),
		Store:        st,
		Authenticate: registry.ByAccount(admin.BasicAuthenticator(st)),
		Logger:       log.With("part", "registry"),
	})
	if err != nil {
		return nil, fmt.Errorf("admin: registry: %w", err)
	}
	srv, err := admin.New(admin.Config{
		Store:     st,
		Runtime:   rt,
		Objects:   objects,
		Builder:   builder,
		Registry:  reg,
		Regions:   adminRegions(regions),
		Flavors:   cfg.Flavors,
		PublicURL: publicURL,
		RootAK:    creds.AccessKey,
		RootSK:    creds.SecretKey,
		Logger:    log,
		Metrics:   newRegistry(),

		DomainSuffix:       cfg.DomainSuffix,
		AllowPrivateMirror: cfg.AllowPrivateMirror,
	})
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}

	// Again, now that the queue, the store and the registry exist: a bolt
	// file or objects/ in the data directory get their modes.
	if err := secureDataDir(dataDir); err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}

	runCtx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	// Qiniu's bucket APIs (rs/rsf/uc) and the pfop/upload paths sit in
	// front of the admin API on its listener, where the SDKs expect them.
	a.serveHTTP(runCtx, ln, rsHandler.Wrap(pfopHandler.Wrap(srv.Handler())))
	a.goRun("background", func() error { return srv.Run(runCtx) })
	warnUnshared(log, "admin", backendUse{"store", storeURL}, backendUse{"objects", orDefault(cfg.Objects, DefaultObjectsURL)},
		backendUse{"queue", queueURL}, backendUse{"runtime", runtimeURL})
	log.Info("dora admin started", "url", a.URL, "public_url", publicURL, "store", redact(storeURL),
		"runtime", redact(runtimeURL), "queue", redact(queueURL), "regions", regionNames(regions),
		"user_code_runs_as", runAs.String())
	ok = true
	return a, nil
}

// loopbackURL is http://<addr>, with an unspecified IP (0.0.0.0, ::)
// replaced by 127.0.0.1 so that the URL can be dialled.
func loopbackURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func isScheme(rawURL, scheme string) bool {
	s, _, ok := strings.Cut(rawURL, "://")
	return ok && strings.EqualFold(s, scheme)
}

// consulFor returns a Consul client on the store's agent when the store is
// consul://, else nil.
func consulFor(storeURL string) (*consulapi.Client, error) {
	if !IsConsulURL(storeURL) {
		return nil, nil
	}
	return ConsulClient(storeURL)
}

// ---- router ----

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
	mirror := httpmirror.New(httpmirror.Config{AllowPrivate: allowPrivateMirror}, nil)
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
	// ?p/1/<fop> serves what the pfop workers saved.
	cfg.Persisted = pfop.PersistedLookup(pfop.Jobs{Store: dp.store})
	rtr, err := router.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	mirror.SetMirrorFor(rtr.MirrorFor)
	return p, rtr, nil
}

// ---- autoscaler ----

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
		Target:   autoscaler.RuntimeTarget{Runtime: rt, Busy: func(err error) bool { return errors.Is(err, runtime.ErrBusy) }},
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

// ---- worker ----

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
		Store:        dp.store,
		Queue:        queue,
		Processor:    rtr,
		Objects:      dp.objects,
		Notify:       pfop.NotifyConfig{AllowPrivate: cfg.AllowPrivateNotify},
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
