package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
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
	// the name is not given out while they are there.
	if s.cfg.Objects != nil {
		objs, err := s.cfg.Objects.List(r.Context(), b.Name, "", 1)
		if err != nil {
			return fmt.Errorf("create bucket %s: list objects: %w", b.Name, err)
		}
		if len(objs) > 0 {
			return errf(http.StatusConflict, "bucket name %q still holds objects of a deleted bucket; choose another name", b.Name)
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
