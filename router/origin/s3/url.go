package s3

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Scheme is the URL scheme of this backend.
const Scheme = "s3"

// ErrBadURL is wrapped by every error of ParseURL.
var ErrBadURL = errors.New("bad s3:// URL")

// maxURLBytes bounds a URL (they come from flags and files).
const maxURLBytes = 4096

// ParseURL reads an objects URL:
//
//	s3://<s3-bucket>[/<prefix>]?endpoint=<http(s)://host[:port]>[&region=<r>][&path-style=true|false][&timeout=<duration>]
//
// Without endpoint the store is AWS S3 in region (default us-east-1).
// Without path-style, path-style addressing is used when the endpoint's
// host is an IP address or "localhost" (virtual-hosted names cannot work
// there), virtual-hosted addressing otherwise. Credentials never come from
// the URL: a user or password in it is refused.
func ParseURL(raw string) (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return Config{}, fmt.Errorf("objects URL %q: %w: %s", redact(raw), ErrBadURL, fmt.Sprintf(format, args...))
	}
	if len(raw) > maxURLBytes {
		return Config{}, fmt.Errorf("objects URL: %w: longer than %d bytes", ErrBadURL, maxURLBytes)
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return bad("%v", err)
	}
	if !strings.EqualFold(u.Scheme, Scheme) {
		return bad("scheme must be s3://")
	}
	if u.User != nil {
		return bad("credentials in the URL are not supported: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) instead")
	}
	if u.Opaque != "" {
		return bad("write s3://<bucket>[/<prefix>]")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return bad("unexpected fragment")
	}
	cfg := Config{Bucket: u.Host}
	if err := validBucket(cfg.Bucket); err != nil {
		return bad("%v", err)
	}
	if u.Path != "" {
		p := strings.TrimPrefix(u.Path, "/")
		p = strings.TrimSuffix(p, "/")
		if p != "" {
			if err := validPrefix(p); err != nil {
				return bad("%v", err)
			}
			cfg.Prefix = p
		}
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("query: %v", err)
	}
	pathStyle := ""
	for k, vs := range q {
		if len(vs) != 1 {
			return bad("%s given %d times", k, len(vs))
		}
		v := vs[0]
		switch k {
		case "endpoint":
			ep, err := validEndpoint(v)
			if err != nil {
				return bad("endpoint: %v", err)
			}
			cfg.Endpoint = ep
		case "region":
			if v == "" || len(v) > 64 || strings.ContainsFunc(v, func(r rune) bool {
				return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
			}) {
				return bad("region %q: 1 to 64 letters, digits, '-' or '_'", v)
			}
			cfg.Region = v
		case "path-style":
			if _, err := strconv.ParseBool(v); err != nil {
				return bad("path-style %q: true or false", v)
			}
			pathStyle = v
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d < 100*time.Millisecond || d > 10*time.Minute {
				return bad("timeout %q: a duration from 100ms to 10m", v)
			}
			cfg.Timeout = d
		default:
			return bad("unknown query parameter %q (accepted: endpoint, region, path-style, timeout)", k)
		}
	}
	if pathStyle != "" {
		cfg.PathStyle, _ = strconv.ParseBool(pathStyle)
	} else if cfg.Endpoint != "" {
		eu, _ := url.Parse(cfg.Endpoint)
		h := eu.Hostname()
		cfg.PathStyle = h == "localhost" || net.ParseIP(h) != nil
	}
	return cfg, nil
}

// validBucket applies S3's bucket naming rule, relaxed to the legacy
// names some stores still allow (capitals, '_'): 3 to 63 characters.
func validBucket(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("S3 bucket %q: 3 to 63 characters (write s3://<bucket>[/<prefix>])", b)
	}
	for i, r := range b {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && ((r != '.' && r != '-' && r != '_') || i == 0 || i == len(b)-1) {
			return fmt.Errorf("S3 bucket %q: letters, digits, '.', '-' and '_', starting and ending with a letter or digit", b)
		}
	}
	return nil
}

// validPrefix refuses a prefix that could not be a key prefix: empty,
// "." or ".." segments, control characters.
func validPrefix(p string) error {
	if len(p) > 512 {
		return fmt.Errorf("prefix longer than 512 bytes")
	}
	for _, c := range []byte(p) {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return fmt.Errorf("prefix %q holds a control character or backslash", p)
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("prefix %q: empty, \".\" or \"..\" segment", p)
		}
	}
	return nil
}

// validEndpoint accepts http(s)://host[:port] with no path, query or user.
func validEndpoint(v string) (string, error) {
	eu, err := url.Parse(v)
	if err != nil {
		return "", fmt.Errorf("%q is not a URL", v)
	}
	if eu.Scheme != "http" && eu.Scheme != "https" {
		return "", fmt.Errorf("%q: write http://host:port or https://host", v)
	}
	if eu.User != nil {
		return "", fmt.Errorf("credentials in the endpoint are not supported")
	}
	if eu.Hostname() == "" {
		return "", fmt.Errorf("%q has no host", v)
	}
	if eu.Port() != "" {
		if n, err := strconv.Atoi(eu.Port()); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%q: bad port", v)
		}
	}
	if (eu.Path != "" && eu.Path != "/") || eu.RawQuery != "" || eu.Fragment != "" {
		return "", fmt.Errorf("%q: no path or query after the host", v)
	}
	return eu.Scheme + "://" + eu.Host, nil
}

// redact hides a user:password in raw, and the values of query
// parameters other than the accepted ones (a secret_key=... is one), for
// error messages.
func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		return redactQuery(u.Redacted())
	}
	if i := strings.LastIndex(raw, "@"); i >= 0 {
		return "(URL with credentials, redacted)"
	}
	return redactQuery(raw)
}

// redactQuery replaces the values of unknown query parameters in raw, and
// any fragment, with "xxxxx".
func redactQuery(raw string) string {
	base, query, ok := strings.Cut(raw, "?")
	if !ok {
		return raw
	}
	query, _, frag := strings.Cut(query, "#")
	params := strings.Split(query, "&")
	for i, kv := range params {
		k, _, hasValue := strings.Cut(kv, "=")
		switch k {
		case "endpoint", "region", "path-style", "timeout":
			continue
		}
		if hasValue {
			params[i] = k + "=xxxxx"
		}
	}
	out := base + "?" + strings.Join(params, "&")
	if frag {
		out += "#xxxxx"
	}
	return out
}
