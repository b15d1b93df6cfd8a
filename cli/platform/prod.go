package platform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/doraproject/dora/internal/connlimit"
	"github.com/doraproject/dora/internal/httpguard"
	"github.com/doraproject/dora/internal/store"
)

// The production roles live one per file: admin.go (StartAdmin), router.go
// (StartRouter and the data plane a router or worker opens), autoscaler.go
// (StartAutoscaler) and worker.go (StartWorker). This file holds what they
// share: the Service lifecycle, listeners, metrics and store opening.

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
	// routerReady is closed once the role's router (the router role's,
	// or a worker's embedded one) has loaded its metadata; nil without one.
	routerReady <-chan struct{}
}

// errRouterNotReady: a router did not load its metadata in time.
var errRouterNotReady = errors.New("router metadata not loaded")

// waitRouterReady waits until the role's router has loaded its metadata
// (before that it answers 503), for at most limit.
func (s *Service) waitRouterReady(ctx context.Context, limit time.Duration) error {
	if s.routerReady == nil {
		return nil
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-s.routerReady:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: waiting for its router: %w", s.Name, ctx.Err())
	case <-t.C:
		return fmt.Errorf("%s: %w after %v", s.Name, errRouterNotReady, limit)
	}
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
		go func() { errc <- srv.Serve(httpguard.Listen(s.conns.Listen(ln), srv)) }()
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

// checkPublicAddr refuses a public address (RouterConfig.PublicAddr,
// WorkerConfig.PublicAddr) that is not host:port: the one-shot input URLs
// are http://<addr>/..., so a URL or a missing port would break each one.
func checkPublicAddr(role, addr string) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err == nil && host == "" {
		err = errors.New("missing host")
	}
	if err == nil && strings.ContainsAny(addr, "/?#@") {
		err = errors.New("a host:port, not a URL")
	}
	if err == nil {
		if n, perr := strconv.Atoi(port); perr != nil || n < 1 || n > 65535 {
			err = fmt.Errorf("port %q is not a number between 1 and 65535", port)
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w: public address %q: want host:port (e.g. 10.0.0.7:8080): %v", role, ErrConfig, addr, err)
	}
	return nil
}

// warnWildcardPublic logs, for a role whose instances read their input
// from one-shot URLs on ln (router, worker), when those URLs would name
// ln's unspecified address (0.0.0.0, [::]) because publicAddr is empty:
// an instance on another host dials itself there.
func warnWildcardPublic(log *slog.Logger, role, publicAddr string, ln net.Listener) {
	if publicAddr != "" {
		return
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsUnspecified() {
		log.Warn("this "+role+" listens on every interface without --public-addr: instances' one-shot input URLs name "+
			ln.Addr().String()+", which an instance on another host cannot reach; set --public-addr to the host:port they reach this "+role+" at",
			"listen", ln.Addr().String())
	}
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
