// Package router is Dora's data plane: it serves objects of buckets by Host
// and streams them through pipelines of fops (`GET /<key>?a/x|b/y`), calling
// ufop instances picked from the pool and running built-in fops itself.
//
// Every body is a stream end to end: the object, each instance's response
// and the client's response are never fully buffered, so memory per request
// is O(1) in the object size. Instances read their input from one-shot URLs
// the router serves itself (see src.go); metadata comes from an in-memory
// snapshot kept fresh by watching the store (router/meta); load figures are
// flushed once a second off the request path (load.go).
package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler/load"
	"github.com/doraproject/dora/internal/connlimit"
	"github.com/doraproject/dora/internal/headsize"
	"github.com/doraproject/dora/internal/rawio"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/builtin"
	"github.com/doraproject/dora/router/meta"
	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/rescache"
)

// Defaults of the optional Config fields.
const (
	DefaultDeadline        = 10 * time.Minute
	DefaultSrcTTL          = 60 * time.Second
	DefaultReadTimeout     = 30 * time.Second
	DefaultIdleTimeout     = 60 * time.Second
	DefaultMaxHeaderBytes  = 16 << 10
	DefaultMaxRequestBody  = 64 << 10
	DefaultConcurrency     = 16 << 10
	DefaultMaxErrorBytes   = 64 << 10 // a program's error body passed to the client, at most
	DefaultBufferedBodyMax = 256 << 10
	DefaultShutdownGrace   = 5 * time.Second
	// DefaultResultCacheBytes bounds the result cache (result.go);
	// DefaultResultCacheEntry is the largest result it keeps.
	DefaultResultCacheBytes = 64 << 20
	DefaultResultCacheEntry = 1 << 20
	// DefaultResultCacheDiskBytes bounds the result cache's disk tier
	// when Config.ResultCacheDir is set; DefaultResultCacheDiskEntry is
	// the largest result it keeps.
	DefaultResultCacheDiskBytes = 1 << 30
	DefaultResultCacheDiskEntry = 64 << 20
)

// Config wires the router to its parts. Store, Objects and Pool are
// required; the rest have defaults.
// MirrorSource reads objects from a bucket's back-to-source mirror:
// At(base) is the reader of the objects under the bucket's mirror URL, which
// the router takes from its metadata (httpmirror.Mirror is one).
type MirrorSource interface {
	At(baseURL string) origin.Reader
}

type Config struct {
	// Store is watched for accounts/, aks/, buckets/, domains/, ufops/ and
	// releases/ (the meta cache; ignored when Meta is set), and read for
	// the results pfop saved (`?p/1/<fop>`; none when Store is nil).
	Store store.Store
	// Meta, when set, replaces the store-backed cache (tests, embedding).
	Meta MetaSource

	Objects origin.Reader
	Writer  origin.Writer // saveas target; saveas answers 501 when nil
	Mirror  MirrorSource  // back-to-source for a bucket with Mirror set; may be nil

	Pool         *pool.Pool
	Load         load.Recorder // may be nil: figures are then only counted
	Region       string        // dora.DefaultRegion when empty
	DomainSuffix string        // "localhost" when empty
	// Builtins are the tools and fonts the built-in fops use (ffprobe,
	// jpegtran, the DejaVu fonts); the zero value finds them on PATH and in
	// builtin.DefaultFontDir. Its Fetch is ignored: the router reads
	// watermark images from its own buckets.
	Builtins builtin.Env
	// PublicAddr is the host:port instances use to reach the router's
	// one-shot input URLs. Serve fills it from the listener when empty.
	PublicAddr string
	// OwnHosts are extra host names (port ignored) naming the router
	// itself, beside "localhost", loopback literals and the host of
	// PublicAddr: on them /healthz, /metrics and the one-shot input URLs
	// answer, and a domain binding of the store naming one is ignored
	// (logged), so that no bucket can shadow them.
	OwnHosts []string
	// TrustedProxies are the addresses of the TLS-terminating proxies or
	// load balancers in front of the router. A request whose connection
	// comes from one of them and says X-Forwarded-Proto: https counts as
	// https where the scheme matters (a private bucket's download token
	// signs it); from any other address the header is ignored, so that a
	// client cannot choose the scheme. Empty: only a TLS connection to the
	// router itself is https.
	TrustedProxies []netip.Prefix

	Logger  *slog.Logger
	Metrics prometheus.Registerer // may be nil: metrics are then kept private

	// Deadline bounds a whole request, pipeline included, and the time to
	// write any one response (the server's WriteTimeout).
	Deadline time.Duration
	// SrcTTL is how long a one-shot input URL stays valid unclaimed.
	SrcTTL time.Duration
	// ReadTimeout bounds reading one request's headers; IdleTimeout a
	// keep-alive connection's wait for the next request.
	ReadTimeout, IdleTimeout time.Duration
	// MaxHeaderBytes limits the request line and headers (fasthttp's
	// ReadBufferSize); MaxRequestBody the request body (the router serves
	// GET and HEAD only).
	MaxHeaderBytes, MaxRequestBody int
	// Concurrency caps the connections served at once (also bounded by
	// Conns).
	Concurrency int
	// Conns guards the listener Serve serves: accept errors such as
	// EMFILE are retried with backoff rather than fatal, connections over
	// its shedding threshold get a 503, and the connections open at once
	// stay under its cap. Share one Limiter among a process's listeners;
	// nil: a Limiter derived from RLIMIT_NOFILE.
	Conns *connlimit.Limiter
	// ShutdownGrace is how long Serve lets in-flight requests finish
	// once its context ends (DefaultShutdownGrace when 0); then every
	// pipeline still running is cancelled and its instance connections
	// closed.
	ShutdownGrace time.Duration
	// Now is the clock (tests); time.Now when nil.
	Now func() time.Time

	// HoldTimeout bounds how long a request waits for an instance of a
	// ufop that has none (scale from zero), DefaultHoldTimeout when 0;
	// negative answers 503 at once. MaxHeld bounds the requests waiting
	// at once (DefaultMaxHeld when 0); beyond it, 503 at once.
	HoldTimeout time.Duration
	MaxHeld     int

	// MaxImageJobs bounds the built-in steps that decode whole images or
	// start a process (heavySteps: imageView2, imageMogr2, watermark,
	// imageAve, avinfo) running at once in this router, each up to
	// hundreds of MB and seconds of CPU (DefaultMaxImageJobs when 0). A
	// step beyond it waits for a slot up to 10 s (or its deadline), then
	// answers 503.
	MaxImageJobs int

	// ResultCacheBytes bounds the memory of the result cache
	// (DefaultResultCacheBytes when 0; negative disables the cache);
	// ResultCacheEntry is the largest result kept (DefaultResultCacheEntry
	// when 0). See result.go.
	ResultCacheBytes, ResultCacheEntry int64
	// ResultCacheDir, when set, adds a disk tier to the result cache: a
	// directory of its own (created if missing, swept at start, locked
	// against a second router), holding at most ResultCacheDiskBytes
	// (DefaultResultCacheDiskBytes when 0) of results of up to
	// ResultCacheDiskEntry bytes each (DefaultResultCacheDiskEntry when
	// 0). Results larger than ResultCacheEntry are kept only there and
	// streamed from it. Ignored when the cache is disabled. Close releases
	// the directory.
	ResultCacheDir                             string
	ResultCacheDiskBytes, ResultCacheDiskEntry int64
}

// MetaSource hands out the current metadata snapshot; *meta.Cache is one.
type MetaSource interface {
	Snapshot() *meta.Snapshot
}

// Router serves bucket objects and processing pipelines. Create it with
// New, start its background loops with Run, serve with Serve or Handler.
type Router struct {
	cfg Config
	log *slog.Logger
	// realClock is set when now is time.Now (Config.Now nil): a time
	// just read from the real clock then serves as the router's now too
	// (nowAt), saving a clock read, which costs ~0.1-0.3 µs on a VM.
	realClock bool
	// objectsKeepNoContext: Config.Objects is a noContextKeeper
	// (pipelines).
	objectsKeepNoContext bool
	// pipelines recycles the HTTP path's pipelines whose lifetime is
	// provably over once their response is (pipeline.recycle); the
	// router's own, not a package variable, so that no pipeline moves
	// between routers (tests run many in one process).
	pipelines sync.Pool
	// requests recycles the requests' bookkeeping (handler.go request:
	// the lifetime rules).
	requests sync.Pool
	// imageJobs holds a token per heavy built-in step running
	// (Config.MaxImageJobs); a step waits imageWait at most for one.
	imageJobs chan struct{}
	imageWait time.Duration
	// unfinished counts the requests taken from requests and not yet
	// released: Serve's shutdown waits for it to reach zero.
	unfinished atomic.Int64
	meta       MetaSource
	cache      *meta.Cache // nil when cfg.Meta was given
	now        func() time.Time
	src        *srcRegistry
	clients    *clients
	load       *loadCounters
	metrics    *metrics
	own        map[string]bool
	// ownWarned maps an own host name bound to a bucket in the store to
	// the snapshot last logged about (handler.go ignoreOwnDomain); only
	// own host names are keys, so it stays small.
	ownWarned sync.Map
	reqPfx    string
	reqSeq    atomic.Uint64
	addrOnce  sync.Once
	public    atomic.Pointer[publicAddr]
	held      atomic.Int64 // requests waiting for an instance (hold.go)
	watch     *connWatch   // cancels the pipelines of clients that left (cancel.go)
	// stopped ends when Serve's shutdown grace is over: the parent of the
	// HTTP path's pipelines.
	stopped context.Context
	stop    context.CancelFunc
	// deadline hands out the HTTP path's shared deadline contexts
	// (children of stopped, Config.Deadline): deadline.go.
	deadline *deadlines
	results  *rescache.Cache // nil: no result cache
	hot      hotRoutes       // routes of cached results (result.go serveHot)
	ccMu     sync.RWMutex
	cc       map[ccKey]string // Cache-Control values (result.go)
}

// Sentinel configuration errors.
var ErrConfig = errors.New("router: bad config")

// New checks cfg and builds a router.
func New(cfg Config) (*Router, error) {
	var missing []string
	if cfg.Store == nil && cfg.Meta == nil {
		missing = append(missing, "Store")
	}
	if cfg.Objects == nil {
		missing = append(missing, "Objects")
	}
	if cfg.Pool == nil {
		missing = append(missing, "Pool")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: missing %s", ErrConfig, strings.Join(missing, ", "))
	}
	if cfg.Region == "" {
		cfg.Region = dora.DefaultRegion
	}
	if cfg.DomainSuffix == "" {
		cfg.DomainSuffix = "localhost"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	setDefault(&cfg.Deadline, DefaultDeadline)
	setDefault(&cfg.SrcTTL, DefaultSrcTTL)
	setDefault(&cfg.ReadTimeout, DefaultReadTimeout)
	setDefault(&cfg.IdleTimeout, DefaultIdleTimeout)
	setDefault(&cfg.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(&cfg.MaxRequestBody, DefaultMaxRequestBody)
	setDefault(&cfg.Concurrency, DefaultConcurrency)
	setDefault(&cfg.MaxHeld, DefaultMaxHeld)
	setDefault(&cfg.MaxImageJobs, DefaultMaxImageJobs())
	setDefault(&cfg.ShutdownGrace, DefaultShutdownGrace)
	if cfg.HoldTimeout == 0 {
		cfg.HoldTimeout = DefaultHoldTimeout
	}
	realClock := cfg.Now == nil
	if realClock {
		cfg.Now = time.Now
	}
	if cfg.Conns == nil {
		cfg.Conns = connlimit.New(connlimit.Config{Logger: cfg.Logger})
	}
	cfg.Concurrency = min(cfg.Concurrency, cfg.Conns.Max())
	r := &Router{
		cfg:       cfg,
		log:       cfg.Logger,
		now:       cfg.Now,
		realClock: realClock,
		src:       newSrcRegistry(),
		clients:   newClients(),
		load:      newLoadCounters(cfg.Now()),
		own:       map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true},
		watch:     newConnWatch(watchPoll),
		cc:        map[ccKey]string{},
		imageJobs: make(chan struct{}, cfg.MaxImageJobs),
		imageWait: defaultImageWait,
	}
	_, r.objectsKeepNoContext = cfg.Objects.(noContextKeeper)
	r.stopped, r.stop = context.WithCancel(context.Background())
	r.deadline = newDeadlines(r.stopped, cfg.Deadline)
	if cfg.Meta != nil {
		r.meta = cfg.Meta
	} else {
		r.cache = meta.NewCache(cfg.Store, cfg.Logger)
		r.meta = r.cache
	}
	for _, h := range cfg.OwnHosts {
		r.own[meta.HostName(h)] = true
	}
	if cfg.PublicAddr != "" {
		r.setPublicAddr(cfg.PublicAddr)
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("router: request id prefix: %w", err)
	}
	r.reqPfx = hex.EncodeToString(b[:])
	if cfg.ResultCacheBytes >= 0 {
		setDefault(&cfg.ResultCacheBytes, DefaultResultCacheBytes)
		setDefault(&cfg.ResultCacheEntry, DefaultResultCacheEntry)
		o := rescache.Options{MemBytes: cfg.ResultCacheBytes, MemEntry: cfg.ResultCacheEntry, Dir: cfg.ResultCacheDir}
		if o.Dir != "" {
			setDefault(&cfg.ResultCacheDiskBytes, DefaultResultCacheDiskBytes)
			setDefault(&cfg.ResultCacheDiskEntry, DefaultResultCacheDiskEntry)
			o.DiskBytes, o.DiskEntry = cfg.ResultCacheDiskBytes, cfg.ResultCacheDiskEntry
		}
		res, err := rescache.Open(o, cfg.Now())
		if err != nil {
			return nil, fmt.Errorf("router: result cache: %w", err)
		}
		r.results = res
		r.cfg = cfg
	}
	// Last: once registered, the collectors may be gathered at any time
	// (another goroutine scraping the registry) and read r.cfg.
	m, err := newMetrics(cfg.Metrics, r)
	if err != nil {
		_ = r.Close()
		return nil, fmt.Errorf("router: metrics: %w", err)
	}
	r.metrics = m
	return r, nil
}

// Close releases what New took beyond memory: the result cache's
// directory (its entries stay for the next router). Call it once the
// router no longer serves.
func (r *Router) Close() error {
	if r.results == nil {
		return nil
	}
	return r.results.Close()
}

func setDefault[T int | int64 | time.Duration](p *T, d T) {
	if *p <= 0 {
		*p = d
	}
}

// publicAddr is Config.PublicAddr (or the listener's address) and its
// host name as meta.HostName gives it, computed once rather than per
// request (isOwnHost).
type publicAddr struct{ addr, host string }

func (r *Router) setPublicAddr(addr string) {
	r.public.Store(&publicAddr{addr: addr, host: meta.HostName(addr)})
}

// waitFinished waits until every request the server handed to the
// router has finished (its answer written or abandoned, its access line
// logged), for at most limit.
func (r *Router) waitFinished(limit time.Duration) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	end := time.Now().Add(limit)
	for r.unfinished.Load() > 0 && time.Now().Before(end) {
		<-t.C
	}
}

// nowAt is the router's clock at t, a time the caller has just read from
// the real clock: t itself when the router's clock is the real one, else
// Config.Now().
func (r *Router) nowAt(t time.Time) time.Time {
	if r.realClock {
		return t
	}
	return r.now()
}

// isOwnHost reports whether a Host header names the router itself rather
// than a bucket: "localhost", a loopback literal, the host of PublicAddr or
// one of Config.OwnHosts.
func (r *Router) isOwnHost(host string) bool {
	h := meta.HostName(host)
	if r.own[h] {
		return true
	}
	p := r.public.Load()
	return p != nil && p.host == h
}

// publicAddr is the host:port of the one-shot URLs.
func (r *Router) publicAddr() string {
	if p := r.public.Load(); p != nil {
		return p.addr
	}
	return "127.0.0.1:8080"
}

// Ready is closed once the metadata cache holds every prefix (immediately
// when Config.Meta was given).
func (r *Router) Ready() <-chan struct{} {
	if r.cache != nil {
		return r.cache.Ready()
	}
	return closedChan
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (r *Router) isReady() bool {
	select {
	case <-r.Ready():
		return true
	default:
		return false
	}
}

// Run runs the background loops until ctx ends: the metadata watch, the
// load flush (every second to Config.Load) and the sweep of idle instance
// clients. Pool discovery is the caller's (pool.Run).
func (r *Router) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	if r.cache != nil {
		wg.Go(func() { r.cache.Run(ctx) })
	}
	wg.Go(func() { r.runLoad(ctx) })
	wg.Go(func() { r.clients.sweep(ctx, r.now) })
	wg.Wait()
	return ctx.Err()
}

// serverWriteBuffer is the server's response write buffer: headers and a
// small body (an object of a few KiB, a one-shot input) leave in one
// write, where fasthttp's 4 KiB default takes two and, past the buffer,
// a fresh 32 KiB copy buffer per response (net.TCPConn.ReadFrom).
const serverWriteBuffer = 16 << 10

// Server returns a fasthttp server for the router's handler, configured
// with the router's limits: ReadTimeout (request headers), WriteTimeout
// (= the pipeline deadline, since fasthttp arms it once per response),
// IdleTimeout, ReadBufferSize (the header limit), MaxRequestBodySize,
// Concurrency and StreamRequestBody (a body is never buffered whole).
// Serve itself runs it without the three timeouts, which its connections
// enforce (srvConn) at a lower cost per request.
func (r *Router) Server() *fasthttp.Server {
	srv := r.server()
	srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout = r.cfg.ReadTimeout, r.cfg.Deadline, r.cfg.IdleTimeout
	return srv
}

// server is Server without the timeouts: Serve enforces them in its
// connections instead (srvConn, deadline.go).
func (r *Router) server() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      r.Handler(),
		ErrorHandler:                 r.serverError,
		Name:                         "dora",
		ReadBufferSize:               r.cfg.MaxHeaderBytes,
		WriteBufferSize:              serverWriteBuffer,
		MaxRequestBodySize:           r.cfg.MaxRequestBody,
		Concurrency:                  r.cfg.Concurrency,
		StreamRequestBody:            true,
		NoDefaultDate:                false,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		Logger:                       fasthttpLogger{r.log},
	}
}

// Serve serves ln until ctx ends, then shuts down gracefully: in-flight
// requests get Config.ShutdownGrace to finish, then every pipeline still
// running is cancelled (its instances see their requests cancelled) and
// Serve returns once their handlers have. A Router serves once. When
// Config.PublicAddr is empty, the listener's address becomes the address
// of the one-shot input URLs.
func (r *Router) Serve(ctx context.Context, ln net.Listener) error {
	if r.public.Load() == nil {
		r.setPublicAddr(ln.Addr().String())
	}
	srv := r.server()
	ln = &srvListener{Listener: headsize.Listen(r.cfg.Conns.Listen(rawio.Listen(ln)), 0),
		t: newSrvTimeouts(r.cfg.ReadTimeout, r.cfg.IdleTimeout, r.cfg.Deadline)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if ctx.Err() == nil {
			return fmt.Errorf("router: serve: %w", err)
		}
		// ctx ended and the listener was closed before this select saw
		// it ("use of closed network connection"): that is the shutdown
		// asked for, not a failure; finish it like one.
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownGrace)
	defer cancel()
	err := srv.ShutdownWithContext(sctx)
	r.stop()
	if errors.Is(err, context.DeadlineExceeded) {
		// The cancelled pipelines end their handlers promptly; wait for
		// them (bounded) so that no instance call, access log line or
		// metric outlives Serve. (A second ShutdownWithContext would
		// not: it returns at once once the listeners are closed.)
		r.waitFinished(5 * time.Second)
	}
	// fasthttp's shutdown closes the listener; one its owner closed
	// already ("use of closed network connection") is no failure.
	if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("router: shutdown: %w", err)
	}
	return nil
}

// serverError answers requests fasthttp rejects before the handler runs
// (oversized headers or body, timeouts, garbage) with the JSON error shape.
func (r *Router) serverError(ctx *fasthttp.RequestCtx, err error) {
	status := fasthttp.StatusBadRequest
	msg := "bad request"
	var tooBig *fasthttp.ErrSmallBuffer
	switch {
	case errors.As(err, &tooBig) && headsize.LineTooLong(ctx.Conn(), r.cfg.MaxHeaderBytes):
		// The head buffer filled before the request line ended.
		status, msg = fasthttp.StatusRequestURITooLong, "request URI too long"
	case errors.As(err, &tooBig):
		status, msg = fasthttp.StatusRequestHeaderFieldsTooLarge, "request headers too large"
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		status, msg = fasthttp.StatusRequestEntityTooLarge, "request body too large"
	default:
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			status, msg = fasthttp.StatusRequestTimeout, "request timeout"
		}
	}
	ctx.Response.Header.Set("X-Reqid", r.newReqid())
	writeError(ctx, status, msg)
	ctx.SetConnectionClose()
}

// newReqid returns a process-unique request id: a random prefix chosen at
// start and a sequence number.
func (r *Router) newReqid() string {
	var b [32]byte
	return string(r.appendRawReqid(b[:0]))
}

// appendReqid is newReqid whose bytes live in buf (32 bytes of room: no
// allocation): the string points into buf, which must never be written
// again (a request's own idBuf).
func (r *Router) appendReqid(buf []byte) string {
	b := r.appendRawReqid(buf)
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func (r *Router) appendRawReqid(buf []byte) []byte {
	buf = append(buf, r.reqPfx...)
	return strconv.AppendUint(buf, r.reqSeq.Add(1), 16)
}

// fasthttpLogger sends fasthttp's own messages to slog.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp: " + fmt.Sprintf(format, args...))
}
