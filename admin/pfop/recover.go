package pfop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/doraproject/dora/internal/store"
)

// Recovery of lost jobs.
//
// A job is acknowledged to its client once it is stored (waiting) and
// enqueued. A queue can still lose it afterwards: a Redis that is shutting
// down acknowledges an XADD it never persists, a queue file restored from
// an old copy, a worker and its queue entry gone together. The store then
// says "waiting" (or "processing") for good while no worker will ever
// claim the job. The worker's recovery compares the two: every unfinished
// job last written at least a lease ago whose pipeline holds no message for
// it is enqueued again. Re-delivery is safe (delivery is at least once and
// a re-run skips finished items); the job's Updated is moved forward with
// a CAS before the enqueue, so that of several workers sweeping at once
// only one enqueues it, and a job that ended meanwhile is left alone.

// errNotLost is returned by the recovery's update when the job turned out
// not to need it (it ended or was written since the sweep read it).
var errNotLost = errors.New("pfop: job no longer lost")

// lastWritten is when the job was last written (Updated; Created for a
// record without one).
func lastWritten(j Job) time.Time {
	if j.Updated.After(j.Created) {
		return j.Updated
	}
	return j.Created
}

// stale reports whether j is unfinished and was last written at least
// lease before now: old enough that its enqueue, if it happened, is over
// and its worker, if it has one, would have written it or kept its queue
// entry.
func stale(now time.Time, lease time.Duration, j Job) bool {
	return !j.Final() && !now.Before(lastWritten(j).Add(lease))
}

// lostJobs decides which of jobs to enqueue again at now: the stale ones
// (see stale) whose id is not among held, the jobs their pipelines' queues
// hold. A nil held means "not asked yet": every stale job is returned, the
// candidates whose pipelines must be asked.
func lostJobs(now time.Time, lease time.Duration, jobs []Job, held map[string]bool) []Job {
	var out []Job
	for _, j := range jobs {
		if stale(now, lease, j) && !held[j.ID] {
			out = append(out, j)
		}
	}
	return out
}

// RecoverLost enqueues again every job the store says is unfinished, last
// written at least lease ago, that no queue holds; it returns how many.
// The worker calls it every ReclaimAfter with lease = ReclaimAfter. It
// reads the index of unfinished jobs (prefixOpen), not every job record:
// its cost follows the backlog, not the history.
func (w *Worker) RecoverLost(ctx context.Context, lease time.Duration) (int, error) {
	open, err := w.cfg.Store.List(ctx, prefixOpen)
	if err != nil {
		return 0, fmt.Errorf("pfop: recover lost jobs: list unfinished jobs: %w", err)
	}
	// The queues are read before the jobs: a job enqueued after the queues
	// were read was written just before (created, or moved forward by a
	// recovery), so it is not stale when read below; one that ended and
	// left its queue meanwhile is seen final.
	held := map[string]bool{}
	asked := map[string]bool{}
	for _, kv := range open {
		p := string(kv.Value)
		if asked[p] {
			continue
		}
		asked[p] = true
		if ValidatePipeline(p) != nil {
			continue // repaired by PruneJobs; its jobs are skipped below
		}
		ids, err := w.cfg.Queue.JobIDs(ctx, p)
		if err != nil {
			return 0, fmt.Errorf("pfop: recover lost jobs: %w", err)
		}
		for _, id := range ids {
			held[id] = true
		}
	}
	var cands []Job
	for _, kv := range open {
		id := strings.TrimPrefix(kv.Key, prefixOpen)
		if held[id] || ValidatePipeline(string(kv.Value)) != nil {
			continue
		}
		j, _, err := w.jobs.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // removed since the listing (PruneJobs drops the entry)
		}
		if err != nil {
			return 0, fmt.Errorf("pfop: recover lost jobs: %w", err)
		}
		if j.Pipeline == string(kv.Value) { // else its queue was not asked
			cands = append(cands, j)
		}
	}
	n := 0
	for _, j := range lostJobs(w.cfg.Now(), lease, cands, held) {
		now := w.cfg.Now()
		_, err := w.jobs.Update(ctx, j.ID, func(cur *Job) error {
			if !stale(now, lease, *cur) {
				return errNotLost
			}
			cur.Updated = now
			return nil
		})
		if errors.Is(err, errNotLost) || errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("pfop: recover lost jobs: %w", err)
		}
		if err := w.cfg.Queue.Enqueue(ctx, j.Pipeline, j.ID, j.Type == 1); err != nil {
			// Updated moved: the next sweep after a lease tries again.
			return n, fmt.Errorf("pfop: recover lost jobs: %w", err)
		}
		w.signal()
		w.log.Warn("pfop: job was in no queue; enqueued again", "job", j.ID, "pipeline", j.Pipeline,
			"code", j.Code, "last written", lastWritten(j))
		n++
	}
	return n, nil
}

// Retention of job records.
//
// A finished job's record answers prefop for JobRetention after it was
// last written, then PruneJobs deletes it (prefop then says the id is
// unknown, as Qiniu's does for an old job). The result records
// (?p/1/<fop>) stay: they are the data, not the job.

// DefaultJobRetention is how long a finished job's record is kept.
const DefaultJobRetention = 7 * 24 * time.Hour

// pruneEvery is the period of PruneJobs in the worker's recovery loop.
const pruneEvery = time.Hour

// pruneAction is what PruneJobs does with one job record.
type pruneAction int

const (
	keepJob    pruneAction = iota
	deleteJob              // finished at least retention ago: the record (and any index entry) goes
	indexJob               // unfinished without a (right) index entry: one is written
	unindexJob             // finished but still indexed: the entry goes
)

// pruneDecision decides, at now, what to do with job j, whose index entry
// holds pipeline indexed (hasIndex false: none). A retention <= 0 keeps
// every record.
func pruneDecision(now time.Time, retention time.Duration, j Job, indexed string, hasIndex bool) pruneAction {
	switch {
	case j.Final() && retention > 0 && !now.Before(lastWritten(j).Add(retention)):
		return deleteJob
	case j.Final() && hasIndex:
		return unindexJob
	case !j.Final() && (!hasIndex || indexed != j.Pipeline):
		return indexJob
	}
	return keepJob
}

// PruneJobs deletes the records of jobs that ended at least retention ago
// (retention <= 0: none) and repairs the index of unfinished jobs (an
// unfinished job without an entry, written before the index existed, gets
// one; entries of finished or deleted jobs go). Every change is
// conditional on the job record's version, so a job written meanwhile is
// left for the next run. It returns how many job records it deleted. The
// worker runs it at start and every hour.
func (w *Worker) PruneJobs(ctx context.Context, retention time.Duration) (int, error) {
	// The index first: an entry whose job is missing from the later
	// listing belonged to a job deleted in between (both are written in
	// one transaction).
	open, err := w.cfg.Store.List(ctx, prefixOpen)
	if err != nil {
		return 0, fmt.Errorf("pfop: prune jobs: list unfinished jobs: %w", err)
	}
	indexed := make(map[string]string, len(open))
	for _, kv := range open {
		indexed[strings.TrimPrefix(kv.Key, prefixOpen)] = string(kv.Value)
	}
	kvs, err := w.cfg.Store.List(ctx, store.PrefixJobs)
	if err != nil {
		return 0, fmt.Errorf("pfop: prune jobs: list jobs: %w", err)
	}
	now := w.cfg.Now()
	pruned := 0
	seen := make(map[string]bool, len(kvs))
	for _, kv := range kvs {
		var j Job
		if err := json.Unmarshal(kv.Value, &j); err != nil {
			w.log.Warn("pfop: prune jobs: undecodable job record", "key", kv.Key, "err", err)
			continue
		}
		id := strings.TrimPrefix(kv.Key, store.PrefixJobs)
		seen[id] = true
		p, has := indexed[id]
		var ops []store.Op
		switch pruneDecision(now, retention, j, p, has) {
		case deleteJob:
			ops = []store.Op{{Kind: store.OpDelete, Key: kv.Key, Version: kv.Version}, {Kind: store.OpDelete, Key: openKey(id)}}
		case unindexJob:
			ops = []store.Op{{Kind: store.OpCheck, Key: kv.Key, Version: kv.Version}, {Kind: store.OpDelete, Key: openKey(id)}}
		case indexJob:
			ops = []store.Op{{Kind: store.OpCheck, Key: kv.Key, Version: kv.Version}, {Kind: store.OpPut, Key: openKey(id), Value: []byte(j.Pipeline)}}
		default:
			continue
		}
		err := w.cfg.Store.Txn(ctx, ops)
		if errors.Is(err, store.ErrConflict) {
			continue // written meanwhile: the next run decides again
		}
		if err != nil {
			return pruned, fmt.Errorf("pfop: prune jobs: %w", err)
		}
		if ops[0].Kind == store.OpDelete {
			pruned++
		}
	}
	for id := range indexed {
		if !seen[id] {
			if err := w.cfg.Store.Delete(ctx, openKey(id)); err != nil {
				return pruned, fmt.Errorf("pfop: prune jobs: %w", err)
			}
		}
	}
	return pruned, nil
}
