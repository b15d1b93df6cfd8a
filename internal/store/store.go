// Package store defines the metadata store the control plane keeps its state
// in, and the key layout shared by every reader (admin, router, autoscaler).
//
// Implementations: internal/store/bolt (embedded, bbolt file) and
// internal/store/consulkv (production, Consul KV). Both must pass the contract
// suite in internal/store/storetest.
package store

import (
	"context"
	"errors"
)

// Sentinel errors callers branch on.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("store: key not found")
	// ErrConflict: a CAS or transaction check failed because the key's
	// version is not the one expected.
	ErrConflict = errors.New("store: version conflict")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
)

// KV is one key with its value and version. Version is strictly positive for
// an existing key and changes on every write of that key (bbolt: a
// store-wide counter; Consul: ModifyIndex).
type KV struct {
	Key     string
	Value   []byte
	Version uint64
}

// OpKind is what a transaction operation does.
type OpKind int

// Transaction operation kinds.
const (
	OpPut    OpKind = iota // write Value; if Version > 0 the key must be at that version; if CreateOnly the key must not exist
	OpDelete               // delete; if Version > 0 the key must be at that version
	OpCheck                // no write; the key must be at Version (0: must not exist)
)

// Op is one operation of a transaction.
type Op struct {
	Kind       OpKind
	Key        string
	Value      []byte
	Version    uint64
	CreateOnly bool
}

// Store is the metadata store. Keys are slash-separated paths without a
// leading slash ("ufops/grepd"). All methods are safe for concurrent use.
type Store interface {
	// Get returns the key or ErrNotFound.
	Get(ctx context.Context, key string) (KV, error)
	// Put writes the key unconditionally and returns its new version.
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	// CAS writes the key only if its current version is version (0 means
	// the key must not exist yet); otherwise ErrConflict.
	CAS(ctx context.Context, key string, value []byte, version uint64) (uint64, error)
	// Delete removes the key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List returns every key under prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]KV, error)
	// Txn applies every op or none; a failed check returns ErrConflict.
	Txn(ctx context.Context, ops []Op) error
	// Watch sends the full listing under prefix at once, then again after
	// every change under it, until ctx ends (then the channel is closed).
	// A slow reader may miss intermediate listings but always receives
	// the latest one.
	Watch(ctx context.Context, prefix string) (<-chan []KV, error)
	// Close releases the store.
	Close() error
}

// Key prefixes of the metadata layout, for listing and watching a whole
// kind; keys are built with the builders of keys.go. Values are JSON of the
// dora types.
const (
	PrefixAccounts    = "accounts/"     // accounts/<id> → dora.Account
	PrefixAccessKeys  = "aks/"          // aks/<ak> → account id (raw bytes)
	PrefixBuckets     = "buckets/"      // buckets/<name> → dora.Bucket
	PrefixDomains     = "domains/"      // domains/<host> → bucket name (raw bytes)
	PrefixUfops       = "ufops/"        // ufops/<name> → dora.Ufop
	PrefixReleases    = "releases/"     // releases/<ufop>/<version> → dora.Release
	PrefixBuilds      = "builds/"       // builds/<ufop>/<%06d number> → dora.Build
	PrefixImages      = "images/"       // images/<owner>/<name:tag> → image record
	PrefixDeployments = "deployments/"  // deployments/<ufop>/<id> → dora.Deployment
	PrefixScaleEvents = "scaleevents/"  // scaleevents/<deployment id>/<unix nanos> → autoscaler.Event
	PrefixJobs        = "pfop/jobs/"    // pfop/jobs/<id> → pfop job
	PrefixResults     = "pfop/results/" // pfop/results/<bucket>/<digest> → pfop result record
)
