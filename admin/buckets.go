package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strings"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/netguard"
)

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

func (s *Server) createBucket(w http.ResponseWriter, r *http.Request, c *call) error {
	var req struct {
		Name    string   `json:"name"`
		Private bool     `json:"private"`
		Domains []string `json:"domains"`
		Mirror  string   `json:"mirror"`
	}
	if err := c.decode(r, &req); err != nil {
		return err
	}
	if err := dora.ValidateBucketName(req.Name); err != nil {
		return errf(http.StatusBadRequest, "name: %v", err)
	}
	if req.Name == dora.SystemBucket {
		return errf(http.StatusBadRequest, "name: %q is reserved for the platform's own files", req.Name)
	}
	if len(req.Domains) > MaxDomainsPerBucket {
		return errf(http.StatusBadRequest, "domains: at most %d", MaxDomainsPerBucket)
	}
	var domains []string
	seen := map[string]bool{}
	for _, d := range req.Domains {
		nd, err := normalizeDomain(d, s.cfg.DomainSuffix)
		if err != nil {
			return errf(http.StatusBadRequest, "%v", err)
		}
		if !seen[nd] {
			seen[nd] = true
			domains = append(domains, nd)
		}
	}
	if err := validateMirror(req.Mirror, s.cfg.AllowPrivateMirror); err != nil {
		return errf(http.StatusBadRequest, "%v", err)
	}
	b := dora.Bucket{Name: req.Name, Owner: c.acct.ID, Private: req.Private, Domains: domains, Mirror: req.Mirror, Created: s.nowUTC()}
	ops := []store.Op{{Kind: store.OpPut, Key: store.BucketKey(b.Name), Value: mustJSON(b), CreateOnly: true}}
	for _, d := range domains {
		ops = append(ops, store.Op{Kind: store.OpPut, Key: store.DomainKey(d), Value: []byte(b.Name), CreateOnly: true})
	}
	if err := s.st.Txn(r.Context(), ops); errors.Is(err, store.ErrConflict) {
		return s.whichTaken(r.Context(), b.Name, domains)
	} else if err != nil {
		return fmt.Errorf("create bucket %s: %w", b.Name, err)
	}
	writeJSON(w, http.StatusCreated, b)
	return nil
}

// whichTaken names the bucket or domain that made a create conflict.
func (s *Server) whichTaken(ctx context.Context, name string, domains []string) error {
	if _, err := s.st.Get(ctx, store.BucketKey(name)); err == nil {
		return errf(http.StatusConflict, "bucket %q already exists", name)
	}
	for _, d := range domains {
		if _, err := s.st.Get(ctx, store.DomainKey(d)); err == nil {
			return errf(http.StatusConflict, "domain %q is bound to another bucket", d)
		}
	}
	return errf(http.StatusConflict, "bucket %q or one of its domains was taken concurrently", name)
}

// ownedBucket returns the caller's bucket: 404 when missing, 403 when
// another account owns it.
func (s *Server) ownedBucket(ctx context.Context, c *call, name string) (dora.Bucket, uint64, error) {
	b, ver, err := store.Get[dora.Bucket](ctx, s.st, store.BucketKey(name))
	if errors.Is(err, store.ErrNotFound) {
		return b, 0, errf(http.StatusNotFound, "bucket %q not found", name)
	}
	if err != nil {
		return b, 0, err
	}
	if b.Owner != c.acct.ID {
		return b, 0, errf(http.StatusForbidden, "bucket %q belongs to another account", name)
	}
	return b, ver, nil
}

func (s *Server) listBuckets(w http.ResponseWriter, r *http.Request, c *call) error {
	all, _, err := store.List[dora.Bucket](r.Context(), s.st, store.PrefixBuckets)
	if err != nil {
		return err
	}
	own := []dora.Bucket{}
	for _, b := range all {
		if b.Owner == c.acct.ID {
			own = append(own, b)
		}
	}
	writeJSON(w, http.StatusOK, own)
	return nil
}

func (s *Server) getBucket(w http.ResponseWriter, r *http.Request, c *call) error {
	b, _, err := s.ownedBucket(r.Context(), c, r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

func (s *Server) addDomain(w http.ResponseWriter, r *http.Request, c *call) error {
	var req struct {
		Domain string `json:"domain"`
	}
	if err := c.decode(r, &req); err != nil {
		return err
	}
	d, err := normalizeDomain(req.Domain, s.cfg.DomainSuffix)
	if err != nil {
		return errf(http.StatusBadRequest, "%v", err)
	}
	name := r.PathValue("name")
	for i := 0; i < casRetries; i++ {
		b, ver, err := s.ownedBucket(r.Context(), c, name)
		if err != nil {
			return err
		}
		for _, have := range b.Domains {
			if have == d {
				writeJSON(w, http.StatusOK, b)
				return nil
			}
		}
		if len(b.Domains) >= MaxDomainsPerBucket {
			return errf(http.StatusBadRequest, "domains: at most %d per bucket", MaxDomainsPerBucket)
		}
		b.Domains = append(b.Domains, d)
		sort.Strings(b.Domains)
		err = s.st.Txn(r.Context(), []store.Op{
			{Kind: store.OpPut, Key: store.BucketKey(name), Value: mustJSON(b), Version: ver},
			{Kind: store.OpPut, Key: store.DomainKey(d), Value: []byte(name), CreateOnly: true},
		})
		if errors.Is(err, store.ErrConflict) {
			if _, gerr := s.st.Get(r.Context(), store.DomainKey(d)); gerr == nil {
				return errf(http.StatusConflict, "domain %q is bound to another bucket", d)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("bind domain %s: %w", d, err)
		}
		writeJSON(w, http.StatusOK, b)
		return nil
	}
	return fmt.Errorf("bind domain %s: %w", d, store.ErrConflict)
}

func (s *Server) deleteBucket(w http.ResponseWriter, r *http.Request, c *call) error {
	name := r.PathValue("name")
	b, ver, err := s.ownedBucket(r.Context(), c, name)
	if err != nil {
		return err
	}
	if s.cfg.Objects != nil {
		objs, err := s.cfg.Objects.List(r.Context(), name, "", 1)
		if err != nil {
			return fmt.Errorf("delete bucket %s: list objects: %w", name, err)
		}
		if len(objs) > 0 {
			return errf(http.StatusConflict, "bucket %q still holds objects; delete them first", name)
		}
	}
	ops := []store.Op{{Kind: store.OpDelete, Key: store.BucketKey(name), Version: ver}}
	for _, d := range b.Domains {
		ops = append(ops, store.Op{Kind: store.OpDelete, Key: store.DomainKey(d)})
	}
	if err := s.st.Txn(r.Context(), ops); err != nil {
		return fmt.Errorf("delete bucket %s: %w", name, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
