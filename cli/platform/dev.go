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
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin"
	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/pfop/boltq"
	"github.com/doraproject/dora/admin/registry"
	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/admin/runtime"
	localruntime "github.com/doraproject/dora/admin/runtime/local"
	"github.com/doraproject/dora/autoscaler"
	loadmemory "github.com/doraproject/dora/autoscaler/load/memory"
	"github.com/doraproject/dora/internal/connlimit"
	"github.com/doraproject/dora/internal/httpguard"
	"github.com/doraproject/dora/internal/store/bolt"
	"github.com/doraproject/dora/pool"
	poolmemory "github.com/doraproject/dora/pool/memory"
	"github.com/doraproject/dora/router"
	"github.com/doraproject/dora/router/origin/httpmirror"
	localorigin "github.com/doraproject/dora/router/origin/local"
)

// DevConfig configures the embedded platform.
type DevConfig struct {
	DataDir      string // everything durable lives here
	AdminAddr    string // admin API listen address, e.g. 127.0.0.1:8090 (":0" style picks a free port)
	RouterAddr   string // router listen address, e.g. 127.0.0.1:8080
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
	Logger      *slog.Logger
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

// Dev is a running embedded platform.
type Dev struct {
	AdminURL  string // http://host:port of the admin API
	RouterURL string // http://host:port of the router
	RootAK    string
	RootSK    string
	// NewRoot reports whether the root keys were generated by this start.
	NewRoot bool

	parts
}

// StartDev opens the data directory, starts every part and returns once both
// listeners accept connections. Close stops everything.
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
	if len(cfg.Regions) == 0 {
		cfg.Regions = []admin.Region{{Name: cfg.Region, Desc: "embedded region"}}
	}
	if len(cfg.Flavors) == 0 {
		cfg.Flavors = dora.DefaultFlavors()
	}
	log := cfg.Logger
	d := &Dev{parts: newParts("")}
	ok := false
	defer func() {
		if !ok {
			d.closeAll()
		}
	}()

	runAs, err := resolveRunAs(cfg.RunAs, log)
	if err != nil {
		return nil, err
	}
	creds, err := LoadOrCreateRootCredentials(cfg.DataDir, cfg.RootAK, cfg.RootSK)
	if err != nil {
		return nil, err
	}
	if err := secureDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	if err := build.CheckReachable(cfg.DataDir, runAs); err != nil {
		return nil, fmt.Errorf("data dir: build scripts and instances run as %s (run-as): %w", runAs, err)
	}
	d.RootAK, d.RootSK, d.NewRoot = creds.AccessKey, creds.SecretKey, creds.Generated

	st, err := bolt.Open(filepath.Join(cfg.DataDir, "meta.db"))
	if err != nil {
		return nil, fmt.Errorf("open metadata store: %w", err)
	}
	d.onClose(st.Close)
	if _, err := admin.EnsureRoot(ctx, st, creds.AccessKey, creds.SecretKey); err != nil {
		return nil, fmt.Errorf("root account: %w", err)
	}

	var objects Objects
	if cfg.Objects == "" {
		objects, err = localorigin.New(filepath.Join(cfg.DataDir, "objects"))
	} else {
		objects, err = OpenObjects(ctx, cfg.Objects, log.With("part", "objects"))
	}
	if err != nil {
		return nil, fmt.Errorf("object store: %w", err)
	}
	d.onClose(objects.Close)
	bcfg := build.Config{Root: filepath.Join(cfg.DataDir, "builds"), RunAs: runAs}
	if runAs != nil {
		// A fresh Go build cache per build would compile the standard
		// library every time; the shared one is the run-as user's, so one
		// account's build could plant objects another's picks up: the
		// embedded platform is a single developer's (docs/security.md).
		bcfg.GoCache = cfg.GoCache
		if bcfg.GoCache == "" {
			bcfg.GoCache = filepath.Join(cfg.DataDir, "cache", "go-build")
		}
	}
	builder, err := build.NewWithConfig(bcfg)
	if err != nil {
		return nil, fmt.Errorf("builder: %w", err)
	}

	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("admin listener %s: %w", cfg.AdminAddr, err)
	}
	d.onClose(ignoreClosed(adminLn.Close))
	routerLn, err := net.Listen("tcp", cfg.RouterAddr)
	if err != nil {
		return nil, fmt.Errorf("router listener %s: %w", cfg.RouterAddr, err)
	}
	d.onClose(ignoreClosed(routerLn.Close))
	// One connection budget for both listeners, below RLIMIT_NOFILE: a
	// flood is shed with 503 and EMFILE is retried, never fatal.
	conns := connlimit.New(connlimit.Config{Logger: log.With("part", "listeners")})
	d.AdminURL = "http://" + adminLn.Addr().String()
	d.RouterURL = "http://" + routerLn.Addr().String()

	pod, pullUser, pullPass, err := devContainers(ctx, cfg, adminLn.Addr().String(), log)
	if err != nil {
		return nil, err
	}
	discovery := poolmemory.New()
	rt, err := localruntime.New(localruntime.Config{
		Dir:             filepath.Join(cfg.DataDir, "instances"),
		Region:          cfg.Region,
		Publisher:       discovery,
		Logger:          log.With("part", "runtime"),
		RunAs:           runAs,
		Podman:          pod,
		HealthyDeadline: cfg.HealthyDeadline,
		// With podman, packages run in containers too (fixed port 9100).
		PackagesInContainers: pod != nil && !cfg.PackagesAsProcesses,
	})
	if err != nil {
		return nil, fmt.Errorf("local runtime: %w", err)
	}
	d.onClose(rt.Close)

	reg, err := registry.New(registry.Config{
		Dir:          filepath.Join(cfg.DataDir, "registry"),
		Store:        st,
		Authenticate: registry.ByAccount(admin.BasicAuthenticator(st)),
		Logger:       log.With("part", "registry"),
		PullUser:     pullUser,
		PullPassword: pullPass,
	})
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}

	adminReg := prometheus.NewRegistry()
	routerReg := prometheus.NewRegistry()
	srv, err := admin.New(admin.Config{
		Store:     st,
		Runtime:   rt,
		Objects:   objects,
		Builder:   builder,
		Registry:  reg,
		Regions:   cfg.Regions,
		Flavors:   cfg.Flavors,
		PublicURL: d.AdminURL,
		RootAK:    creds.AccessKey,
		RootSK:    creds.SecretKey,
		Logger:    log.With("part", "admin"),
		Metrics:   adminReg,
		// Domains under the router's suffix are the platform's own.
		DomainSuffix: cfg.DomainSuffix,
		// A bucket may mirror a server on the developer's own network
		// only when the operator says so.
		AllowPrivateMirror: cfg.AllowPrivateMirror,
		// The web console's links and charts: the router's address and
		// the router's and autoscaler's own figures.
		RouterURL:     d.RouterURL,
		StatsGatherer: prometheus.Gatherers{adminReg, routerReg},
		StatsInterval: cfg.StatsInterval,
	})
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}

	queue, err := boltq.Open(filepath.Join(cfg.DataDir, "pfop.db"))
	if err != nil {
		return nil, fmt.Errorf("pfop queue: %w", err)
	}
	d.onClose(queue.Close)
	if err := secureDataDir(cfg.DataDir); err != nil { // objects/, registry/ as created
		return nil, err
	}

	loads := loadmemory.New(10 * time.Minute)
	mirror := httpmirror.New(httpmirror.Config{AllowPrivate: cfg.AllowPrivateMirror})
	p := pool.New(pool.Options{})
	rtr, err := router.New(router.Config{
		Store:        st,
		Objects:      objects,
		Writer:       objects,
		Mirror:       mirror,
		Pool:         p,
		Load:         loads,
		Region:       cfg.Region,
		DomainSuffix: cfg.DomainSuffix,
		PublicAddr:   routerLn.Addr().String(),
		Logger:       log.With("part", "router"),
		Metrics:      routerReg,
		HoldTimeout:  cfg.HoldTimeout,
		MaxHeld:      cfg.MaxHeld,
		Conns:        conns,
		// Containers reach the router's input URLs at the host's
		// loopback as their network shows it.
		OwnHosts: []string{localruntime.HostLoopback},
	})
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}

	// The embedded platform runs on one machine: notifications may reach
	// loopback and private addresses (a receiver on the developer's laptop).
	notify := pfop.NotifyConfig{AllowPrivate: true}
	pfopHandler, err := pfop.NewHandler(pfop.HandlerConfig{
		Store:    st,
		Queue:    queue,
		Objects:  objects,
		Notify:   notify,
		IDPrefix: cfg.Region,
		Logger:   log.With("part", "pfop"),
		// Blocks and parts of resumable uploads wait here until complete.
		SpoolDir: filepath.Join(cfg.DataDir, "uploads"),
	})
	if err != nil {
		return nil, fmt.Errorf("pfop handler: %w", err)
	}
	srv.SetPfop(pfopHandler) // the console's pfop form
	// Qiniu's bucket APIs: the region query names the router as the
	// download host; fetch may reach the developer's own network, as
	// mirrors may here.
	rsHandler, err := rs.New(rs.Config{
		Store: st, Objects: objects, IOHost: routerLn.Addr().String(), Region: cfg.Region,
		AllowPrivateFetch: true, Logger: log.With("part", "rs"),
	})
	if err != nil {
		return nil, fmt.Errorf("rs handler: %w", err)
	}
	worker, err := pfop.NewWorker(pfop.WorkerConfig{
		Store:     st,
		Queue:     queue,
		Processor: rtr,
		Objects:   objects,
		Notify:    notify,
		Logger:    log.With("part", "pfop"),
		// Job outcomes, latencies and queue depth on the admin /metrics.
		Metrics: adminReg,
	})
	if err != nil {
		return nil, fmt.Errorf("pfop worker: %w", err)
	}

	scaler := autoscaler.New(autoscaler.Config{
		Store:    st,
		Load:     loads,
		Target:   runtime.ScaleTarget{Runtime: rt},
		Interval: cfg.AutoscaleInterval,
		Logger:   log.With("part", "autoscaler"),
		// The per-deployment gauges (desired, ready, panic, stable and
		// panic averages) are served on the admin API's /metrics.
		Metrics: adminReg,
	})

	runCtx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	// pfop, prefop, the Qiniu uploads (form, resumable) and bucket APIs
	// (rs/rsf/uc) sit in front of the admin API on the same listener, where
	// Qiniu's SDKs expect them. Header, body-rate, write and idle deadlines
	// bound every client (httpguard).
	httpSrv := httpguard.Server(rsHandler.Wrap(pfopHandler.Wrap(srv.Handler())), httpguard.Config{})
	d.onClose(func() error {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		return httpSrv.Shutdown(sctx)
	})
	d.goRun("pool", func() error { p.Run(runCtx, discovery); return nil })
	d.goRun("admin background", func() error { return srv.Run(runCtx) })
	d.goRun("admin http", func() error {
		if err := httpSrv.Serve(httpguard.Listen(conns.Listen(adminLn), httpSrv)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	d.goRun("router background", func() error { return rtr.Run(runCtx) })
	d.goRun("router http", func() error { return rtr.Serve(runCtx, routerLn) })
	d.goRun("autoscaler", func() error { return scaler.Run(runCtx) })
	d.goRun("pfop worker", func() error { return worker.Run(runCtx) })

	log.Info("dora dev platform started", "admin", d.AdminURL, "router", d.RouterURL,
		"data_dir", cfg.DataDir, "domain_suffix", cfg.DomainSuffix, "region", cfg.Region,
		"user_code_runs_as", runAs.String(), "images", imagesMode(pod), "packages", packagesMode(pod, cfg))
	ok = true
	return d, nil
}

// Close stops every part, the instances included, and waits for them.
func (d *Dev) Close() error {
	d.stop()
	err := d.closeAll()
	d.wg.Wait()
	return err
}

func ignoreClosed(f func() error) func() error {
	return func() error {
		if err := f(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	}
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
