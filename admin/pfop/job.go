// Package pfop is Dora's persistent processing (Qiniu's pfop; docs/api.md): jobs that
// run fop pipelines on stored objects in the background and save their
// results, submitted with `POST /pfop` or by a form upload's persistentOps,
// followed with `GET /status/get/prefop`, announced to a notifyURL.
//
// The parts:
//
//   - Jobs live in the metadata store (store.JobKey) so any admin can answer
//     prefop while any worker runs them; results are indexed under
//     store.ResultKey so that `?p/1/<fop>` finds them (the router reads them).
//   - A Queue carries job ids per named pipeline with a concurrency limit:
//     boltq (embedded, a bbolt file) and redisq (Redis Streams with a
//     consumer group; XAUTOCLAIM hands a dead worker's jobs to a live one).
//     Both pass the contract suite in admin/pfop/queuetest.
//   - Worker claims jobs and runs each `;`-separated pipeline through a
//     Processor (the router's Process: the same engine as the HTTP path).
//   - Handler serves the HTTP API and the Qiniu form upload.
//
// Delivery is at least once: a job whose worker dies is run again by
// another. A visible result is written once: each item's outcome is
// recorded in the job as soon as it is known, results are written
// temp-then-rename by the origin, and a re-run skips items already done.
package pfop

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/api"
	"github.com/doraproject/dora/internal/store"
)

// Job and item codes (Qiniu's, docs/api.md; defined with the wire types in
// internal/api).
const (
	CodeSuccess      = api.PfopSuccess
	CodeWaiting      = api.PfopWaiting
	CodeProcessing   = api.PfopProcessing
	CodeFailed       = api.PfopFailed
	CodeNotifyFailed = api.PfopNotifyFailed
)

// CodeUnknownID is the HTTP status of a prefop for an unknown id.
const CodeUnknownID = api.PfopUnknownID

// Desc returns the Qiniu description of a code.
func Desc(code int) string { return api.PfopDesc(code) }

// DefaultPipeline is the queue of a job that names none.
const DefaultPipeline = api.DefaultPipeline

// Limits of a submitted job.
const (
	MaxFops       = 20   // pipelines in one job
	MaxFopsBytes  = 8192 // the whole fops field
	MaxNotifyURL  = 2048
	MaxPipeline   = 64
	MaxJobKeyByte = 1024
)

// Sentinel errors callers branch on.
var (
	// ErrNotFound: no job with that id.
	ErrNotFound = errors.New("pfop: no such job")
	// ErrInvalid is wrapped by every error about a bad job submission.
	ErrInvalid = errors.New("pfop: invalid request")
)

var pipelineRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ValidatePipeline checks a pipeline (queue) name: 1 to 64 of A-Z a-z 0-9 . _ -.
func ValidatePipeline(name string) error {
	if !pipelineRE.MatchString(name) {
		return fmt.Errorf("%w: pipeline %q must be 1 to 64 characters of A-Z a-z 0-9 . _ -", ErrInvalid, name)
	}
	return nil
}

// Item is one pipeline of a job and its outcome, as prefop shows it.
type Item = api.PfopItem

// Job is a persistent processing job as stored. Status is its public view.
type Job struct {
	ID        string    `json:"id"`
	Code      int       `json:"code"`
	Bucket    string    `json:"bucket"`
	Key       string    `json:"key"`
	Pipeline  string    `json:"pipeline"`
	Type      int       `json:"type"` // 0 normal, 1 idle-time
	Reqid     string    `json:"reqid"`
	Owner     string    `json:"owner"` // account id of the bucket's owner
	NotifyURL string    `json:"notifyURL,omitempty"`
	Force     bool      `json:"force,omitempty"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
	Items     []Item    `json:"items"`
	// Attempts counts the runs that started (a re-run after a crash adds one).
	Attempts int `json:"attempts"`
	// Notified is set once the notification was delivered or given up.
	Notified bool `json:"notified,omitempty"`
}

// Status is the prefop answer (and the notification body).
type Status = api.PfopStatus

// Status returns the job's public view.
func (j Job) Status() Status {
	items := j.Items
	if items == nil {
		items = []Item{}
	}
	return Status{
		ID: j.ID, Code: j.Code, Desc: Desc(j.Code), InputKey: j.Key, InputBucket: j.Bucket,
		Pipeline: j.Pipeline, Reqid: j.Reqid, Type: j.Type,
		CreationDate: j.Created.UTC().Format(time.RFC3339), Items: items,
	}
}

// Final reports whether the job has ended (success, failure or notify failure).
func (j Job) Final() bool {
	return j.Code == CodeSuccess || j.Code == CodeFailed || j.Code == CodeNotifyFailed
}

// NewID returns a job id: "<prefix>.<24 random hex>" (prefix: a region).
func NewID(prefix string) (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("pfop: job id: %w", err)
	}
	if prefix == "" {
		prefix = "z0"
	}
	return prefix + "." + hex.EncodeToString(b[:]), nil
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,16}\.[0-9a-f]{24}$`)

// ValidID reports whether id has the shape NewID gives (so that no other
// string reaches the store).
func ValidID(id string) bool { return idRE.MatchString(id) }

// Jobs reads and writes jobs in the metadata store.
type Jobs struct {
	Store store.Store
}

// prefixOpen indexes the unfinished jobs: pfop/open/<id> → the job's
// pipeline (raw bytes). Written with the job in one transaction when it is
// created, deleted in the one that makes it final, so the recovery of lost
// jobs lists only these, not every job ever run (see RecoverLost,
// PruneJobs).
const prefixOpen = "pfop/open/"

func openKey(id string) string { return prefixOpen + id }

// Create stores a new job (and, unless it is already final, its entry in
// the index of unfinished jobs); it fails when the id exists.
func (js Jobs) Create(ctx context.Context, j Job) error {
	b, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("pfop: encode job %s: %w", j.ID, err)
	}
	ops := []store.Op{{Kind: store.OpPut, Key: store.JobKey(j.ID), Value: b, CreateOnly: true}}
	if !j.Final() {
		ops = append(ops, store.Op{Kind: store.OpPut, Key: openKey(j.ID), Value: []byte(j.Pipeline)})
	}
	if err := js.Store.Txn(ctx, ops); err != nil {
		return fmt.Errorf("pfop: create job %s: %w", j.ID, err)
	}
	return nil
}

// Get returns the job and its store version, or ErrNotFound.
func (js Jobs) Get(ctx context.Context, id string) (Job, uint64, error) {
	if !ValidID(id) {
		return Job{}, 0, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	kv, err := js.Store.Get(ctx, store.JobKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return Job{}, 0, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err != nil {
		return Job{}, 0, fmt.Errorf("pfop: get job %s: %w", id, err)
	}
	var j Job
	if err := json.Unmarshal(kv.Value, &j); err != nil {
		return Job{}, 0, fmt.Errorf("pfop: decode job %s: %w", id, err)
	}
	return j, kv.Version, nil
}

// Update applies fn to the current job and writes it back with CAS,
// retrying on a concurrent write. fn may be called several times.
func (js Jobs) Update(ctx context.Context, id string, fn func(*Job) error) (Job, error) {
	for {
		j, ver, err := js.Get(ctx, id)
		if err != nil {
			return Job{}, err
		}
		wasFinal := j.Final()
		if err := fn(&j); err != nil {
			return Job{}, err
		}
		b, err := json.Marshal(j)
		if err != nil {
			return Job{}, fmt.Errorf("pfop: encode job %s: %w", id, err)
		}
		// The index of unfinished jobs changes only when the job ends (or,
		// never in practice, starts again): the same transaction.
		ops := []store.Op{{Kind: store.OpPut, Key: store.JobKey(id), Value: b, Version: ver}}
		switch {
		case j.Final() && !wasFinal:
			ops = append(ops, store.Op{Kind: store.OpDelete, Key: openKey(id)})
		case !j.Final() && wasFinal:
			ops = append(ops, store.Op{Kind: store.OpPut, Key: openKey(id), Value: []byte(j.Pipeline)})
		}
		err = js.Store.Txn(ctx, ops)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return Job{}, fmt.Errorf("pfop: update job %s: %w", id, err)
		}
		return j, nil
	}
}

// ResultRecord says where a job saved the result of fop on bucket:key:
// what `?p/1/<fop>` serves. It is the root package's record, which the
// router reads too.
type ResultRecord = dora.PfopResult

// PutResult records where a result was saved.
func (js Jobs) PutResult(ctx context.Context, r ResultRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("pfop: encode result: %w", err)
	}
	if _, err := js.Store.Put(ctx, store.ResultKey(r.Bucket, r.Key, r.Fop), b); err != nil {
		return fmt.Errorf("pfop: record result of %s:%s: %w", r.Bucket, r.Key, err)
	}
	return nil
}

// GetResult returns the record for fop (canonical) on bucket:key, or ErrNotFound.
func (js Jobs) GetResult(ctx context.Context, bucket, key, fop string) (ResultRecord, error) {
	r, err := store.GetResult(ctx, js.Store, bucket, key, fop)
	if errors.Is(err, store.ErrNotFound) {
		return ResultRecord{}, ErrNotFound
	}
	if err != nil {
		return ResultRecord{}, fmt.Errorf("pfop: get result: %w", err)
	}
	return r, nil
}
