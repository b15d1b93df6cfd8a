package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
)

func (s *Server) createBucket(w http.ResponseWriter, r *http.Request, c *call) error {
	var req bucketRequest
	if err := c.decode(r, &req); err != nil {
		return err
	}
	b, err := planBucket(req, c.acct.ID, s.cfg.DomainSuffix, s.cfg.AllowPrivateMirror, s.nowUTC())
	if err != nil {
		return err
	}
	// Objects left under the name by a deleted bucket (an upload that
	// finished after the delete, through any API) are another account's:
	// the name is not given out while they are there. Upload temporaries
	// left there (an upload that stored one after the delete and stopped
	// before moving it; the leader's sweep walks existing buckets only)
	// are nobody's: they are removed, so that the new bucket starts clean.
	if s.cfg.Objects != nil {
		// Never the temporaries of a bucket that exists: its uploads'.
		// (A bucket of this name created by someone else from here to the
		// Txn below, and an upload to it started meanwhile, would lose its
		// temporary and fail; this create then fails with 409 anyway.)
		if _, err := s.st.Get(r.Context(), store.BucketKey(b.Name)); err == nil {
			return errf(http.StatusConflict, "bucket %q already exists", b.Name)
		} else if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("create bucket %s: %w", b.Name, err)
		}
		held, err := holdsObjects(r.Context(), s.cfg.Objects, b.Name)
		if err != nil {
			return fmt.Errorf("create bucket %s: %w", b.Name, err)
		}
		if held {
			return errf(http.StatusConflict, "bucket name %q still holds objects of a deleted bucket; choose another name", b.Name)
		}
		n, err := rs.RemoveTemps(r.Context(), s.cfg.Objects, b.Name)
		if err != nil {
			return fmt.Errorf("create bucket %s: remove the upload temporaries of a deleted bucket of that name: %w", b.Name, err)
		}
		if n > 0 {
			s.log.Info("admin: create bucket: removed the upload temporaries of a deleted bucket of that name", "bucket", b.Name, "count", n)
		}
	}
	domains := b.Domains
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
	d, err := checkDomain(req.Domain, s.cfg.DomainSuffix)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	for i := 0; i < casRetries; i++ {
		b, ver, err := s.ownedBucket(r.Context(), c, name)
		if err != nil {
			return err
		}
		b, added, err := bindDomain(b, d)
		if err != nil {
			return err
		}
		if !added {
			writeJSON(w, http.StatusOK, b)
			return nil
		}
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
	// Only the objects its owner can see and delete count: the upload
	// temporaries (rs.ReservedKey), hidden from every listing and refused
	// as keys, go with the bucket.
	if s.cfg.Objects != nil {
		held, err := holdsObjects(r.Context(), s.cfg.Objects, name)
		if err != nil {
			return fmt.Errorf("delete bucket %s: %w", name, err)
		}
		if held {
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
	// Removed once the bucket is gone, not before: a delete that fails
	// leaves its uploads alone. An upload still under way finds its
	// temporary gone at its move step and fails without storing anything;
	// one that stores its temporary after this and then stops leaves it
	// to the next create of the name (createBucket removes it).
	if s.cfg.Objects != nil {
		n, err := rs.RemoveTemps(context.WithoutCancel(r.Context()), s.cfg.Objects, name)
		if err != nil {
			// The bucket is deleted: answering an error would only make
			// the client retry into a 404.
			s.log.Warn("admin: delete bucket: upload temporaries left for the next create of the name", "bucket", name, "removed", n, "err", err)
		} else if n > 0 {
			s.log.Info("admin: delete bucket: removed its upload temporaries", "bucket", name, "count", n)
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// holdsObjects reports whether bucket holds an object a user put there:
// one that is not an upload temporary (rs.ReservedKey).
func holdsObjects(ctx context.Context, l origin.Lister, bucket string) (bool, error) {
	objs, err := rs.VisibleObjects(ctx, l, bucket, "", 1)
	if err != nil {
		return false, fmt.Errorf("list objects of %s: %w", bucket, err)
	}
	return len(objs) > 0, nil
}
