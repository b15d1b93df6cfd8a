// Package platform assembles Dora's parts into running servers: the embedded
// single-process platform (`dorad dev`) and the production roles. It takes
// plain config structs; only the cobra commands in cli/dorad know viper.
package platform

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin"
	localruntime "github.com/doraproject/dora/admin/runtime/local"
	"github.com/doraproject/dora/internal/connlimit"
)

// DevConfig configures the embedded platform.
type DevConfig struct {
	DataDir      string // everything durable lives here; "./.dora" when empty
	AdminAddr    string // admin API listen address, DefaultAdminListen when empty (":0" style picks a free port)
	RouterAddr   string // router listen address, DefaultRouterListen when empty
	DomainSuffix string // buckets answer at <bucket>.<suffix>
	Region       string // the single region this platform runs
	Regions      []admin.Region
	Flavors      []dora.Flavor
	// Root keys; when empty they are read from or generated into
	// <DataDir>/root.credentials.
	RootAK, RootSK string
	// Autoscaler tuning; zero means defaults.
	AutoscaleInterval time.Duration
	// StatsInterval is how often the console's charts sample the
	// platform's figures; admin/stats' default (10s) when 0.
	StatsInterval time.Duration
	// HoldTimeout and MaxHeld bound the router's wait for an instance of
	// a ufop that has none (scale from zero); zero means the router's
	// defaults (30 s, 1000).
	HoldTimeout time.Duration
	MaxHeld     int
	// MaxImageJobs bounds the built-in image and media steps running at
	// once, in the router and in the pfop worker each
	// (router.DefaultMaxImageJobs when 0).
	MaxImageJobs int
	Logger       *slog.Logger
	// RunAs is the operating-system user build scripts and instances (user
	// code) run as: "" (default) is nobody when dorad runs as root, else the
	// platform's own user with a warning; "self" is the platform's own user
	// (a loud warning: user code can then read the keys and metadata in the
	// data directory); anything else is a user name, uid or uid:gid
	// (dorad must run as root). See docs/security.md.
	RunAs string
	// GoCache is the Go build cache shared by builds running as the
	// run-as user (created 0700, owned by it); default
	// <DataDir>/cache/go-build. Unused when user code runs as the
	// platform's own user (builds then use the platform's GOCACHE).
	GoCache string
	// Objects is the object origin URL (see OpenObjects); empty is the
	// directory <DataDir>/objects. An s3:// store lets a dev platform
	// serve and process objects kept in S3 in place.
	Objects string
	// AllowPrivateMirror lets buckets mirror loopback and private
	// addresses (a server on the developer's own network). Off by default:
	// an account could otherwise read the platform's own listeners (the
	// admin's /metrics) through its bucket. Link-local and cloud metadata
	// addresses are refused even when it is on (router/netguard).
	AllowPrivateMirror bool
	// ContainerRuntime runs OCI images: "" finds podman (and runc) on
	// PATH and runs images with it when found, refusing image deployments
	// otherwise; "podman" requires it (StartDev fails without it); "none"
	// refuses image deployments.
	ContainerRuntime string
	// HealthyDeadline is how long a container instance has to pass its
	// first health check (default 60 s).
	HealthyDeadline time.Duration
	// PackagesAsProcesses runs program packages as plain processes on a
	// free loopback port (PORT) even when podman is there. By default,
	// with podman, each package instance is a container with its own
	// network namespace, so programs listening on the fixed port 9100 run
	// as many instances as asked.
	PackagesAsProcesses bool
	// ImageGCDelay is how long an image the runtime pulled for image
	// deployments stays in podman's storage once no deployment names it
	// (local.Config.ImageGCDelay): zero is local.DefaultImageGCDelay (3
	// minutes), negative keeps every image.
	ImageGCDelay time.Duration
}

// RunAsSelf is the DevConfig.RunAs value that runs user code as the
// platform's own user.
const RunAsSelf = "self"

// secureDataDir sets the data directory's modes (docs/security.md): the
// directory itself traverse-only, the platform's files 0600, objects/ and
// registry/ 0700 (builds/ and instances/ are 0711, set by their owners).
// Missing entries are skipped.
func secureDataDir(dataDir string) error {
	modes := []struct {
		name string
		mode os.FileMode
	}{
		{"", 0o711},
		{CredentialsFile, 0o600},
		{"meta.db", 0o600},
		{"pfop.db", 0o600},
		{"objects", 0o700},
		{"registry", 0o700},
	}
	for _, m := range modes {
		p := filepath.Join(dataDir, m.name)
		if err := os.Chmod(p, m.mode); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("data dir: %w", err)
		}
	}
	return nil
}

// Dev is a running embedded platform: the four production roles (admin,
// router, pfop worker, autoscaler) in one process, built by the same
// constructors as `dorad admin`, `router`, `worker` and `autoscaler` on
// embedded backends opened once.
type Dev struct {
	AdminURL  string // http://host:port of the admin API
	RouterURL string // http://host:port of the router
	// WorkerURL is http://host:port of the pfop worker's embedded router
	// (the one-shot input URLs of pfop steps); a free loopback port.
	WorkerURL string
	RootAK    string
	RootSK    string
	// NewRoot reports whether the root keys were generated by this start.
	NewRoot bool

	parts
}

// devBackends are the embedded backends of the development platform:
// files under its data directory and this process's memory. objects
// replaces the data directory's objects/ (an s3:// store) when set.
func devBackends(dataDir, objects string) BackendURLs {
	return BackendURLs{
		Store:     "bolt://" + filepath.Join(dataDir, "meta.db"),
		Objects:   orDefault(objects, "file://"+filepath.Join(dataDir, "objects")),
		Runtime:   "local://" + filepath.Join(dataDir, "instances"),
		Discovery: "memory://",
		Load:      "memory://",
		Queue:     "bolt://" + filepath.Join(dataDir, "pfop.db"),
	}
}

// routerReadyLimit bounds StartDev's wait for its routers' metadata.
const routerReadyLimit = time.Minute

// StartDev opens the data directory and the embedded backends, builds the
// admin, router, pfop worker and autoscaler roles on them with the
// production constructors and returns once every listener accepts
// connections and its routers serve. Close stops everything.
func StartDev(ctx context.Context, cfg DevConfig) (*Dev, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Region == "" {
		cfg.Region = dora.DefaultRegion
	}
	if cfg.DomainSuffix == "" {
		cfg.DomainSuffix = "localhost"
	}
	cfg.DataDir = orDefault(cfg.DataDir, "./.dora")
	// Empty is loopback, as for the production roles: net.Listen would
	// take "" as every interface.
	cfg.AdminAddr = orDefault(cfg.AdminAddr, DefaultAdminListen)
	cfg.RouterAddr = orDefault(cfg.RouterAddr, DefaultRouterListen)
	if len(cfg.Regions) == 0 {
		cfg.Regions = []admin.Region{{Name: cfg.Region, Desc: "embedded region"}}
	}
	if len(cfg.Flavors) == 0 {
		cfg.Flavors = dora.DefaultFlavors()
	}
	log := cfg.Logger
	d := &Dev{parts: newParts("")}
	ok := false
	defer d.closeUnless(&ok)
	regions := make([]RegionSpec, len(cfg.Regions))
	for i, r := range cfg.Regions {
		regions[i] = RegionSpec{Name: r.Name, Desc: r.Desc}
	}
	if err := ValidateRegions(regions); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	runAs, creds, err := prepareDataDir(cfg.DataDir, cfg.RunAs, cfg.RootAK, cfg.RootSK, log)
	if err != nil {
		return nil, err
	}
	defer forgetUnshown(cfg.DataDir, creds, &ok)

	// The roles are closed before the backends they share (last
	// registered, first closed), and the worker before the router and the
	// admin: its running jobs may finish.
	backends := newParts("")
	d.onClose(backends.closeAll)
	adm := &Admin{Service: newService("admin")}
	rtr := newService("router")
	wrk := &Worker{Service: newService("worker")}
	scl := newService("autoscaler")
	for _, s := range []*Service{adm.Service, rtr, wrk.Service, scl} {
		d.onClose(s.Close)
	}
	conns := connlimit.New(connlimit.Config{Logger: log.With("part", "listeners")})
	// One connection budget for every listener, below RLIMIT_NOFILE: a
	// flood is shed with 503 and EMFILE is retried, never fatal.
	for _, s := range []*Service{adm.Service, rtr, wrk.Service} {
		s.conns = conns
	}
	adminLn, err := adm.listen(cfg.AdminAddr)
	if err != nil {
		return nil, err
	}
	routerLn, err := rtr.listen(cfg.RouterAddr)
	if err != nil {
		return nil, err
	}
	workerLn, err := wrk.listen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d.AdminURL, d.RouterURL, d.WorkerURL = adm.URL, rtr.URL, wrk.URL
	routerAddr := routerLn.Addr().String()

	pod, pullUser, pullPass, err := devContainers(ctx, cfg, adminLn.Addr().String(), log)
	if err != nil {
		return nil, err
	}
	urls := devBackends(cfg.DataDir, cfg.Objects)
	be, err := backends.openBackends(ctx, urls, openOptions{Region: cfg.Region, Logger: log, Runtime: RuntimeOptions{
		Region:          cfg.Region,
		RunAs:           runAs,
		Podman:          pod,
		HealthyDeadline: cfg.HealthyDeadline,
		ImageGCDelay:    cfg.ImageGCDelay,
		// With podman, packages run in containers too (fixed port 9100).
		PackagesInContainers: pod != nil && !cfg.PackagesAsProcesses,
	}})
	if err != nil {
		return nil, err
	}

	// The admin's registry also holds the autoscaler's gauges and the pfop
	// jobs' figures (on the admin's /metrics); the router and the worker's
	// embedded router keep their own, which the console's charts read too.
	adminReg := be.Metrics
	routerReg, workerReg := prometheus.NewRegistry(), prometheus.NewRegistry()
	routerBe, workerBe := be, be
	routerBe.Metrics, workerBe.Metrics = routerReg, workerReg

	// User code runs as another user: a fresh Go build cache per build
	// would compile the standard library every time; the shared one is
	// the run-as user's, so one account's build could plant objects
	// another's picks up: the embedded platform is a single developer's
	// (docs/security.md).
	goCache := cfg.GoCache
	if goCache == "" {
		goCache = filepath.Join(cfg.DataDir, "cache", "go-build")
	}
	err = adm.build(ctx, AdminConfig{
		Flavors: cfg.Flavors,
		// Domains under the router's suffix are the platform's own.
		DomainSuffix: cfg.DomainSuffix,
		// The Qiniu SDKs' region query names the router as the download
		// host; the console links to it.
		RouterHost: routerAddr,
		RouterURL:  d.RouterURL,
		// One machine: notifications and fetch may reach loopback and
		// private addresses (a receiver on the developer's laptop); a
		// bucket may mirror them only when the operator says so.
		AllowPrivateNotify: true,
		AllowPrivateFetch:  true,
		AllowPrivateMirror: cfg.AllowPrivateMirror,
		StatsInterval:      cfg.StatsInterval,
		GoCache:            goCache,
	}, be, adminLn, adminEnv{
		dataDir: cfg.DataDir, regions: regions, runAs: runAs, creds: creds, storeURL: urls.Store,
		stats:    prometheus.Gatherers{adminReg, routerReg, workerReg},
		pullUser: pullUser, pullPassword: pullPass,
		log: log.With("role", "admin"),
	})
	if err != nil {
		return nil, err
	}
	d.RootAK, d.RootSK, d.NewRoot = adm.RootAK, adm.RootSK, adm.NewRoot

	// Containers reach the routers at the host's loopback as their
	// network shows it.
	ownHosts := []string{localruntime.HostLoopback}
	err = rtr.buildRouter(RouterConfig{
		Region:             cfg.Region,
		DomainSuffix:       cfg.DomainSuffix,
		PublicAddr:         routerAddr,
		HoldTimeout:        cfg.HoldTimeout,
		MaxHeld:            cfg.MaxHeld,
		AllowPrivateMirror: cfg.AllowPrivateMirror,
		MaxImageJobs:       cfg.MaxImageJobs,
	}, routerBe, routerLn, ownHosts, log.With("role", "router"))
	if err != nil {
		return nil, err
	}
	err = wrk.build(WorkerConfig{
		Region:             cfg.Region,
		PublicAddr:         workerLn.Addr().String(),
		AllowPrivateNotify: true,
		AllowPrivateMirror: cfg.AllowPrivateMirror,
		MaxImageJobs:       cfg.MaxImageJobs,
	}, workerBe, workerLn, workerEnv{
		jobMetrics: adminReg,
		// Labelled apart from the router's figures, so that the console
		// adds the two up instead of dropping one as a duplicate.
		routerMetrics: prometheus.WrapRegistererWith(prometheus.Labels{"router": "worker"}, workerReg),
		ownHosts:      ownHosts,
		log:           log.With("role", "worker"),
	})
	if err != nil {
		return nil, err
	}
	scl.buildAutoscaler(AutoscalerConfig{Interval: cfg.AutoscaleInterval}, be, nil, nil, "", log.With("role", "autoscaler"))

	runCtx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	for _, s := range []*Service{adm.Service, rtr, wrk.Service, scl} {
		d.watch(runCtx, s)
	}
	// The routers answer 503 until their metadata is loaded (from the
	// local store: milliseconds); the platform is started once they serve.
	for _, s := range []*Service{rtr, wrk.Service} {
		if err := s.waitRouterReady(ctx, routerReadyLimit); err != nil {
			return nil, err
		}
	}
	log.Info("dora dev platform started", "admin", d.AdminURL, "router", d.RouterURL, "worker", d.WorkerURL,
		"data_dir", cfg.DataDir, "domain_suffix", cfg.DomainSuffix, "region", cfg.Region,
		"user_code_runs_as", runAs.String(), "images", imagesMode(pod), "packages", packagesMode(pod, cfg))
	ok = true
	return d, nil
}

// watch fails the platform when s fails, until ctx ends.
func (d *Dev) watch(ctx context.Context, s *Service) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		select {
		case <-s.Done():
			d.fail(s.Err())
		case <-ctx.Done():
		}
	}()
}

// Close stops every role, the instances included, then the backends, and
// waits for them.
func (d *Dev) Close() error {
	d.stop()
	err := d.closeAll()
	d.wg.Wait()
	return err
}

// devContainers finds the container runtime cfg.ContainerRuntime asks for
// and logs which one images will run with. With podman it also makes the
// registry's pull credentials (random, for this start only) and gives them
// to podman for the registry at adminAddr.
func devContainers(ctx context.Context, cfg DevConfig, adminAddr string, log *slog.Logger) (*localruntime.Podman, string, string, error) {
	switch cfg.ContainerRuntime {
	case "none":
		log.Info("container runtime: none; image deployments are refused")
		return nil, "", "", nil
	case "", "podman":
	default:
		return nil, "", "", fmt.Errorf("container runtime %q: want podman or none", cfg.ContainerRuntime)
	}
	pod, err := localruntime.DetectPodman(ctx)
	if err != nil {
		if cfg.ContainerRuntime == "podman" {
			return nil, "", "", err
		}
		log.Warn("container runtime: none found; image deployments are refused (program packages run)", "why", err.Error())
		return nil, "", "", nil
	}
	pass := make([]byte, 24)
	if _, err := rand.Read(pass); err != nil {
		return nil, "", "", fmt.Errorf("registry pull credentials: %w", err)
	}
	user, pw := "dora-runtime", hex.EncodeToString(pass)
	if err := pod.SetRegistryAuth(filepath.Join(cfg.DataDir, "podman-auth.json"), adminAddr, user, pw); err != nil {
		return nil, "", "", err
	}
	log.Info("container runtime: podman", "podman", pod.Bin, "version", pod.Version, "oci_runtime", pod.OCIRuntime,
		"ulimit_nofile", pod.NoFile)
	return pod, user, pw, nil
}

func imagesMode(pod *localruntime.Podman) string {
	if pod == nil {
		return "refused (no container runtime)"
	}
	return "podman containers"
}

func packagesMode(pod *localruntime.Podman, cfg DevConfig) string {
	if pod == nil || cfg.PackagesAsProcesses {
		return "processes on a free port ($PORT)"
	}
	return "podman containers (port 9100)"
}
