package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
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
	// This host's files of build n are b's only if b was unpacked here
	// (Owns): others are those of an earlier ufop of the same name.
	if s.cfg.Builder != nil && s.cfg.Builder.Owns(ufop, n, b.ArtifactID) && s.cfg.Builder.Has(ufop, n) {
		w.Header().Set("Content-Type", "application/gzip")
		w.WriteHeader(http.StatusOK)
		if err := s.cfg.Builder.WriteTarGz(ufop, n, w); err != nil {
			// The status is sent; a cut body tells the client.
			s.log.Error("admin: write artifact", "ufop", ufop, "number", n, "err", err)
		}
		return nil
	}
	// Built by another admin: its copy in the shared objects store.
	if s.cfg.Objects == nil {
		return errf(http.StatusNotFound, "build %d of %s is not on this admin and no objects store is configured", n, ufop)
	}
	rc, obj, err := s.cfg.Objects.Open(r.Context(), dora.SystemBucket, artifactKey(b), 0, -1)
	if errors.Is(err, origin.ErrNotFound) {
		return errf(http.StatusNotFound, "build %d of %s: not on this admin nor in the objects store", n, ufop)
	}
	if err != nil {
		return fmt.Errorf("artifact %s #%d from the objects store: %w", ufop, n, err)
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Length", strconv.FormatInt(obj.Size, 10))
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		s.log.Error("admin: write artifact from the objects store", "ufop", ufop, "number", n, "err", err)
	}
	return nil
}

// artifactKey is where build b's result is kept in dora.SystemBucket:
// named by its record's ArtifactID, so that the build numbered the same
// of the same ufop name deleted and registered again (numbered from 1
// again) has a key of its own, and an upload of the earlier one that
// completes late overwrites nothing of the later's. A record written
// before ArtifactID existed names the key of that time.
func artifactKey(b dora.Build) string {
	if b.ArtifactID == "" {
		return "artifacts/" + b.Ufop + "/" + strconv.Itoa(b.Number) + ".tar.gz"
	}
	return "artifacts/" + b.Ufop + "/" + strconv.Itoa(b.Number) + "-" + b.ArtifactID + ".tar.gz"
}

// shareArtifact streams build b's result (tar.gz) into the shared
// objects store (with Config.ShareBuilds) at artifactKey(b), so that an admin on another host can serve it to the
// runtime's clients (the artifact URL names whichever admin applies the
// deployment, or a load balancer in front of them all). It reports
// whether it stored anything.
func (s *Server) shareArtifact(ctx context.Context, b dora.Build) (bool, error) {
	if !s.cfg.ShareBuilds || s.cfg.Objects == nil || s.cfg.Builder == nil {
		return false, nil
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(s.cfg.Builder.WriteTarGz(b.Ufop, b.Number, pw)) }()
	_, err := s.cfg.Objects.Put(ctx, dora.SystemBucket, artifactKey(b), pr, origin.PutOptions{MimeType: "application/gzip"})
	pr.CloseWithError(err) // stops the writer if Put gave up early
	if err != nil {
		return false, fmt.Errorf("store build %s #%d in the objects store: %w", b.Ufop, b.Number, err)
	}
	return true, nil
}

// unshareArtifact deletes build b's shared copy: b's ufop was deleted
// while it was being stored, perhaps after the deletion looked for it.
// The key is b's own, so no other build's copy goes with it.
func (s *Server) unshareArtifact(ctx context.Context, b dora.Build) error {
	if err := s.cfg.Objects.Delete(ctx, dora.SystemBucket, artifactKey(b)); err != nil && !errors.Is(err, origin.ErrNotFound) {
		return fmt.Errorf("delete the shared copy of build %s #%d: %w", b.Ufop, b.Number, err)
	}
	return nil
}

// removeSharedArtifacts deletes the shared copies of the builds of ufop,
// whose records are deleted, except those a build recorded now names: a
// ufop of the same name registered again since (perhaps by another
// account) whose builds' copies have keys of their own (artifactKey).
// Those records are read after the copies are listed, and a build is
// recorded before its copy is stored, so every copy listed of a build of
// the new ufop is kept.
func (s *Server) removeSharedArtifacts(ctx context.Context, ufop string) error {
	if s.cfg.Objects == nil {
		return nil
	}
	objs, err := s.cfg.Objects.List(ctx, dora.SystemBucket, "artifacts/"+ufop+"/", 0)
	if err != nil {
		return fmt.Errorf("list the shared copies of %s's builds: %w", ufop, err)
	}
	if len(objs) == 0 {
		return nil
	}
	builds, _, err := store.List[dora.Build](ctx, s.st, store.BuildsOf(ufop))
	if err != nil {
		return fmt.Errorf("read the builds of %s recorded since: %w", ufop, err)
	}
	live := make(map[string]bool, len(builds))
	for _, b := range builds {
		live[artifactKey(b)] = true
	}
	for _, o := range objs {
		if live[o.Key] {
			continue
		}
		if err := s.cfg.Objects.Delete(ctx, dora.SystemBucket, o.Key); err != nil && !errors.Is(err, origin.ErrNotFound) {
			return fmt.Errorf("delete %s: %w", o.Key, err)
		}
	}
	return nil
}
