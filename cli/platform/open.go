package platform

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/runtime"
	localruntime "github.com/doraproject/dora/admin/runtime/local"
	"github.com/doraproject/dora/autoscaler/load"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/pool"
)

// Backends are the opened backends a role is built on. Every role is
// started in two steps: open the backends its URLs name (openBackends),
// then build the role on them (buildAdmin, buildRouter, buildWorker,
// buildAutoscaler). A production command (dorad admin, router, worker,
// autoscaler) opens its own; StartDev opens the embedded ones once
// (bolt://, file://, local://, memory://) and builds all four roles on
// them, so that the development platform and the end-to-end tests run the
// production constructors.
type Backends struct {
	Store     store.Store
	Objects   Objects
	Runtime   runtime.Runtime
	Discovery pool.Discovery
	Load      load.Store
	Queue     pfop.Queue
	// Metrics is the registry the role's figures go to and its /metrics
	// serves.
	Metrics *prometheus.Registry
}

// BackendURLs name the backends openBackends opens; an empty URL is not
// opened (that field of Backends stays nil).
type BackendURLs struct {
	Store, Objects, Runtime, Discovery, Load, Queue string
}

// openOptions qualify openBackends.
type openOptions struct {
	// Region is the discovery's default region (instances naming none).
	Region string
	// Runtime qualifies OpenRuntime; a memory:// discovery opened in the
	// same call becomes the local runtime's Publisher.
	Runtime RuntimeOptions
	Logger  *slog.Logger
}

// openBackends opens every backend u names, with a new metrics registry
// (the discovery's gauges go there), and registers their Close on p: the
// role or the development platform that owns them closes them last. On an
// error the ones already opened are left to p's closeAll.
func (p *parts) openBackends(ctx context.Context, u BackendURLs, o openOptions) (Backends, error) {
	log := quietLogger(o.Logger)
	be := Backends{Metrics: newRegistry()}
	var err error
	if u.Store != "" {
		if be.Store, err = OpenStore(ctx, u.Store); err != nil {
			return Backends{}, err
		}
		p.onClose(be.Store.Close)
	}
	if u.Objects != "" {
		if be.Objects, err = OpenObjects(ctx, u.Objects, log.With("part", "objects")); err != nil {
			return Backends{}, err
		}
		p.onClose(be.Objects.Close)
	}
	if u.Discovery != "" {
		be.Discovery, err = NewDiscovery(u.Discovery, DiscoveryOptions{DefaultRegion: o.Region, Logger: log.With("part", "discovery"), Metrics: be.Metrics})
		if err != nil {
			return Backends{}, err
		}
	}
	if u.Runtime != "" {
		ro := o.Runtime
		if pub, ok := be.Discovery.(localruntime.Publisher); ok && ro.Publisher == nil {
			ro.Publisher = pub
		}
		if ro.Logger == nil {
			ro.Logger = log.With("part", "runtime")
		}
		if be.Runtime, err = OpenRuntime(u.Runtime, ro); err != nil {
			return Backends{}, err
		}
		if c, ok := be.Runtime.(io.Closer); ok {
			p.onClose(c.Close)
		}
	}
	if u.Load != "" {
		if be.Load, err = OpenLoadWith(u.Load, log); err != nil {
			return Backends{}, err
		}
		loads := be.Load
		p.onClose(func() error { return CloseLoad(loads) })
	}
	if u.Queue != "" {
		q, closer, err := OpenQueueWith(u.Queue, log)
		if err != nil {
			return Backends{}, err
		}
		be.Queue = q
		p.onClose(closer.Close)
	}
	return be, nil
}

// prepareDataDir is what a role running user code does before it opens
// anything: it resolves the run-as user, reads or makes the root keys,
// sets the data directory's modes and checks that the run-as user can
// reach it.
func prepareDataDir(dataDir, runAsSpec, rootAK, rootSK string, log *slog.Logger) (*build.User, RootCredentials, error) {
	runAs, err := resolveRunAs(runAsSpec, log)
	if err != nil {
		return nil, RootCredentials{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	creds, err := LoadOrCreateRootCredentials(dataDir, rootAK, rootSK)
	if err != nil {
		return nil, RootCredentials{}, err
	}
	if err := secureDataDir(dataDir); err != nil {
		return nil, RootCredentials{}, err
	}
	if err := build.CheckReachable(dataDir, runAs); err != nil {
		return nil, RootCredentials{}, fmt.Errorf("%w: data dir: build scripts and instances run as %s (run-as): %w", ErrConfig, runAs, err)
	}
	return runAs, creds, nil
}
