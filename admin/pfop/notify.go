package pfop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/doraproject/dora/router/netguard"
)

// Defaults of NotifyConfig.
const (
	DefaultNotifyAttempts  = 5
	DefaultNotifyBaseDelay = time.Second
	DefaultNotifyMaxDelay  = time.Minute
	DefaultNotifyTimeout   = 10 * time.Second
)

// ErrNotifyURL is wrapped by every refusal of a notifyURL.
var ErrNotifyURL = errors.New("bad notifyURL")

// NotifyConfig configures job-end notifications.
type NotifyConfig struct {
	// AllowPrivate lets notifications reach loopback, private, link-local
	// and other non-public addresses (dorad dev). Off by default: a user's
	// notifyURL must not be a way into the platform's own network.
	AllowPrivate bool
	// Attempts is how many POSTs are tried; delays between them double
	// from BaseDelay up to MaxDelay.
	Attempts            int
	BaseDelay, MaxDelay time.Duration
	// Timeout bounds one attempt.
	Timeout time.Duration
}

// Notifier POSTs a job's status JSON to its notifyURL.
type Notifier struct {
	cfg    NotifyConfig
	client *http.Client
}

// NewNotifier returns a Notifier whose HTTP client refuses, at connect
// time (after DNS, so a name cannot be rebound to a private address), the
// addresses AllowPrivate does not allow; it follows no redirect and uses
// no proxy.
func NewNotifier(cfg NotifyConfig) *Notifier {
	if cfg.Attempts <= 0 {
		cfg.Attempts = DefaultNotifyAttempts
	}
	if cfg.BaseDelay <= 0 {
		cfg.BaseDelay = DefaultNotifyBaseDelay
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = DefaultNotifyMaxDelay
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultNotifyTimeout
	}
	check := netguard.Check
	if cfg.AllowPrivate {
		check = netguard.CheckNotSensitive // link-local and metadata addresses stay refused
	}
	d := &net.Dialer{Timeout: cfg.Timeout, Control: func(_, address string, _ syscall.RawConn) error {
		if err := check(address); err != nil {
			return fmt.Errorf("%w: %w", ErrNotifyURL, err)
		}
		return nil
	}}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		MaxIdleConns:          10,
		IdleConnTimeout:       30 * time.Second,
	}
	return &Notifier{cfg: cfg, client: &http.Client{
		Transport:     tr,
		Timeout:       cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// publicAddr reports whether a is a routable public unicast address, by
// the rule the router's mirror client applies too (router/netguard).
func publicAddr(a netip.Addr) bool { return netguard.Public(a) }

// CheckURL checks a notifyURL when a job is submitted: http or https, a
// host, no credentials, and, unless AllowPrivate, not a loopback or
// private literal address nor "localhost". Names are checked again
// when connecting.
func (n *Notifier) CheckURL(raw string) error {
	if len(raw) > MaxNotifyURL {
		return fmt.Errorf("%w: longer than %d bytes", ErrNotifyURL, MaxNotifyURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotifyURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%w: scheme must be http or https", ErrNotifyURL)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%w: no host", ErrNotifyURL)
	}
	if u.User != nil {
		return fmt.Errorf("%w: credentials in the URL", ErrNotifyURL)
	}
	if n.cfg.AllowPrivate {
		return nil
	}
	h := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return fmt.Errorf("%w: %s is not a public host", ErrNotifyURL, h)
	}
	if a, err := netip.ParseAddr(h); err == nil && !publicAddr(a) {
		return fmt.Errorf("%w: %s is not a public address", ErrNotifyURL, a)
	}
	return nil
}

// Notify POSTs body (JSON) to rawURL until a 2xx answer, at most Attempts
// times with exponential backoff; it returns the last failure.
func (n *Notifier) Notify(ctx context.Context, rawURL string, body []byte) error {
	if err := n.CheckURL(rawURL); err != nil {
		return err
	}
	delay := n.cfg.BaseDelay
	var last error
	for attempt := 1; attempt <= n.cfg.Attempts; attempt++ {
		last = n.post(ctx, rawURL, body)
		if last == nil {
			return nil
		}
		if errors.Is(last, ErrNotifyURL) || attempt == n.cfg.Attempts {
			break
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("notify %s: %w (last: %v)", rawURL, ctx.Err(), last)
		case <-t.C:
		}
		delay = min(delay*2, n.cfg.MaxDelay)
	}
	return fmt.Errorf("notify %s: %w", rawURL, last)
}

func (n *Notifier) post(ctx context.Context, rawURL string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotifyURL, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("receiver answered %d", resp.StatusCode)
	}
	return nil
}
