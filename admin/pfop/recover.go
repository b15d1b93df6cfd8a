package pfop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
// The worker calls it every ReclaimAfter with lease = ReclaimAfter.
func (w *Worker) RecoverLost(ctx context.Context, lease time.Duration) (int, error) {
	kvs, err := w.cfg.Store.List(ctx, store.PrefixJobs)
	if err != nil {
		return 0, fmt.Errorf("pfop: recover lost jobs: list jobs: %w", err)
	}
	jobs := make([]Job, 0, len(kvs))
	for _, kv := range kvs {
		var j Job
		if err := json.Unmarshal(kv.Value, &j); err != nil {
			w.log.Warn("pfop: recover lost jobs: undecodable job record", "key", kv.Key, "err", err)
			continue
		}
		jobs = append(jobs, j)
	}
	cands := lostJobs(w.cfg.Now(), lease, jobs, nil)
	if len(cands) == 0 {
		return 0, nil
	}
	// The queues are read after the store: a job enqueued after the store
	// was read is not stale (so not a candidate), and one that ended and
	// left its queue meanwhile is seen final by the CAS below.
	held := map[string]bool{}
	asked := map[string]bool{}
	for _, j := range cands {
		if asked[j.Pipeline] {
			continue
		}
		asked[j.Pipeline] = true
		ids, err := w.cfg.Queue.JobIDs(ctx, j.Pipeline)
		if err != nil {
			return 0, fmt.Errorf("pfop: recover lost jobs: %w", err)
		}
		for _, id := range ids {
			held[id] = true
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
