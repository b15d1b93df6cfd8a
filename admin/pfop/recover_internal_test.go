package pfop

import (
	"testing"
	"time"
)

// TestLostJobs is the recovery's decision table: which jobs are enqueued
// again at now, given the jobs the queues hold.
func TestLostJobs(t *testing.T) {
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	const lease = time.Minute
	job := func(id string, code int, updatedAgo time.Duration) Job {
		return Job{ID: id, Code: code, Created: now.Add(-time.Hour), Updated: now.Add(-updatedAgo)}
	}
	cases := []struct {
		name string
		job  Job
		held bool
		want bool
	}{
		{"waiting, old, in no queue", job("a", CodeWaiting, 2*lease), false, true},
		{"processing, old, in no queue (worker and entry gone)", job("a", CodeProcessing, 2*lease), false, true},
		{"exactly one lease old", job("a", CodeWaiting, lease), false, true},
		{"waiting, old, still queued", job("a", CodeWaiting, 2*lease), true, false},
		{"processing, old, held in flight (a long item)", job("a", CodeProcessing, time.Hour), true, false},
		{"waiting, just written (its enqueue may be under way)", job("a", CodeWaiting, lease-time.Second), false, false},
		{"written in the future (another machine's clock)", job("a", CodeWaiting, -time.Minute), false, false},
		{"succeeded", job("a", CodeSuccess, time.Hour), false, false},
		{"failed", job("a", CodeFailed, time.Hour), false, false},
		{"notify failed", job("a", CodeNotifyFailed, time.Hour), false, false},
		{"no Updated: Created counts", Job{ID: "a", Code: CodeWaiting, Created: now.Add(-2 * lease)}, false, true},
		{"no Updated, just created", Job{ID: "a", Code: CodeWaiting, Created: now}, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			held := map[string]bool{}
			if c.held {
				held[c.job.ID] = true
			}
			got := lostJobs(now, lease, []Job{c.job}, held)
			if (len(got) == 1) != c.want {
				t.Fatalf("lost = %v, want %v", len(got) == 1, c.want)
			}
			// nil held (before the queues are asked): every stale job is a candidate.
			cands := lostJobs(now, lease, []Job{c.job}, nil)
			if wantCand := c.want || c.held && stale(now, lease, c.job); (len(cands) == 1) != wantCand {
				t.Fatalf("candidate = %v, want %v", len(cands) == 1, wantCand)
			}
		})
	}
}

// TestPruneDecision is the retention's decision table: what PruneJobs does
// with one job record at now.
func TestPruneDecision(t *testing.T) {
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	const keep = 7 * 24 * time.Hour
	job := func(code int, writtenAgo time.Duration) Job {
		return Job{ID: "a", Code: code, Pipeline: "p", Created: now.Add(-writtenAgo - time.Hour), Updated: now.Add(-writtenAgo)}
	}
	cases := []struct {
		name      string
		retention time.Duration
		job       Job
		indexed   string
		hasIndex  bool
		want      pruneAction
	}{
		{"succeeded past retention", keep, job(CodeSuccess, keep+time.Hour), "", false, deleteJob},
		{"failed exactly at retention", keep, job(CodeFailed, keep), "", false, deleteJob},
		{"notify failed past retention, still indexed", keep, job(CodeNotifyFailed, 2*keep), "p", true, deleteJob},
		{"succeeded within retention", keep, job(CodeSuccess, keep-time.Second), "", false, keepJob},
		{"succeeded within retention, still indexed", keep, job(CodeSuccess, time.Hour), "p", true, unindexJob},
		{"written in the future (another machine's clock)", keep, job(CodeSuccess, -time.Hour), "", false, keepJob},
		{"no Updated: Created counts", keep, Job{Code: CodeSuccess, Created: now.Add(-2 * keep)}, "", false, deleteJob},
		{"retention 0 keeps forever", 0, job(CodeSuccess, 100*keep), "", false, keepJob},
		{"negative retention keeps forever", -1, job(CodeSuccess, 100*keep), "", false, keepJob},
		{"waiting, ancient, indexed: never pruned", keep, job(CodeWaiting, 100*keep), "p", true, keepJob},
		{"processing, indexed", keep, job(CodeProcessing, time.Minute), "p", true, keepJob},
		{"waiting without an index entry (older record)", keep, job(CodeWaiting, 100*keep), "", false, indexJob},
		{"processing indexed under another pipeline", keep, job(CodeProcessing, time.Minute), "q", true, indexJob},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := pruneDecision(now, c.retention, c.job, c.indexed, c.hasIndex); got != c.want {
				t.Fatalf("pruneDecision = %d, want %d", got, c.want)
			}
		})
	}
}
