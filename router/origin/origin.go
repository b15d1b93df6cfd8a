// Package origin reads and writes the objects of buckets: from a local
// directory (origin/local, the embedded default), from an S3-compatible
// store shared by every host (origin/s3) or from an HTTP back-to-source
// mirror (origin/httpmirror).
package origin

import (
	"context"
	"errors"
	"io"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/api"
)

// Sentinel errors callers branch on.
var (
	ErrNotFound = errors.New("origin: object not found")
	// ErrBadKey is dora.ErrBadKey, the key rule's sentinel.
	ErrBadKey   = dora.ErrBadKey
	ErrTooLarge = errors.New("origin: object too large")
	ErrExists   = errors.New("origin: object exists")
	ErrReadOnly = errors.New("origin: read-only origin")
	// ErrUnavailable: the store could not be reached or did not answer in
	// time (after retries); servers answer 503 and the client may retry.
	ErrUnavailable = errors.New("origin: object storage unavailable")
	// ErrChanged: the object is no longer the one a Stat described (it was
	// overwritten in between); the caller stats again.
	ErrChanged = errors.New("origin: object changed since it was described")
)

// ConditionalOpener is implemented by origins that can pin a read to the
// object a Stat described, so that a write between the two is detected by
// the store rather than served under the first one's headers (a Range of
// another version, a wrong ETag or length). OpenIf is Open that fails with
// ErrChanged unless the object still has want's ETag and was not modified
// after want.Modified (S3: the GET carries If-Unmodified-Since, and the
// etag of the answer is compared).
type ConditionalOpener interface {
	OpenIf(ctx context.Context, bucket, key string, offset, length int64, want Object) (io.ReadCloser, Object, error)
}

// Object describes a stored object (a wire type of internal/api: the API's
// stat and list replies carry it as is).
type Object = api.Object

// Reader opens objects. Open returns a stream the caller must close;
// offset/length select a byte range (length < 0: to the end).
type Reader interface {
	Stat(ctx context.Context, bucket, key string) (Object, error)
	Open(ctx context.Context, bucket, key string, offset, length int64) (io.ReadCloser, Object, error)
}

// PutOptions qualify a write.
type PutOptions struct {
	MimeType   string // detected from the key's extension and content when empty
	InsertOnly bool   // fail with ErrExists when the key exists
}

// Writer stores objects. Put streams r to the object and makes it visible
// only once complete (written to a temporary name, then renamed).
type Writer interface {
	Put(ctx context.Context, bucket, key string, r io.Reader, opts PutOptions) (Object, error)
	Delete(ctx context.Context, bucket, key string) error
}

// Lister lists objects of a bucket under a prefix, sorted by key.
type Lister interface {
	List(ctx context.Context, bucket, prefix string, limit int) ([]Object, error)
}
