package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"strconv"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/router/origin"
)

// objectTarget checks the bucket is the caller's, the key valid and the
// origin configured.
func (s *Server) objectTarget(r *http.Request, c *call) (bucket, key string, err error) {
	bucket, key = r.PathValue("bucket"), r.PathValue("key")
	if err := dora.ValidateKey(key); err != nil {
		return "", "", errf(http.StatusBadRequest, "key: %v", err)
	}
	if err := dora.CheckUserKey(key); err != nil {
		return "", "", errf(http.StatusBadRequest, "%v", err)
	}
	if _, _, err := s.ownedBucket(r.Context(), c, bucket); err != nil {
		return "", "", err
	}
	if s.cfg.Objects == nil {
		return "", "", errf(http.StatusServiceUnavailable, "no object storage configured")
	}
	return bucket, key, nil
}

// originError maps origin sentinels to API statuses.
func originError(op, bucket, key string, err error) error {
	switch {
	case errors.Is(err, origin.ErrNotFound):
		return errf(http.StatusNotFound, "object %s/%s not found", bucket, key)
	case errors.Is(err, origin.ErrBadKey):
		return errf(http.StatusBadRequest, "key %q: %v", key, err)
	case errors.Is(err, origin.ErrTooLarge):
		return errf(http.StatusRequestEntityTooLarge, "object too large")
	case errors.Is(err, origin.ErrExists):
		return errf(http.StatusConflict, "object %s/%s already exists", bucket, key)
	case errors.Is(err, origin.ErrReadOnly):
		return errf(http.StatusServiceUnavailable, "object storage is read-only")
	case errors.Is(err, origin.ErrUnavailable):
		return errf(http.StatusServiceUnavailable, "object storage unavailable: %v", err)
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errf(http.StatusRequestEntityTooLarge, "object over %d bytes", mbe.Limit)
	}
	return fmt.Errorf("%s %s/%s: %w", op, bucket, key, err)
}

func (s *Server) putObject(w http.ResponseWriter, r *http.Request, c *call) error {
	bucket, key, err := s.objectTarget(r, c)
	if err != nil {
		return err
	}
	if r.ContentLength > s.cfg.MaxUploadBytes {
		return errf(http.StatusRequestEntityTooLarge, "object over %d bytes", s.cfg.MaxUploadBytes)
	}
	opts := origin.PutOptions{InsertOnly: r.Header.Get("X-Dora-Insert-Only") == "1"}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err == nil && mt != "application/octet-stream" {
			opts.MimeType = ct
		}
	}
	b, _, err := s.ownedBucket(r.Context(), c, bucket)
	if err != nil {
		return err
	}
	// The bucket may be deleted (and created again, maybe by another
	// account) while the body streams: the object must then be stored
	// neither under the deleted name nor in the new bucket. The guard
	// checks the bucket at the body's end, before the store commits, and
	// CheckStored once more after, as for every other write (admin/rs).
	target := rs.TargetOf(b)
	body := rs.NewGuard(r.Context(), s.st, target, http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadBytes))
	obj, err := s.cfg.Objects.Put(r.Context(), bucket, key, body, opts)
	if gerr := body.Failed(); gerr != nil {
		return bucketGoneError(bucket, gerr)
	}
	if err != nil {
		return originError("put", bucket, key, err)
	}
	if gerr := target.CheckStored(context.WithoutCancel(r.Context()), s.st, s.cfg.Objects, s.log, key, obj.ETag); gerr != nil {
		return bucketGoneError(bucket, gerr)
	}
	writeJSON(w, http.StatusOK, obj)
	return nil
}

// bucketGoneError is the answer to a write refused by its bucket guard:
// 404 when the bucket went during the write, 503 when the metadata store
// could not say.
func bucketGoneError(bucket string, err error) error {
	if errors.Is(err, rs.ErrBucketGone) {
		return errf(http.StatusNotFound, "bucket %q was deleted during the upload; the object is not kept", bucket)
	}
	return errf(http.StatusServiceUnavailable, "%v", err)
}

func (s *Server) getObject(w http.ResponseWriter, r *http.Request, c *call) error {
	bucket, key, err := s.objectTarget(r, c)
	if err != nil {
		return err
	}
	rc, obj, err := s.cfg.Objects.Open(r.Context(), bucket, key, 0, -1)
	if err != nil {
		return originError("get", bucket, key, err)
	}
	defer rc.Close()
	h := w.Header()
	ct := obj.MimeType
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	// Always a download, whatever the stored type: opened in a tab, an
	// object must not render on the console's origin (InertCSP and
	// nosniff are set by outer). The console's <img> previews and fetches
	// ignore the disposition.
	h.Set("Content-Disposition", attachment(path.Base(key)))
	if obj.Size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(obj.Size, 10))
	}
	if obj.ETag != "" {
		h.Set("ETag", `"`+obj.ETag+`"`)
	}
	if !obj.Modified.IsZero() {
		h.Set("Last-Modified", obj.Modified.UTC().Format(http.TimeFormat))
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	if _, err := io.Copy(w, rc); err != nil {
		// Headers are gone; the short body tells the client.
		s.log.Warn("admin: object download cut", "bucket", bucket, "key", key, "err", err)
	}
	return nil
}

// attachment is a Content-Disposition that downloads as name (RFC 6266;
// RFC 2231 encoding when the name is not plain ASCII).
func attachment(name string) string {
	if v := mime.FormatMediaType("attachment", map[string]string{"filename": name}); v != "" {
		return v
	}
	return "attachment"
}

func (s *Server) deleteObject(w http.ResponseWriter, r *http.Request, c *call) error {
	bucket, key, err := s.objectTarget(r, c)
	if err != nil {
		return err
	}
	if err := s.cfg.Objects.Delete(r.Context(), bucket, key); err != nil {
		return originError("delete", bucket, key, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) statObject(w http.ResponseWriter, r *http.Request, c *call) error {
	bucket, key, err := s.objectTarget(r, c)
	if err != nil {
		return err
	}
	obj, err := s.cfg.Objects.Stat(r.Context(), bucket, key)
	if err != nil {
		return originError("stat", bucket, key, err)
	}
	writeJSON(w, http.StatusOK, obj)
	return nil
}

// MaxListLimit is the most objects one list call returns.
const MaxListLimit = 1000

func (s *Server) listObjects(w http.ResponseWriter, r *http.Request, c *call) error {
	bucket := r.PathValue("bucket")
	q := r.URL.Query()
	limit := MaxListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListLimit {
			return errf(http.StatusBadRequest, "limit: must be 1 to %d", MaxListLimit)
		}
		limit = n
	}
	prefix := q.Get("prefix")
	if len(prefix) > dora.MaxKeyBytes {
		return errf(http.StatusBadRequest, "prefix: longer than %d bytes", dora.MaxKeyBytes)
	}
	if _, _, err := s.ownedBucket(r.Context(), c, bucket); err != nil {
		return err
	}
	if s.cfg.Objects == nil {
		return errf(http.StatusServiceUnavailable, "no object storage configured")
	}
	objs, err := rs.VisibleObjects(r.Context(), s.cfg.Objects, bucket, prefix, limit)
	if err != nil {
		return originError("list", bucket, prefix, err)
	}
	if objs == nil {
		objs = []origin.Object{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": objs})
	return nil
}
