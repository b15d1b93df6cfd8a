package admin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/router/netguard"
)

// The bucket rules: which names, domains and mirrors a bucket may have, as
// plain functions of the request, the platform's settings and now,
// table-tested alone (bucketrules_test.go). The handlers in buckets.go
// decode, call, write the records and encode.

// MaxDomainsPerBucket caps the host names bound to one bucket.
const MaxDomainsPerBucket = 20

// normalizeDomain lowercases a host name and checks it is one a bucket may
// bind: no port, no scheme, DNS labels of a-z 0-9 -, at least one dot, and
// not a name that would shadow something else on the router: no IP literal
// (the router's one-shot URLs use its own address as Host), no localhost or
// *.localhost, nothing equal to or under suffix (the platform's
// <bucket>.<suffix> names, which belong to other accounts' buckets).
func normalizeDomain(d, suffix string) (string, error) {
	raw := d
	d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
	if d == "" || len(d) > 253 {
		return "", fmt.Errorf("domain %q: must be a host name of 1 to 253 characters", truncateName(raw))
	}
	if ip := net.ParseIP(strings.Trim(d, "[]")); ip != nil {
		return "", fmt.Errorf("domain %q: IP addresses cannot be bound, only host names", d)
	}
	labels := strings.Split(d, ".")
	for _, label := range labels {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", fmt.Errorf("domain %q: bad label %q", d, label)
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("domain %q: only a-z 0-9 - and dots are allowed", d)
			}
		}
	}
	switch {
	case len(labels) < 2:
		return "", fmt.Errorf("domain %q: must be a fully qualified name with a dot (e.g. img.example.com)", d)
	case allDigits(labels[len(labels)-1]):
		// No top-level domain is numeric: "127.1", "10.0.1" are addresses.
		return "", fmt.Errorf("domain %q: IP addresses cannot be bound, only host names", d)
	case d == "localhost" || strings.HasSuffix(d, ".localhost"):
		return "", fmt.Errorf("domain %q: localhost names cannot be bound", d)
	}
	if suffix = strings.Trim(strings.ToLower(suffix), "."); suffix != "" && (d == suffix || strings.HasSuffix(d, "."+suffix)) {
		return "", fmt.Errorf("domain %q: names under %q are the platform's own (<bucket>.%s); bind a domain of yours", d, suffix, suffix)
	}
	return d, nil
}

func allDigits(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

func truncateName(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// validateMirror checks a mirror URL prefix: http(s), a host, no user
// info; and, unless allowPrivate, a host that is no localhost name nor an
// IP literal of a loopback, private, link-local, unspecified, multicast or
// shared (CGNAT) address, so that a bucket cannot turn the router into a
// proxy to the platform's own network. (Names that resolve to such
// addresses are the dial-time guard's business.)
func validateMirror(m string, allowPrivate bool) error {
	if m == "" {
		return nil
	}
	if len(m) > 1024 {
		return errors.New("mirror: at most 1024 bytes")
	}
	u, err := url.Parse(m)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return fmt.Errorf("mirror %q: must be an http(s) URL prefix with a host", m)
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if addr, err := netip.ParseAddr(host); err == nil && netguard.Sensitive(addr) {
		return fmt.Errorf("mirror %q: %s is a link-local or cloud metadata address, never allowed as a mirror", m, addr)
	}
	if allowPrivate {
		return nil
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return fmt.Errorf("mirror %q: localhost is not allowed as a mirror", m)
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if !netguard.Public(addr) {
			return fmt.Errorf("mirror %q: %s is a loopback, private, link-local or unspecified address, not allowed as a mirror", m, addr)
		}
		return nil
	}
	if labels := strings.Split(host, "."); allDigits(labels[len(labels)-1]) || strings.HasPrefix(labels[len(labels)-1], "0x") {
		// "127.1", "2130706433", "0x7f.0x1": address shorthands a resolver may accept.
		return fmt.Errorf("mirror %q: write an address in full (a.b.c.d) or use a host name", m)
	}
	return nil
}

// bucketRequest is the body of POST /v1/buckets.
type bucketRequest struct {
	Name    string   `json:"name"`
	Private bool     `json:"private"`
	Domains []string `json:"domains"`
	Mirror  string   `json:"mirror"`
}

// planBucket is the bucket req asks owner to create at now: a valid name
// that is not the platform's own, at most MaxDomainsPerBucket domains,
// each normalized (normalizeDomain with the platform's suffix) and kept
// once in the order given, and a mirror validateMirror accepts
// (allowPrivateMirror: the operator lets mirrors point at private
// addresses). Refusals are ErrInvalid RuleErrors (400).
func planBucket(req bucketRequest, owner, suffix string, allowPrivateMirror bool, now time.Time) (dora.Bucket, error) {
	if err := dora.ValidateBucketName(req.Name); err != nil {
		return dora.Bucket{}, refuse(ErrInvalid, "name: %v", err)
	}
	if req.Name == dora.SystemBucket {
		return dora.Bucket{}, refuse(ErrInvalid, "name: %q is reserved for the platform's own files", req.Name)
	}
	if len(req.Domains) > MaxDomainsPerBucket {
		return dora.Bucket{}, refuse(ErrInvalid, "domains: at most %d", MaxDomainsPerBucket)
	}
	var domains []string
	for _, d := range req.Domains {
		nd, err := checkDomain(d, suffix)
		if err != nil {
			return dora.Bucket{}, err
		}
		if !slices.Contains(domains, nd) {
			domains = append(domains, nd)
		}
	}
	if err := validateMirror(req.Mirror, allowPrivateMirror); err != nil {
		return dora.Bucket{}, refuse(ErrInvalid, "%v", err)
	}
	return dora.Bucket{Name: req.Name, Owner: owner, Private: req.Private, Domains: domains, Mirror: req.Mirror, Created: now}, nil
}

// checkDomain is normalizeDomain with its refusal as an ErrInvalid
// RuleError (400).
func checkDomain(d, suffix string) (string, error) {
	nd, err := normalizeDomain(d, suffix)
	if err != nil {
		return "", refuse(ErrInvalid, "%v", err)
	}
	return nd, nil
}

// bindDomain is b with the normalized domain d added (the list kept
// sorted); added is false when b already has it. A bucket holding
// MaxDomainsPerBucket domains takes no more (ErrInvalid).
func bindDomain(b dora.Bucket, d string) (_ dora.Bucket, added bool, _ error) {
	if slices.Contains(b.Domains, d) {
		return b, false, nil
	}
	if len(b.Domains) >= MaxDomainsPerBucket {
		return b, false, refuse(ErrInvalid, "domains: at most %d per bucket", MaxDomainsPerBucket)
	}
	b.Domains = append(slices.Clone(b.Domains), d)
	slices.Sort(b.Domains)
	return b, true, nil
}
