package platform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin"
	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/pfop/boltq"
	"github.com/doraproject/dora/admin/pfop/redisq"
	"github.com/doraproject/dora/admin/runtime"
	localruntime "github.com/doraproject/dora/admin/runtime/local"
	nomadruntime "github.com/doraproject/dora/admin/runtime/nomad"
	"github.com/doraproject/dora/autoscaler/load"
	loadmemory "github.com/doraproject/dora/autoscaler/load/memory"
	loadredis "github.com/doraproject/dora/autoscaler/load/redis"
	"github.com/doraproject/dora/internal/redisconn"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/bolt"
	"github.com/doraproject/dora/internal/store/consulkv"
	storememory "github.com/doraproject/dora/internal/store/memory"
	nomadjobs "github.com/doraproject/dora/nomad-jobs"
	"github.com/doraproject/dora/pool"
	poolconsul "github.com/doraproject/dora/pool/consul"
	poolmemory "github.com/doraproject/dora/pool/memory"
	"github.com/doraproject/dora/router/origin"
	localorigin "github.com/doraproject/dora/router/origin/local"
	s3origin "github.com/doraproject/dora/router/origin/s3"
)

// Backends are chosen by URL, litestream-style; the scheme picks the
// implementation:
//
//	--store     bolt://./.dora/meta.db | memory:// | consul://127.0.0.1:8500/dora
//	--runtime   local:// | nomad://127.0.0.1:4646
//	--discovery memory:// | consul://127.0.0.1:8500
//	--load      memory:// | redis://127.0.0.1:6379/0
//	--objects   file://./.dora/objects | s3://<bucket>[/<prefix>]?endpoint=http://127.0.0.1:8333
//	--queue     bolt://./.dora/pfop.db | redis://127.0.0.1:6379/0
//
// A path after bolt:// or file:// is taken verbatim, so "bolt://./x.db" is
// relative to the working directory and "bolt:///var/lib/dora/x.db"
// absolute.

// ErrBadURL is wrapped by every error about a backend URL: an unknown
// scheme, a missing host or path, an unknown query parameter.
var ErrBadURL = errors.New("bad backend URL")

// Default backend URLs of the production commands.
const (
	DefaultStoreURL     = "bolt://./.dora/meta.db"
	DefaultRuntimeURL   = "local://"
	DefaultDiscoveryURL = "memory://"
	DefaultLoadURL      = "memory://"
	DefaultObjectsURL   = "file://./.dora/objects"
	DefaultQueueURL     = "bolt://./.dora/pfop.db"
)

// DefaultLoadRetention is how long the in-memory load store keeps samples.
const DefaultLoadRetention = 10 * time.Minute

// maxURLBytes bounds a backend URL (they come from flags and files).
const maxURLBytes = 4096

// backendURL is a parsed backend URL: its scheme, and either a verbatim
// path (bolt://, file://, local://) or a parsed URL.
type backendURL struct {
	raw    string
	scheme string
	rest   string   // everything after "<scheme>://"
	u      *url.URL // nil for path schemes
}

// parseBackendURL splits raw into scheme and the rest, checking the
// scheme is one of schemes; pathSchemes are not parsed further.
func parseBackendURL(what, raw string, schemes []string, pathSchemes ...string) (backendURL, error) {
	want := "use " + strings.Join(prefixEach(schemes, "://"), " or ")
	if raw == "" {
		return backendURL{}, fmt.Errorf("%s URL: %w: empty (%s)", what, ErrBadURL, want)
	}
	if len(raw) > maxURLBytes {
		return backendURL{}, fmt.Errorf("%s URL: %w: longer than %d bytes", what, ErrBadURL, maxURLBytes)
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return backendURL{}, fmt.Errorf("%s URL %q: %w: no scheme (%s)", what, redact(raw), ErrBadURL, want)
	}
	scheme = strings.ToLower(scheme)
	known := false
	for _, s := range schemes {
		known = known || s == scheme
	}
	if !known {
		return backendURL{}, fmt.Errorf("%s URL %q: %w: unknown scheme %q (%s)", what, redact(raw), ErrBadURL, scheme, want)
	}
	b := backendURL{raw: raw, scheme: scheme, rest: rest}
	for _, s := range pathSchemes {
		if s == scheme {
			return b, nil
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return backendURL{}, fmt.Errorf("%s URL %q: %w: %v", what, redact(raw), ErrBadURL, stripURLError(err))
	}
	// url.Parse checks a port's digits, not its range: 0 or 85000 would
	// fail every request later with a dial error.
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return backendURL{}, fmt.Errorf("%s URL %q: %w: port %s is not between 1 and 65535", what, redact(raw), ErrBadURL, p)
		}
	}
	b.u = u
	return b, nil
}

func prefixEach(ss []string, suffix string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s + suffix
	}
	return out
}

// stripURLError drops url.Error's repetition of the (unredacted) URL.
func stripURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redact hides a password in raw, for error messages and logs.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		if i := strings.LastIndex(raw, "@"); i >= 0 && strings.Contains(raw[:i], ":") {
			return "(URL with credentials, redacted)"
		}
		return redactQuery(raw)
	}
	return redactQuery(u.Redacted())
}

// redactQuery hides the values of query parameters whose names say they
// hold a secret (password=, secret_key=, token=, ...): the backends take
// none, but a URL that carries one is echoed in errors and logs.
func redactQuery(raw string) string {
	base, query, ok := strings.Cut(raw, "?")
	if !ok {
		return raw
	}
	query, frag, hasFrag := strings.Cut(query, "#")
	params := strings.Split(query, "&")
	for i, kv := range params {
		k, _, hasValue := strings.Cut(kv, "=")
		lk := strings.ToLower(k)
		for _, w := range []string{"pass", "secret", "token", "key", "auth", "cred", "sig"} {
			if hasValue && strings.Contains(lk, w) {
				params[i] = k + "=xxxxx"
				break
			}
		}
	}
	out := base + "?" + strings.Join(params, "&")
	if hasFrag {
		out += "#" + frag
	}
	return out
}

// errf formats an ErrBadURL error about b.
func (b backendURL) errf(what, format string, args ...any) error {
	return fmt.Errorf("%s URL %q: %w: %s", what, redact(b.raw), ErrBadURL, fmt.Sprintf(format, args...))
}

// checkQuery refuses query parameters other than allowed.
func (b backendURL) checkQuery(what string, allowed ...string) error {
	for k, vs := range b.u.Query() {
		if len(vs) > 1 && slices.Contains(allowed, k) {
			return b.errf(what, "query parameter %q given twice (only one is read)", k)
		}
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return b.errf(what, "unknown query parameter %q (none are accepted)", k)
			}
			return b.errf(what, "unknown query parameter %q (accepted: %s)", k, strings.Join(allowed, ", "))
		}
	}
	if b.u.Fragment != "" {
		return b.errf(what, "unexpected fragment #%s", b.u.Fragment)
	}
	return nil
}

// bare refuses anything after "<scheme>://": a memory:// backend names no
// place.
func (b backendURL) bare(what string) error {
	if b.rest != "" {
		return b.errf(what, "%s:// takes nothing after the scheme", b.scheme)
	}
	return nil
}

// noPath refuses a path after the host: a URL naming a server (consul://,
// nomad://) has nothing to say there, so a path is likely a typo.
func (b backendURL) noPath(what string) error {
	if p := strings.Trim(b.u.Path, "/"); p != "" {
		return b.errf(what, "a %s:// URL takes no path (got %q)", b.scheme, b.u.Path)
	}
	return nil
}

// queryOneOf returns query parameter key, which must be empty or one of
// allowed.
func (b backendURL) queryOneOf(what, key string, allowed ...string) (string, error) {
	v := b.u.Query().Get(key)
	if v != "" && !slices.Contains(allowed, v) {
		return "", b.errf(what, "%s %q must be %s", key, v, strings.Join(allowed, " or "))
	}
	return v, nil
}

// hostPort requires a host:port (the port may be omitted when def is set).
func (b backendURL) hostPort(what string, defPort string) (string, error) {
	if b.u.User != nil {
		return "", b.errf(what, "credentials in the URL are not supported")
	}
	if b.u.Opaque != "" || b.u.Host == "" {
		return "", b.errf(what, "missing host (e.g. %s://127.0.0.1:%s)", b.scheme, defPort)
	}
	host, port, err := net.SplitHostPort(b.u.Host)
	if err != nil {
		host, port = b.u.Host, defPort
		if strings.Contains(strings.Trim(host, "[]"), ":") && !strings.HasPrefix(host, "[") {
			return "", b.errf(what, "bad host %q (write IPv6 addresses in brackets)", b.u.Host)
		}
		host = strings.Trim(host, "[]")
	}
	if host == "" {
		return "", b.errf(what, "missing host name in %q", b.u.Host)
	}
	if port == "" {
		port = defPort
	}
	return net.JoinHostPort(host, port), nil
}

// verbatimPath returns the path after "<scheme>://", refusing an empty one
// when required and a query or fragment (a likely typo).
func (b backendURL) verbatimPath(what string, required bool, example string) (string, error) {
	if required && b.rest == "" {
		return "", b.errf(what, "missing path (e.g. %s)", example)
	}
	if strings.ContainsAny(b.rest, "?#") {
		return "", b.errf(what, "a %s:// path takes no query or fragment", b.scheme)
	}
	if strings.ContainsRune(b.rest, 0) {
		return "", b.errf(what, "NUL byte in path")
	}
	return b.rest, nil
}

// Consul's default HTTP port.
const consulDefaultPort = "8500"

// consulConfig is the consul/api configuration of a consul:// URL: its
// host:port and the optional ?dc= datacenter. The ACL token comes from
// CONSUL_HTTP_TOKEN, never from the URL; TLS from CONSUL_HTTP_SSL and
// CONSUL_CACERT (consul/api's environment), as for the consul:// store.
func (b backendURL) consulConfig(what string) (*consulapi.Config, error) {
	if err := b.checkQuery(what, "dc"); err != nil {
		return nil, err
	}
	addr, err := b.hostPort(what, consulDefaultPort)
	if err != nil {
		return nil, err
	}
	cfg := consulapi.DefaultConfig()
	cfg.Address = addr
	if dc := b.u.Query().Get("dc"); dc != "" {
		cfg.Datacenter = dc
	}
	return cfg, nil
}

// ConsulClient returns a Consul API client for a consul:// URL
// ("consul://127.0.0.1:8500", optional "?dc=<datacenter>"; the path is
// ignored). It does not contact the agent.
func ConsulClient(rawURL string) (*consulapi.Client, error) {
	b, err := parseBackendURL("consul", rawURL, []string{"consul"})
	if err != nil {
		return nil, err
	}
	cfg, err := b.consulConfig("consul")
	if err != nil {
		return nil, err
	}
	c, err := consulapi.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", cfg.Address, err)
	}
	return c, nil
}

// OpenStore opens the metadata store named by rawURL:
//
//	bolt://<path>                    a bbolt file (one process at a time)
//	memory://                        in this process only, lost at exit (tests, throw-away dev platforms)
//	consul://<host:port>[/<prefix>]  Consul KV under <prefix> (default "dora/"), ?dc= optional
//
// A Consul store is not contacted here (the agent may come up later); a
// bolt file is opened and locked, waiting at most bolt.LockTimeout for
// another process to let go of it. The caller closes the store.
func OpenStore(ctx context.Context, rawURL string) (store.Store, error) {
	const what = "store"
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := parseBackendURL(what, rawURL, []string{"bolt", "memory", "consul"}, "bolt", "memory")
	if err != nil {
		return nil, err
	}
	switch b.scheme {
	case "memory":
		if err := b.bare(what); err != nil {
			return nil, err
		}
		return storememory.New(), nil
	case "bolt":
		path, err := b.verbatimPath(what, true, "bolt://./.dora/meta.db")
		if err != nil {
			return nil, err
		}
		st, err := bolt.Open(path)
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", rawURL, err)
		}
		return st, nil
	default: // consul
		cfg, err := b.consulConfig(what)
		if err != nil {
			return nil, err
		}
		prefix := strings.Trim(b.u.Path, "/")
		if strings.Contains(prefix, "//") {
			return nil, b.errf(what, "empty segment in prefix %q", prefix)
		}
		// Consul's HTTP paths are cleaned on some requests and not on
		// others: under a "." or ".." segment a Put lands where a Get
		// never finds it.
		for _, seg := range strings.Split(prefix, "/") {
			if seg == "." || seg == ".." {
				return nil, b.errf(what, "a \".\" or \"..\" segment in prefix %q", prefix)
			}
		}
		st, err := consulkv.New(consulkv.Config{Address: cfg.Address, Prefix: prefix, Datacenter: cfg.Datacenter})
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", redact(rawURL), err)
		}
		return st, nil
	}
}

// IsConsulURL reports whether rawURL names a Consul backend.
func IsConsulURL(rawURL string) bool {
	scheme, _, ok := strings.Cut(rawURL, "://")
	return ok && strings.EqualFold(scheme, "consul")
}

// OpenLoad opens the load store named by rawURL:
//
//	memory://                      in-process windows (one process: dorad dev, tests)
//	redis://[user:pass@]host:port[/db]   Redis (rediss:// for TLS)
//
// Redis is not contacted here. The returned store has a Close method when
// it holds connections (see CloseLoad).
func OpenLoad(rawURL string) (load.Store, error) {
	return OpenLoadWith(rawURL, nil)
}

// OpenLoadWith is OpenLoad with a logger for the Redis client's own
// messages (see SetRedisLogger); nil keeps the client's default logger.
func OpenLoadWith(rawURL string, log *slog.Logger) (load.Store, error) {
	const what = "load"
	b, err := parseBackendURL(what, rawURL, []string{"memory", "redis", "rediss"}, "memory")
	if err != nil {
		return nil, err
	}
	switch b.scheme {
	case "memory":
		if err := b.bare(what); err != nil {
			return nil, err
		}
		return loadmemory.New(DefaultLoadRetention), nil
	default: // redis, rediss
		if b.u.Host == "" {
			return nil, b.errf(what, "missing host (e.g. redis://127.0.0.1:6379/0)")
		}
		if b.u.Fragment != "" {
			return nil, b.errf(what, "unexpected fragment #%s", b.u.Fragment)
		}
		if log != nil {
			SetRedisLogger(log)
		}
		st, err := loadredis.New(loadredis.Config{Server: redisconn.Config{URL: rawURL}})
		if err != nil {
			return nil, fmt.Errorf("load URL %q: %w: %w", redact(rawURL), ErrBadURL, err)
		}
		return st, nil
	}
}

// OpenQueue opens the pfop queue named by rawURL:
//
//	bolt://<path>                        a bbolt file of its own (one process at a
//	                                     time: the admin and its worker in one process)
//	redis://[user:pass@]host:port[/db]   Redis Streams shared by every admin and
//	                                     worker (rediss:// for TLS)
//
// A bolt file is opened and locked (waiting at most boltq.LockTimeout for
// another process to let go of it); Redis is not contacted here. The
// caller closes the queue with the returned Closer.
func OpenQueue(rawURL string) (pfop.Queue, io.Closer, error) {
	return OpenQueueWith(rawURL, nil)
}

// OpenQueueWith is OpenQueue with a logger for the Redis client's own
// messages (see SetRedisLogger); nil keeps the client's default logger.
func OpenQueueWith(rawURL string, log *slog.Logger) (pfop.Queue, io.Closer, error) {
	const what = "queue"
	b, err := parseBackendURL(what, rawURL, []string{"bolt", "redis", "rediss"}, "bolt")
	if err != nil {
		return nil, nil, err
	}
	switch b.scheme {
	case "bolt":
		path, err := b.verbatimPath(what, true, "bolt://./.dora/pfop.db")
		if err != nil {
			return nil, nil, err
		}
		q, err := boltq.Open(path)
		if err != nil {
			return nil, nil, fmt.Errorf("queue %s: %w", rawURL, err)
		}
		return q, q, nil
	default: // redis, rediss
		if b.u.Host == "" {
			return nil, nil, b.errf(what, "missing host (e.g. redis://127.0.0.1:6379/0)")
		}
		if b.u.Fragment != "" {
			return nil, nil, b.errf(what, "unexpected fragment #%s", b.u.Fragment)
		}
		if log != nil {
			SetRedisLogger(log)
		}
		q, err := redisq.New(redisq.Config{Server: redisconn.Config{URL: rawURL}})
		if err != nil {
			return nil, nil, fmt.Errorf("queue URL %q: %w: %w", redact(rawURL), ErrBadURL, stripURLError(err))
		}
		return q, q, nil
	}
}

// CloseLoad closes a load store returned by OpenLoad if it has a Close
// method (Redis); the in-memory store has nothing to release.
func CloseLoad(st load.Store) error {
	if c, ok := st.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}

// SetRedisLogger routes go-redis's own messages (one per failed
// connection, many during an outage) to log: the first one at Warn, the
// rest at Debug, since the router already reports load recording failures
// once with their counts in its metrics. go-redis keeps one process-wide
// logger; the last call wins.
func SetRedisLogger(log *slog.Logger) {
	goredis.SetLogger(&redisLogger{log: log.With("component", "redis-client")})
}

// redisLogger adapts slog to go-redis's Logging interface.
type redisLogger struct {
	log    *slog.Logger
	warned atomic.Bool
}

// Printf logs one go-redis message.
func (l *redisLogger) Printf(ctx context.Context, format string, v ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	if l.warned.CompareAndSwap(false, true) {
		l.log.WarnContext(ctx, msg, "note", "further redis client messages are logged at debug level")
		return
	}
	l.log.DebugContext(ctx, msg)
}

// DiscoveryOptions qualify NewDiscovery.
type DiscoveryOptions struct {
	// DefaultRegion is the region of a Consul instance that names none.
	DefaultRegion string
	Logger        *slog.Logger
	// Metrics receives the Consul discovery's gauges; may be nil.
	Metrics prometheus.Registerer
}

// NewDiscovery returns the instance discovery named by rawURL:
//
//	memory://                  in-process (instances published by a local
//	                           runtime in the same process; nothing otherwise)
//	consul://<host:port>       Consul health, passing checks only (?dc= optional)
//
// It contacts nothing until Watch.
func NewDiscovery(rawURL string, opts DiscoveryOptions) (pool.Discovery, error) {
	const what = "discovery"
	b, err := parseBackendURL(what, rawURL, []string{"memory", "consul"}, "memory")
	if err != nil {
		return nil, err
	}
	switch b.scheme {
	case "memory":
		if err := b.bare(what); err != nil {
			return nil, err
		}
		return poolmemory.New(), nil
	default: // consul
		if err := b.noPath(what); err != nil {
			return nil, err
		}
		cfg, err := b.consulConfig(what)
		if err != nil {
			return nil, err
		}
		client, err := consulapi.NewClient(cfg)
		if err != nil {
			return nil, fmt.Errorf("discovery %s: %w", rawURL, err)
		}
		return poolconsul.New(poolconsul.Config{
			Client:        client,
			Logger:        opts.Logger,
			Metrics:       opts.Metrics,
			DefaultRegion: opts.DefaultRegion,
		}), nil
	}
}

// Objects is an object origin the platform reads, writes and lists.
type Objects interface {
	origin.Reader
	origin.Writer
	origin.Lister
	Close() error
}

// OpenObjects opens the object origin named by rawURL:
//
//	file://<dir>   objects at <dir>/<bucket>/<key> (one host only)
//	s3://<s3-bucket>[/<prefix>]?endpoint=<http(s)://host:port>[&region=<r>][&path-style=true]
//	               an S3-compatible store shared by every host: bucket b,
//	               key k is the S3 object <prefix>/b/k; credentials from the
//	               AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
//	               AWS_PROFILE, instance roles), never from the URL
//
// An s3:// store is contacted here (bounded): wrong credentials, a
// missing bucket or an unreachable endpoint fail the start.
func OpenObjects(ctx context.Context, rawURL string, log *slog.Logger) (Objects, error) {
	const what = "objects"
	b, err := parseBackendURL(what, rawURL, []string{"file", s3origin.Scheme}, "file")
	if err != nil {
		return nil, err
	}
	if b.scheme == s3origin.Scheme {
		cfg, err := s3origin.ParseURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
		}
		cfg.Logger = log
		st, err := s3origin.New(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	dir, err := b.verbatimPath(what, true, "file://./.dora/objects")
	if err != nil {
		return nil, err
	}
	d, err := localorigin.New(dir)
	if err != nil {
		return nil, fmt.Errorf("objects %s: %w", rawURL, err)
	}
	return d, nil
}

// RegionSpec is one platform region: its name (z0), a description for
// `qdoractl regions`, and where its instances run in Nomad.
type RegionSpec struct {
	Name        string   `json:"name" yaml:"name" mapstructure:"name"`
	Desc        string   `json:"desc,omitempty" yaml:"desc,omitempty" mapstructure:"desc"`
	NomadRegion string   `json:"nomad_region,omitempty" yaml:"nomad_region,omitempty" mapstructure:"nomad_region"`
	Datacenters []string `json:"datacenters,omitempty" yaml:"datacenters,omitempty" mapstructure:"datacenters"`
}

// ErrBadRegion is wrapped by errors about a region specification.
var ErrBadRegion = errors.New("bad region")

// ParseRegion reads the flag form of a region:
//
//	NAME[=NOMAD_REGION[/DC[+DC...]]]
//
// e.g. "z0", "z0=global", "z1=asia/sh1+sh2".
func ParseRegion(s string) (RegionSpec, error) {
	name, rest, hasNomad := strings.Cut(strings.TrimSpace(s), "=")
	r := RegionSpec{Name: name}
	if hasNomad {
		nr, dcs, hasDCs := strings.Cut(rest, "/")
		r.NomadRegion = nr
		if hasDCs {
			r.Datacenters = strings.Split(dcs, "+")
		}
		if r.NomadRegion == "" {
			return RegionSpec{}, fmt.Errorf("region %q: %w: empty Nomad region after '=' (NAME[=NOMAD_REGION[/DC[+DC...]]])", s, ErrBadRegion)
		}
	}
	if err := r.validate(); err != nil {
		return RegionSpec{}, fmt.Errorf("region %q: %w", s, err)
	}
	return r, nil
}

// ParseRegions parses each flag-form region (see ParseRegion) and checks
// that names are unique.
func ParseRegions(specs []string) ([]RegionSpec, error) {
	out := make([]RegionSpec, 0, len(specs))
	for _, s := range specs {
		r, err := ParseRegion(s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := ValidateRegions(out); err != nil {
		return nil, err
	}
	return out, nil
}

// ValidateRegions checks names and Nomad placements, and that names are
// unique.
func ValidateRegions(rs []RegionSpec) error {
	seen := map[string]bool{}
	for _, r := range rs {
		if err := r.validate(); err != nil {
			return fmt.Errorf("region %q: %w", r.Name, err)
		}
		if seen[r.Name] {
			return fmt.Errorf("region %q: %w: given twice", r.Name, ErrBadRegion)
		}
		seen[r.Name] = true
	}
	return nil
}

func (r RegionSpec) validate() error {
	if !nomadjobs.ValidName(r.Name) {
		return fmt.Errorf("%w: name must be 1 to 63 letters, digits, '.', '_' or '-'", ErrBadRegion)
	}
	if r.NomadRegion != "" && !nomadjobs.ValidName(r.NomadRegion) {
		return fmt.Errorf("%w: Nomad region %q must be 1 to 63 letters, digits, '.', '_' or '-'", ErrBadRegion, r.NomadRegion)
	}
	for _, dc := range r.Datacenters {
		if dc != "*" && !nomadjobs.ValidName(dc) {
			return fmt.Errorf("%w: datacenter %q must be * or 1 to 63 letters, digits, '.', '_' or '-'", ErrBadRegion, dc)
		}
	}
	return nil
}

// regionsOrDefault returns rs validated, or one region named name
// (dora.DefaultRegion when empty).
func regionsOrDefault(rs []RegionSpec, name string) ([]RegionSpec, error) {
	if len(rs) == 0 {
		rs = []RegionSpec{{Name: orDefault(name, dora.DefaultRegion)}}
	}
	if err := ValidateRegions(rs); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return rs, nil
}

func adminRegions(rs []RegionSpec) []admin.Region {
	out := make([]admin.Region, len(rs))
	for i, r := range rs {
		desc := r.Desc
		if desc == "" && r.NomadRegion != "" {
			desc = "Nomad region " + r.NomadRegion
			if len(r.Datacenters) > 0 {
				desc += ", datacenters " + strings.Join(r.Datacenters, ", ")
			}
		}
		out[i] = admin.Region{Name: r.Name, Desc: desc}
	}
	return out
}

func regionNames(rs []RegionSpec) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Name
	}
	return out
}

// RuntimeOptions qualify OpenRuntime.
type RuntimeOptions struct {
	// DataDir holds local-runtime instances (<DataDir>/instances) unless
	// the local:// URL names a directory.
	DataDir string
	// Region is the local runtime's single region and Nomad's default
	// region (jobs without a region suffix).
	Region string
	// Regions place platform regions in Nomad.
	Regions []RegionSpec
	// Publisher receives the local runtime's healthy instances (a
	// pool/memory Discovery in the same process); may be nil.
	Publisher localruntime.Publisher
	// Consul, when set, makes Nomad instance health follow Consul checks.
	Consul *consulapi.Client
	// RunAs is the user local-runtime instances run as (nil: the
	// platform's own); the instances directory must be reachable by it.
	// Nomad ignores it: there the task driver decides.
	RunAs *build.User
	// Podman, when set, runs OCI images (and, with PackagesInContainers,
	// program packages) of local-runtime instances as containers;
	// HealthyDeadline bounds a container's first health check. Nomad
	// ignores them.
	Podman               *localruntime.Podman
	HealthyDeadline      time.Duration
	PackagesInContainers bool
	// ImageGCDelay is how long an image the local runtime pulled stays
	// in podman's storage once no deployment names it (zero:
	// localruntime.DefaultImageGCDelay; negative: kept). Nomad ignores
	// it: there each client's docker driver collects its images.
	ImageGCDelay time.Duration
	// RegistryUser and RegistryPassword are the registry's pull
	// credentials, put in Nomad docker jobs' auth block.
	RegistryUser, RegistryPassword string
	Logger                         *slog.Logger
}

// OpenRuntime returns the runtime named by rawURL:
//
//	local://[<dir>]              child processes (instances under <dir>, default <DataDir>/instances)
//	nomad://<host:port>          Nomad jobs; ?driver=raw_exec (default) or exec;
//	                             ?network=host (default) or bridge (packages in their own
//	                             network namespace, listening on 9100; needs CNI plugins); the
//	                             ACL token comes from NOMAD_TOKEN, never from the URL;
//	                             HTTPS when NOMAD_ADDR is https:// or NOMAD_CACERT,
//	                             NOMAD_CAPATH or NOMAD_CLIENT_CERT is set (nomadScheme)
//
// Nomad is not contacted here. The local runtime must be closed (it has a
// Close method) to stop its instances.
func OpenRuntime(rawURL string, opts RuntimeOptions) (runtime.Runtime, error) {
	const what = "runtime"
	b, err := parseBackendURL(what, rawURL, []string{"local", "nomad"}, "local")
	if err != nil {
		return nil, err
	}
	switch b.scheme {
	case "local":
		dir, err := b.verbatimPath(what, false, "")
		if err != nil {
			return nil, err
		}
		if dir == "" {
			dir = filepath.Join(orDefault(opts.DataDir, "./.dora"), "instances")
		}
		rt, err := localruntime.New(localruntime.Config{
			Dir:       dir,
			Region:    orDefault(opts.Region, dora.DefaultRegion),
			Publisher: opts.Publisher,
			Logger:    opts.Logger,
			RunAs:     opts.RunAs,

			Podman:               opts.Podman,
			HealthyDeadline:      opts.HealthyDeadline,
			PackagesInContainers: opts.PackagesInContainers,
			ImageGCDelay:         opts.ImageGCDelay,
		})
		if err != nil {
			return nil, fmt.Errorf("runtime %s: %w", rawURL, err)
		}
		return rt, nil
	default: // nomad
		if err := b.checkQuery(what, "driver", "network"); err != nil {
			return nil, err
		}
		if err := b.noPath(what); err != nil {
			return nil, err
		}
		addr, err := b.hostPort(what, "4646")
		if err != nil {
			return nil, err
		}
		driver, err := b.queryOneOf(what, "driver", nomadjobs.DriverRawExec, nomadjobs.DriverExec)
		if err != nil {
			return nil, err
		}
		network, err := b.queryOneOf(what, "network", nomadruntime.NetworkHost, nomadruntime.NetworkBridge)
		if err != nil {
			return nil, err
		}
		regions := map[string]nomadruntime.RegionConfig{}
		for _, r := range opts.Regions {
			regions[r.Name] = nomadruntime.RegionConfig{NomadRegion: r.NomadRegion, Datacenters: r.Datacenters}
		}
		rt, err := nomadruntime.New(nomadruntime.Config{
			Address:       nomadScheme(os.Getenv) + "://" + addr,
			Regions:       regions,
			DefaultRegion: opts.Region,
			Driver:        driver,
			Network:       network,
			Consul:        opts.Consul,
			Logger:        opts.Logger,

			RegistryUser: opts.RegistryUser, RegistryPassword: opts.RegistryPassword,
		})
		if err != nil {
			return nil, fmt.Errorf("runtime %s: %w", rawURL, err)
		}
		return rt, nil
	}
}

// nomadScheme is the scheme of the Nomad API: https when the environment
// says TLS as Nomad's own CLI reads it (NOMAD_ADDR with https://, or a CA
// or client certificate in NOMAD_CACERT, NOMAD_CAPATH, NOMAD_CLIENT_CERT,
// whose files the API client then uses), else http.
func nomadScheme(getenv func(string) string) string {
	if strings.HasPrefix(strings.ToLower(getenv("NOMAD_ADDR")), "https://") {
		return "https"
	}
	for _, k := range []string{"NOMAD_CACERT", "NOMAD_CAPATH", "NOMAD_CLIENT_CERT"} {
		if getenv(k) != "" {
			return "https"
		}
	}
	return "http"
}
