package pfop_test

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/pfop/boltq"
	"github.com/doraproject/dora/internal/api"
	"github.com/doraproject/dora/internal/store/bolt/bolttest"
	"github.com/doraproject/dora/router"
)

type savedProc struct{}

func (savedProc) Process(context.Context, string, string, string, io.Writer) (router.Result, error) {
	return router.Result{Saved: &api.Object{ETag: "Fetag"}}, nil
}

type noStat struct{}

func (noStat) Stat(context.Context, string, string) (api.Object, error) {
	return api.Object{}, io.EOF
}

// TestWorkerMetrics names each pfop series: the queue depth by state, the
// jobs ended by outcome and their latency from submission.
func TestWorkerMetrics(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := bolttest.Open(t, dir)
	q, err := boltq.Open(filepath.Join(dir, "q.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	reg := prometheus.NewRegistry()
	w, err := pfop.NewWorker(pfop.WorkerConfig{Store: st, Queue: q, Processor: savedProc{}, Objects: noStat{},
		PollInterval: time.Millisecond, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	job := pfop.Job{ID: "z0.000000000000000000000001", Code: pfop.CodeWaiting, Bucket: "b", Key: "k", Pipeline: "m",
		Created: time.Now().Add(-time.Second), Items: []pfop.Item{{Cmd: "qhash/md5", Code: pfop.CodeWaiting}}}
	if err := (pfop.Jobs{Store: st}).Create(ctx, job); err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctx, "m", job.ID, false); err != nil {
		t.Fatal(err)
	}
	depth := func() string {
		var b strings.Builder
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "dora_pfop_queue_jobs" {
				for _, m := range mf.GetMetric() {
					b.WriteString(m.String() + "\n")
				}
			}
		}
		return b.String()
	}
	if d := depth(); !strings.Contains(d, `value:"waiting"`) || !strings.Contains(d, "value:1") {
		t.Fatalf("queue depth before the run:\n%s", d)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { w.Run(wctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if n, _ := testutil.GatherAndCount(reg, "dora_pfop_jobs_total"); n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job never ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n, err := testutil.GatherAndCount(reg, "dora_pfop_job_duration_seconds"); err != nil || n != 1 {
		t.Fatalf("job latency series: %d, %v", n, err)
	}
	if d := depth(); !strings.Contains(d, "value:0") {
		t.Fatalf("queue depth after the run:\n%s", d)
	}
}
