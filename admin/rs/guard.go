package rs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
)

// A write into a bucket (an upload, admin/pfop; a fetch) is admitted to
// the bucket as it is when the write starts. A write that streams a file
// can outlast the bucket: deleted meanwhile, and maybe created again, by
// another account or by the same one. Such a write must store nothing,
// neither under the deleted name (its object would hold the name: a
// create of it is refused while objects are there) nor in the new bucket
// of that name. Target names the bucket the write was admitted to; Guard
// checks it once the file has been read to its end, before the store can
// commit the object; Target.CheckStored checks it once more after the
// commit and removes an object that appeared anyway.

// ErrBucketGone is what a write gets when the bucket it was admitted to
// was deleted (and maybe created again) while its file was being stored:
// Qiniu's 631, no such bucket. Nothing was kept.
var ErrBucketGone = errors.New("no such bucket: it was deleted while the file was being stored; nothing was kept")

// ErrBucketUnchecked is what a write gets when its bucket could not be
// checked (the metadata store failed): retry later. Nothing was kept.
var ErrBucketUnchecked = errors.New("metadata store: the bucket could not be checked")

// ErrTempLost is what MoveTemp answers when the write's temporary was
// removed before it could be copied to its key while the bucket is still
// there (removed by something else): nothing was stored, the write may
// be sent again.
var ErrTempLost = errors.New("the file was received, but removed from the server before it could be stored under its key; nothing was stored")

// ObjectStore is what a guarded write needs of the object store: admin/pfop's
// ObjectStore and Objects are ones.
type ObjectStore interface {
	origin.Reader
	origin.Writer
}

// Target is the bucket a write was admitted to: its name, its owner and
// when its record was created. A bucket deleted and created again has
// another Created: it is another bucket.
type Target struct {
	Bucket  string
	Owner   string
	Created time.Time
}

// TargetOf is the Target of the bucket record b.
func TargetOf(b dora.Bucket) Target {
	return Target{Bucket: b.Name, Owner: b.Owner, Created: b.Created}
}

// Still checks that t's bucket is still the one the write was admitted
// to: a record of that name, of the same owner, created at the same
// time. ErrBucketGone when it was deleted meanwhile, or deleted and
// created again; ErrBucketUnchecked, with the store's error, when the
// metadata store cannot say. A bucket only updated meanwhile (private, domains) keeps
// its Created: it is still the one.
func (t Target) Still(ctx context.Context, st store.Store) error {
	b, _, err := store.Get[dora.Bucket](ctx, st, store.BucketKey(t.Bucket))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return ErrBucketGone
	case err != nil:
		return fmt.Errorf("%w: %s: %w", ErrBucketUnchecked, t.Bucket, err)
	case b.Owner != t.Owner || !b.Created.Equal(t.Created):
		return ErrBucketGone
	}
	return nil
}

// Guard passes a write's file to the object store's Put and, at the
// file's end, checks that the write's bucket is still the one it was
// admitted to (Target.Still) before answering io.EOF, which lets the
// store commit the object (origin.Writer.Put makes an object visible
// only once its reader is read to its end): when it is not, it answers
// the check's error instead and the store keeps nothing. The last check
// is then as close to the object's appearance as the caller can put it.
type Guard struct {
	r       io.Reader
	check   func() error
	checked bool
	end     error // what every Read answers once set
	failed  error // the check's refusal, when end is not io.EOF
}

// NewGuard wraps r in a Guard of t's bucket, checked in st with ctx.
func NewGuard(ctx context.Context, st store.Store, t Target, r io.Reader) *Guard {
	return &Guard{r: r, check: func() error { return t.Still(ctx, st) }}
}

// Read implements io.Reader: r's bytes, and at r's end io.EOF only if
// the check passes, else the check's error.
func (g *Guard) Read(p []byte) (int, error) {
	if g.end != nil {
		return 0, g.end
	}
	n, err := g.r.Read(p)
	if err != io.EOF {
		return n, err
	}
	if err := g.Verify(); err != nil {
		g.end = err
	} else {
		g.end = io.EOF
	}
	return n, g.end
}

// Verify runs the check once (at the file's end, or when the store did
// not read that far: an insert-only Put that refused early) and returns
// its refusal: ErrBucketGone or ErrBucketUnchecked.
func (g *Guard) Verify() error {
	if !g.checked {
		g.checked = true
		g.failed = g.check()
	}
	return g.failed
}

// Failed is the check's refusal once it ran (nil before, or when it
// passed): when it is not nil, the store kept nothing and the write
// fails with it, whatever Put answered.
func (g *Guard) Failed() error { return g.failed }

// CheckStored checks t's bucket once more after the store committed the
// write's object (key, of etag etag), which Guard checked before: a
// bucket deleted (and maybe created again) between that check and the
// commit has the object now. It is removed (Unstore) and CheckStored
// answers ErrBucketGone; the write fails as though the bucket had gone
// before. An error of the metadata store is no answer (the check before
// the commit passed): nil. ctx should outlive the client (the object is
// there either way).
//
// Once the object is there and this check passes, a delete of the bucket
// that starts later is refused while the object is there; one whose
// emptiness check came before the commit and whose removal of the record
// comes after this check leaves the object under the deleted name
// (admin/buckets.go: the name is then refused, 409).
func (t Target) CheckStored(ctx context.Context, st store.Store, objs ObjectStore, log *slog.Logger, key, etag string) error {
	if err := t.Still(ctx, st); errors.Is(err, ErrBucketGone) {
		Unstore(ctx, objs, log, t.Bucket, key, etag)
		return err
	}
	return nil
}

// Unstore removes what a write stored at bucket/key (the object of etag
// etag) once its bucket turned out to be gone or another: after its last
// check, the bucket was deleted, and maybe created again, before the
// object appeared. An object there of another etag (written since by the
// bucket's new owner) is left alone. Failures are logged: the write
// fails either way.
func Unstore(ctx context.Context, objs ObjectStore, log *slog.Logger, bucket, key, etag string) {
	cur, err := objs.Stat(ctx, bucket, key)
	if err != nil || cur.ETag != etag {
		if err != nil && !errors.Is(err, origin.ErrNotFound) {
			log.Warn("its bucket went while the file was stored; the object it stored could not be checked, left", "bucket", bucket, "key", key, "err", err)
		}
		return
	}
	if err := objs.Delete(ctx, bucket, key); err != nil && !errors.Is(err, origin.ErrNotFound) {
		log.Warn("its bucket went while the file was stored; the object it stored could not be removed", "bucket", bucket, "key", key, "err", err)
		return
	}
	log.Info("its bucket went while the file was stored; removed the object it stored", "bucket", bucket, "key", key)
}

// MoveTemp copies a keyless write's temporary (tmp, a TempKey of t's
// bucket, of etag etag) to its key: insert-only when insertOnly, where
// the same content already there is success (unchanged: nothing was
// written). The copy goes through a Guard: the bucket is checked before
// the key can appear. Its errors: ErrBucketGone (or ErrBucketUnchecked)
// when the Guard refused, or when the temporary is missing because
// the bucket went (a bucket's delete removes its temporaries);
// ErrTempLost when the temporary is missing from a bucket that is still
// there; origin.ErrExists (other content at an insert-only key) and
// origin.ErrBadKey, wrapped; else the object store's error, wrapped. The
// caller deletes tmp, and checks the bucket again once the key is written
// (CheckStored).
func MoveTemp(ctx context.Context, st store.Store, objs ObjectStore, t Target, tmp, key, etag, mimeType string, insertOnly bool) (unchanged bool, _ error) {
	rc, _, err := objs.Open(ctx, t.Bucket, tmp, 0, -1)
	if err != nil {
		return false, tempLost(ctx, st, t, err)
	}
	defer rc.Close()
	g := NewGuard(ctx, st, t, rc)
	_, err = objs.Put(ctx, t.Bucket, key, g, origin.PutOptions{MimeType: mimeType, InsertOnly: insertOnly})
	if g.Failed() != nil {
		return false, g.Failed()
	}
	if errors.Is(err, origin.ErrExists) {
		if cur, serr := objs.Stat(ctx, t.Bucket, key); serr == nil && cur.ETag == etag {
			if err := g.Verify(); err != nil { // a store that refused before reading it all
				return false, err
			}
			return true, nil
		}
		return false, fmt.Errorf("store under its key: %w", err)
	}
	if errors.Is(err, origin.ErrBadKey) {
		return false, fmt.Errorf("store under its key: %w", err)
	}
	if err != nil {
		return false, tempLost(ctx, st, t, err)
	}
	return false, nil
}

// tempLost is MoveTemp's answer to a temporary that could not be read
// (err): ErrBucketGone when it is missing because its bucket is gone,
// ErrTempLost when it is missing from a bucket that is still there, else
// err wrapped (the object store failed; err says how).
func tempLost(ctx context.Context, st store.Store, t Target, err error) error {
	if !errors.Is(err, origin.ErrNotFound) {
		return fmt.Errorf("store the file: %w", err)
	}
	if err := t.Still(context.WithoutCancel(ctx), st); err != nil {
		return err
	}
	return ErrTempLost
}
