package admin

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/store"
)

// handleArtifact serves GET /v1/artifacts/{ufop}/{n}.tar.gz?e=&token=: a
// successful build's result for runtimes on other hosts. The download token
// (made with the root keys) replaces the Authorization header.
func (s *Server) handleArtifact(w http.ResponseWriter, r *http.Request) {
	if err := s.artifact(w, r); err != nil {
		s.logError(r, err)
		writeError(w, err)
	}
}

func (s *Server) artifact(w http.ResponseWriter, r *http.Request) error {
	ufop := r.PathValue("ufop")
	numStr, ok := strings.CutSuffix(r.PathValue("file"), ".tar.gz")
	n, err := strconv.Atoi(numStr)
	if !ok || err != nil || n < 1 || dora.ValidateUfopName(ufop) != nil {
		return errf(http.StatusNotFound, "no such artifact")
	}
	raw := r.URL.RawQuery
	i := strings.Index(raw, "&token=")
	if i < 0 {
		return errf(http.StatusUnauthorized, "missing download token (e= and token=)")
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return errf(http.StatusUnauthorized, "bad query: %v", err)
	}
	deadline, err := strconv.ParseInt(q.Get("e"), 10, 64)
	if err != nil {
		return errf(http.StatusUnauthorized, "bad or missing e= deadline")
	}
	token := q.Get("token")
	signed := r.URL.EscapedPath() + "?" + raw[:i]
	bases := []string{s.public.String()}
	if r.Host != "" && r.Host != s.public.Host {
		bases = append(bases, "http://"+r.Host)
	}
	var verr error
	verified := false
	for _, base := range bases {
		if _, verr = auth.VerifyDownloadToken(r.Context(), s.lookupRootSK, base+signed, token, deadline, s.now()); verr == nil {
			verified = true
			break
		}
	}
	if !verified {
		return errf(http.StatusUnauthorized, "bad download token: %v", verr)
	}
	b, _, err := store.Get[dora.Build](r.Context(), s.st, store.BuildKey(ufop, n))
	if errors.Is(err, store.ErrNotFound) || (err == nil && b.Status != dora.BuildSuccess) {
		return errf(http.StatusNotFound, "no successful build %d of %s", n, ufop)
	}
	if err != nil {
		return err
	}
	if s.cfg.Builder == nil {
		return errf(http.StatusServiceUnavailable, "no builder configured")
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.WriteHeader(http.StatusOK)
	if err := s.cfg.Builder.WriteTarGz(ufop, n, w); err != nil {
		// The status is sent; a cut body tells the client.
		s.log.Error("admin: write artifact", "ufop", ufop, "number", n, "err", err)
	}
	return nil
}
