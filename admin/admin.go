// Package admin is the control plane's management API (docs/api.md): it
// keeps the metadata (accounts, buckets, ufops, releases, builds,
// deployments) in a store.Store, verifies QBox/Qiniu signatures, stores
// objects through an origin, builds program packages and drives a
// runtime.Runtime. Server.Run is its background half: it re-applies
// deployments at start, follows their statuses and finishes blue/green
// switches.
package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/admin/stats"
	"github.com/doraproject/dora/internal/api"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
)

// ObjectStore is what the API needs of the object origin: read, write and
// list (router/origin/local implements all three).
type ObjectStore interface {
	origin.Reader
	origin.Writer
	origin.Lister
}

// Image kinds as GET /v1/images reports them.
const (
	ImageKindOCI     = api.ImageKindOCI     // pushed to the registry
	ImageKindPackage = api.ImageKindPackage // a successful build of a program package
)

// Image is one image an account may name in a release (a wire type of
// internal/api).
type Image = api.Image

// ImageLister lists the OCI images an account pushed to the registry. The
// registry (admin/registry) implements it; ImageListerFunc adapts a function.
type ImageLister interface {
	ListImages(ctx context.Context, owner string) ([]Image, error)
}

// ImageListerFunc adapts a function to ImageLister.
type ImageListerFunc func(ctx context.Context, owner string) ([]Image, error)

// ListImages calls f.
func (f ImageListerFunc) ListImages(ctx context.Context, owner string) ([]Image, error) {
	return f(ctx, owner)
}

// Region is a place deployments can run in (a wire type of internal/api).
type Region = api.Region

// Config configures a Server. Store and Runtime are required; a nil Objects
// or Builder makes the object or build endpoints answer 503.
type Config struct {
	Store   store.Store
	Runtime runtime.Runtime
	Objects ObjectStore
	Builder *build.Builder
	// Registry serves the OCI distribution API under /v2/; may be nil.
	Registry http.Handler
	// Pfop takes POST /v1/pfop (the web console's pfop form); nil: the
	// route answers 501.
	Pfop PfopSubmitter
	// Images lists pushed OCI images; when nil, the store's images/<owner>/
	// records are used.
	Images ImageLister
	// Regions default to [{Name: dora.DefaultRegion}]; the first is the
	// default region of calls that omit one.
	Regions []Region
	// Flavors default to dora.DefaultFlavors().
	Flavors []dora.Flavor
	// MaxSkew bounds X-Qiniu-Date; default 15 minutes.
	MaxSkew time.Duration
	// PublicURL is how runtimes on other hosts reach this server, for
	// artifact URLs and registry references; default http://127.0.0.1:8090.
	// An https URL (a TLS-terminating proxy in front) also marks the
	// console's session cookie Secure.
	PublicURL string
	// RootAK and RootSK sign artifact download URLs.
	RootAK, RootSK string
	Logger         *slog.Logger
	// Metrics is the registry /metrics serves and the API's metrics are
	// registered in; a new one when nil.
	Metrics *prometheus.Registry
	// PollInterval is how often Run follows deployment statuses; default 1s.
	PollInterval time.Duration
	// MaxUploadBytes caps an object upload; default 16 GiB.
	MaxUploadBytes int64
	// MaxBuildBytes caps a build upload (tar.gz); default 1 GiB.
	MaxBuildBytes int64
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// DomainSuffix is the router's: buckets answer at <bucket>.<suffix>, so
	// no bucket may bind a domain equal to or under it; DefaultDomainSuffix
	// when empty. Set it to the router's Config.DomainSuffix.
	DomainSuffix string
	// AllowPrivateMirror lets a bucket mirror localhost and loopback,
	// private or link-local addresses (development setups whose origin runs
	// on the same machine); off, such mirrors are refused with 400.
	AllowPrivateMirror bool
	// ConsoleKey signs the web console's session cookies. When empty the
	// platform's own key is used: random, created once in the metadata
	// store (store.ConsoleSessionKey), so every admin sharing the store
	// accepts the sessions of the others, across restarts too.
	ConsoleKey []byte
	// SessionTTL is how long a console sign-in lasts; DefaultSessionTTL
	// when 0.
	SessionTTL time.Duration
	// RouterURL is the router's public base URL, which the console uses
	// to build processing URLs (http://<bucket>.<DomainSuffix>:<port>/).
	RouterURL string
	// StatsGatherer, when set, is sampled for the console's charts
	// (requests/s, errors, latency, instances per ufop over the last
	// hour): the router's and the autoscaler's registries.
	StatsGatherer prometheus.Gatherer
	// StatsInterval is the charts' sampling interval; stats.DefaultInterval
	// when 0.
	StatsInterval time.Duration
	// Leader elects the one admin, among those sharing the store, that
	// does the background work which must run once: re-applying
	// deployments, following their statuses, blue/green steps, failing
	// builds whose admin died (internal/leader: a Consul lock). Nil means
	// this admin is the only one (an embedded store only one process can
	// open): it always leads.
	Leader Elector
	// ShareBuilds keeps each successful build's result in the objects
	// store too (dora.SystemBucket), so that the other admins sharing the
	// store serve its artifact to the runtime; set it with a shared store
	// and shared objects. Off, only this admin's builder has it.
	ShareBuilds bool
	// BuildHeartbeat is how often a running build's admin records that it
	// is alive; the leader fails a RUNNING build whose admin has not done
	// so for BuildStaleAfter × BuildHeartbeat. DefaultBuildHeartbeat when 0.
	BuildHeartbeat time.Duration
	// ExpiryInterval is how often the leader deletes the objects whose
	// lifecycle (deleteAfterDays, admin/rs) fell due: a sweep at the start
	// of each term, then one every ExpiryInterval (sooner while a sweep
	// stops at its bound with records left). DefaultExpiryInterval when 0;
	// negative: never. Needs Objects.
	ExpiryInterval time.Duration
	// UploadTempAge is how long a temporary under rs.UploadTempPrefix (an
	// upload's, left by an admin stopped mid-upload) must have been there
	// before those sweeps remove it (rs.DecideTemp); rs.DefaultTempAge
	// when 0.
	UploadTempAge time.Duration
}

// Elector runs fn while this process leads the admins sharing the store and
// cancels fn's context when it stops leading; Run returns when ctx ends.
// internal/leader implements it (Always, Consul).
type Elector interface {
	Run(ctx context.Context, fn func(ctx context.Context)) error
}

// Defaults applied by New.
const (
	DefaultMaxSkew        = 15 * time.Minute
	DefaultPublicURL      = "http://127.0.0.1:8090"
	DefaultPollInterval   = time.Second
	DefaultMaxUploadBytes = 16 << 30
	DefaultMaxBuildBytes  = 1 << 30
	DefaultDomainSuffix   = "localhost"
	DefaultBuildHeartbeat = 5 * time.Second
	DefaultExpiryInterval = time.Hour
	// BuildStaleAfter heartbeats missed fail a RUNNING build of another
	// admin (its admin died or lost the store).
	BuildStaleAfter = 6
	// MaxJSONBytes caps a JSON or form request body.
	MaxJSONBytes = 1 << 20
)

// Server is the admin API. Create it with New, serve Handler, and run Run
// in the background.
type Server struct {
	cfg      Config
	st       store.Store
	rt       runtime.Runtime
	log      *slog.Logger
	now      func() time.Time
	verifier auth.Verifier
	regions  []Region
	flavors  []dora.Flavor
	public   *url.URL
	metrics  *prometheus.Registry
	reqs     *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// buildSeconds: build durations by outcome (its _count counts builds).
	buildSeconds *prometheus.HistogramVec
	handler      http.Handler
	mux          *http.ServeMux

	bgCtx    context.Context // builds run under it; canceled by Close
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup

	buildLocks keyedMutex // serializes build numbering per ufop
	// runningMu guards running: the builds this process runs, by ufop and
	// number, with what cancels each (DELETE of the ufop does).
	runningMu sync.Mutex
	running   map[string]map[int]context.CancelCauseFunc

	keyMu      sync.Mutex // guards consoleKey, read from the store on first use
	consoleKey []byte
	sessionTTL time.Duration
	stats      *stats.Sampler
	// secretEqual compares the SK of a sign-in (the package's
	// secretEqual; tests count its calls).
	secretEqual func(given, want string) bool
	// logins throttles failed console sign-ins (loginlimit.go).
	logins *loginLimiter

	retryMu   sync.Mutex
	retry     map[string]bool // deployments whose Apply met runtime.ErrBusy
	closeOnce sync.Once

	// id marks the builds this process runs (dora.Build.Owner); random
	// per process, so a restarted admin's old builds are another's.
	id      string
	leading atomic.Bool
	// leaderGauge is 1 while this admin leads; passes counts Reconcile
	// passes run as leader; terms counts leadership terms.
	leaderGauge prometheus.Gauge
	passes      prometheus.Counter
	terms       prometheus.Counter

	// expirer deletes the objects whose deleteAfterDays fell due (nil
	// without Objects); expired counts them.
	expirer *rs.Expirer
	expired prometheus.Counter
	// tempsRemoved counts the upload temporaries the expirer removed.
	tempsRemoved prometheus.Counter
}

// New checks the configuration, fills defaults and registers the routes.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("admin: Config.Store is required")
	}
	if cfg.Runtime == nil {
		return nil, errors.New("admin: Config.Runtime is required")
	}
	if cfg.MaxSkew <= 0 {
		cfg.MaxSkew = DefaultMaxSkew
	}
	if cfg.PublicURL == "" {
		cfg.PublicURL = DefaultPublicURL
	}
	pub, err := url.Parse(strings.TrimRight(cfg.PublicURL, "/"))
	if err != nil || (pub.Scheme != "http" && pub.Scheme != "https") || pub.Host == "" {
		return nil, fmt.Errorf("admin: PublicURL %q must be an http(s) URL with a host", cfg.PublicURL)
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.BuildHeartbeat <= 0 {
		cfg.BuildHeartbeat = DefaultBuildHeartbeat
	}
	if cfg.ExpiryInterval == 0 {
		cfg.ExpiryInterval = DefaultExpiryInterval
	}
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if cfg.MaxBuildBytes <= 0 {
		cfg.MaxBuildBytes = DefaultMaxBuildBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DomainSuffix == "" {
		cfg.DomainSuffix = DefaultDomainSuffix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	regions := cfg.Regions
	if len(regions) == 0 {
		regions = []Region{{Name: dora.DefaultRegion, Desc: "default region"}}
	}
	seen := map[string]bool{}
	for _, r := range regions {
		if r.Name == "" || seen[r.Name] {
			return nil, fmt.Errorf("admin: region names must be non-empty and unique (%q)", r.Name)
		}
		seen[r.Name] = true
	}
	flavors := cfg.Flavors
	if len(flavors) == 0 {
		flavors = dora.DefaultFlavors()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	s := &Server{
		cfg:     cfg,
		st:      cfg.Store,
		rt:      cfg.Runtime,
		log:     cfg.Logger,
		now:     cfg.Now,
		regions: regions,
		flavors: flavors,
		public:  pub,
		metrics: cfg.Metrics,
		retry:   map[string]bool{},
		id:      newOwnerID(),
	}
	s.consoleKey, s.sessionTTL, s.secretEqual = cfg.ConsoleKey, cfg.SessionTTL, secretEqual
	s.logins = newLoginLimiter(loginTable)
	if s.sessionTTL <= 0 {
		s.sessionTTL = DefaultSessionTTL
	}
	if cfg.StatsGatherer != nil {
		s.stats = stats.New(stats.Config{Gatherer: cfg.StatsGatherer, Interval: cfg.StatsInterval})
	}
	s.verifier = auth.Verifier{Lookup: s.lookupSK, MaxSkew: cfg.MaxSkew, Now: cfg.Now}
	s.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dora_admin_requests_total",
		Help: "Admin API requests by route and status code.",
	}, []string{"method", "route", "code"})
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "dora_admin_request_duration_seconds",
		Help:    "Admin API request latency by route.",
		Buckets: prometheus.DefBuckets,
	}, []string{"route"})
	s.buildSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "dora_admin_build_duration_seconds",
		Help:    "Program package builds by outcome (success, failed, interrupted, canceled: its ufop was deleted): their duration; _count counts them.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10), // 1s .. ~8.5min
	}, []string{"outcome"})
	s.leaderGauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "dora_admin_leader",
		Help: "1 while this admin leads the background work (reconcile, build recovery) among the admins sharing the store.",
	})
	s.passes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "dora_admin_reconcile_passes_total",
		Help: "Reconcile passes (deployment statuses, blue/green steps) this admin ran as leader.",
	})
	s.terms = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "dora_admin_leader_terms_total",
		Help: "Times this admin became the leader.",
	})
	s.expired = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "dora_admin_objects_expired_total",
		Help: "Objects this admin deleted as leader because their lifecycle (deleteAfterDays) fell due.",
	})
	s.tempsRemoved = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "dora_admin_upload_temporaries_removed_total",
		Help: "Upload temporaries (.dora-upload/) this admin removed as leader: left by an admin stopped between storing and moving them.",
	})
	if cfg.Objects != nil {
		s.expirer = &rs.Expirer{Store: cfg.Store, Objects: cfg.Objects, Logger: cfg.Logger,
			TempAge: cfg.UploadTempAge, OnTempRemoved: func(bucket, key string) { s.tempsRemoved.Inc() }}
	}
	for _, c := range []prometheus.Collector{s.reqs, s.latency, s.buildSeconds, s.leaderGauge, s.passes, s.terms, s.expired, s.tempsRemoved} {
		if err := s.metrics.Register(c); err != nil {
			return nil, fmt.Errorf("admin: register metrics: %w", err)
		}
	}
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	s.mux = http.NewServeMux()
	s.routes()
	s.handler = s.outer(s.mux)
	return s, nil
}

// Handler returns the HTTP handler serving /v1/, /v2/, /healthz and /metrics.
func (s *Server) Handler() http.Handler { return s.handler }

// Close cancels background builds and waits for them to record their end.
// Run calls it when it returns; it is safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.bgCancel()
		s.bgWG.Wait()
	})
	return nil
}

func (s *Server) flavor(name string) (dora.Flavor, bool) {
	for _, f := range s.flavors {
		if f.Name == name {
			return f, true
		}
	}
	return dora.Flavor{}, false
}

func (s *Server) hasRegion(name string) bool {
	for _, r := range s.regions {
		if r.Name == name {
			return true
		}
	}
	return false
}

func (s *Server) defaultRegion() string { return s.regions[0].Name }
