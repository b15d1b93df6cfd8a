// Package httpguard gives a net/http server deadlines that a client,
// authenticated or not, cannot stretch: request headers within
// HeaderTimeout, a request body at no less than MinBodyRate after a grace
// period (large uploads stay possible, a trickling body does not), each
// response write within WriteStall, and an idle keep-alive connection
// closed after IdleTimeout.
//
// Body and write deadlines are per request, set through
// http.ResponseController, so a slow upload is cut without a global
// ReadTimeout that would also cut a legitimate large one.
package httpguard

import (
	"io"
	"net"
	"net/http"
	"time"

	"github.com/doraproject/dora/internal/headsize"
)

// Defaults of Config.
const (
	DefaultHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout   = 2 * time.Minute
	DefaultBodyGrace     = 15 * time.Second
	DefaultMinBodyRate   = 8 << 10 // bytes per second
	DefaultWriteStall    = time.Minute
	DefaultMaxHeader     = 64 << 10
)

// Config holds the bounds; zero fields take the defaults.
type Config struct {
	// HeaderTimeout bounds reading the request line and headers.
	HeaderTimeout time.Duration
	// IdleTimeout bounds a keep-alive connection's wait for the next
	// request.
	IdleTimeout time.Duration
	// BodyGrace and MinBodyRate bound reading a request body: byte n must
	// arrive by start + BodyGrace + n/MinBodyRate.
	BodyGrace   time.Duration
	MinBodyRate int64
	// WriteStall bounds one response write (a client that stops reading).
	WriteStall time.Duration
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes int
}

func (c *Config) defaults() {
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = DefaultHeaderTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.BodyGrace <= 0 {
		c.BodyGrace = DefaultBodyGrace
	}
	if c.MinBodyRate <= 0 {
		c.MinBodyRate = DefaultMinBodyRate
	}
	if c.WriteStall <= 0 {
		c.WriteStall = DefaultWriteStall
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = DefaultMaxHeader
	}
}

// Server returns an http.Server serving h with cfg's deadlines.
// WriteTimeout is WriteStall: net/http arms it as each request head is
// read, which bounds the answers it writes itself (400, 431) to a client
// that stopped reading; the handler's writes get their own (Wrap).
func Server(h http.Handler, cfg Config) *http.Server {
	cfg.defaults()
	return &http.Server{
		Handler:           Wrap(h, cfg),
		ReadHeaderTimeout: cfg.HeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		WriteTimeout:      cfg.WriteStall,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
	}
}

// Listen wraps ln for srv (a Server of this package): a request line or
// headers over srv's MaxHeaderBytes get a JSON 414 URI Too Long or 431
// Request Header Fields Too Large instead of net/http's plain-text 431
// for both (internal/headsize).
func Listen(ln net.Listener, srv *http.Server) net.Listener {
	return headsize.Listen(ln, headsize.NetHTTPWindow(srv.MaxHeaderBytes))
}

// Wrap applies the per-request body and write deadlines to h.
func Wrap(h http.Handler, cfg Config) http.Handler {
	cfg.defaults()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		start := time.Now()
		if r.Body != nil && r.Body != http.NoBody {
			// Arm the first deadline now: a handler that never reads
			// the body still has the connection bounded.
			_ = rc.SetReadDeadline(start.Add(cfg.BodyGrace))
			r.Body = &rateBody{ReadCloser: r.Body, rc: rc, start: start, cfg: &cfg}
		}
		_ = rc.SetWriteDeadline(start.Add(cfg.WriteStall))
		// The server flushes a buffered response after the handler
		// returns: give that flush its own stall window.
		defer func() { _ = rc.SetWriteDeadline(time.Now().Add(cfg.WriteStall)) }()
		h.ServeHTTP(&stallWriter{ResponseWriter: w, rc: rc, stall: cfg.WriteStall}, r)
	})
}

// rateBody moves the connection's read deadline as the body arrives.
type rateBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	start time.Time
	n     int64
	cfg   *Config
}

func (b *rateBody) Read(p []byte) (int, error) {
	allowed := b.cfg.BodyGrace + time.Duration(float64(b.n)/float64(b.cfg.MinBodyRate)*float64(time.Second))
	_ = b.rc.SetReadDeadline(b.start.Add(allowed))
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// stallWriter bounds every write of the response.
type stallWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
}

func (w *stallWriter) Write(p []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.stall))
	return w.ResponseWriter.Write(p)
}

// Flush forwards to the underlying writer (streamed logs, events).
func (w *stallWriter) Flush() {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.stall))
	_ = w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
