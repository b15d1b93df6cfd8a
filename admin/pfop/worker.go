package pfop

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/tick"
	"github.com/doraproject/dora/router"
	"github.com/doraproject/dora/router/origin"
)

// Processor runs a pipeline on an object; *router.Router is one (Process:
// the same engine as the HTTP path).
type Processor interface {
	Process(ctx context.Context, bucket, key, fops string, w io.Writer) (router.Result, error)
}

// Stater tells whether an object exists; origin.Reader is one.
type Stater interface {
	Stat(ctx context.Context, bucket, key string) (origin.Object, error)
}

// Defaults of WorkerConfig.
const (
	DefaultLimit         = 4
	DefaultConcurrency   = 8
	DefaultPollInterval  = 200 * time.Millisecond
	DefaultReclaimAfter  = time.Minute
	DefaultGrace         = 30 * time.Second
	storeWriteTimeout    = 10 * time.Second
	maxConsumerNameBytes = 128
)

// WorkerConfig configures a Worker. Store, Queue, Processor and Objects
// are required.
type WorkerConfig struct {
	Store     store.Store
	Queue     Queue
	Processor Processor
	Objects   Stater // where results are looked for (returnOld)
	Notify    NotifyConfig
	// Limits are the per-pipeline concurrency limits, counted across
	// every worker of the queue (all workers must be given the same);
	// DefaultLimit applies to the others.
	Limits       map[string]int
	DefaultLimit int
	// Concurrency is how many jobs this worker runs at once.
	Concurrency int
	// Consumer names this worker in the queue; default host-pid-random.
	Consumer string
	// PollInterval is the wait between claims when there was nothing to do.
	PollInterval time.Duration
	// ReclaimAfter is how long a claimed job may go without its worker's
	// heartbeat before another worker takes it over; heartbeats are sent
	// every ReclaimAfter/4. It is also the period and the lease of the
	// recovery of jobs no queue holds (RecoverLost).
	ReclaimAfter time.Duration
	// JobRetention is how long a finished job's record is kept after it
	// was last written (prefop answers for it), default
	// DefaultJobRetention; negative keeps records forever.
	JobRetention time.Duration
	// Grace is how long Run lets running jobs finish once its context
	// ends; jobs still running then are handed back to the queue.
	Grace  time.Duration
	Logger *slog.Logger
	Now    func() time.Time
	// Metrics, when set, receives the job outcomes and latencies
	// (dora_pfop_jobs_total, dora_pfop_job_duration_seconds) and, for a
	// queue that can count (DepthReader), dora_pfop_queue_jobs.
	Metrics prometheus.Registerer
}

// Worker claims jobs from the queue and runs them.
type Worker struct {
	cfg     WorkerConfig
	jobs    Jobs
	notify  *Notifier
	log     *slog.Logger
	wake    chan struct{}
	metrics *workerMetrics
}

// NewWorker checks cfg and returns a Worker.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	var missing []string
	if cfg.Store == nil {
		missing = append(missing, "Store")
	}
	if cfg.Queue == nil {
		missing = append(missing, "Queue")
	}
	if cfg.Processor == nil {
		missing = append(missing, "Processor")
	}
	if cfg.Objects == nil {
		missing = append(missing, "Objects")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("pfop worker: missing %v", missing)
	}
	for p, n := range cfg.Limits {
		if err := ValidatePipeline(p); err != nil {
			return nil, fmt.Errorf("pfop worker: limits: %w", err)
		}
		if n <= 0 {
			return nil, fmt.Errorf("pfop worker: limit of %s must be positive, not %d", p, n)
		}
	}
	if cfg.DefaultLimit <= 0 {
		cfg.DefaultLimit = DefaultLimit
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.ReclaimAfter <= 0 {
		cfg.ReclaimAfter = DefaultReclaimAfter
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	if cfg.JobRetention == 0 {
		cfg.JobRetention = DefaultJobRetention
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Consumer == "" {
		host, _ := os.Hostname()
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("pfop worker: consumer name: %w", err)
		}
		cfg.Consumer = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if len(cfg.Consumer) > maxConsumerNameBytes {
		return nil, fmt.Errorf("pfop worker: consumer name longer than %d bytes", maxConsumerNameBytes)
	}
	m, err := newWorkerMetrics(cfg.Metrics, cfg.Queue)
	if err != nil {
		return nil, fmt.Errorf("pfop worker: metrics: %w", err)
	}
	return &Worker{
		cfg: cfg, jobs: Jobs{Store: cfg.Store}, notify: NewNotifier(cfg.Notify),
		log: cfg.Logger, wake: make(chan struct{}, 1), metrics: m,
	}, nil
}

// Consumer returns the worker's name in the queue.
func (w *Worker) Consumer() string { return w.cfg.Consumer }

func (w *Worker) limit(pipeline string) int {
	if n, ok := w.cfg.Limits[pipeline]; ok {
		return n
	}
	return w.cfg.DefaultLimit
}

func (w *Worker) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run claims and runs jobs until ctx ends; then it stops claiming, lets
// running jobs finish for up to Grace and hands the others back.
func (w *Worker) Run(ctx context.Context) error {
	jobCtx, cancelJobs := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelJobs()
	sem := make(chan struct{}, w.cfg.Concurrency)
	var wg sync.WaitGroup
	// running holds the messages this worker runs: a Reclaim may hand one
	// back to it (its own heartbeat came late), and a message is never run
	// twice at once by one worker.
	var runMu sync.Mutex
	running := map[string]bool{}
	start := func(m Message) {
		key := m.Pipeline + "\x00" + m.ID
		runMu.Lock()
		running[key] = true
		runMu.Unlock()
		wg.Go(func() {
			defer func() {
				runMu.Lock()
				delete(running, key)
				runMu.Unlock()
				<-sem
				w.signal()
			}()
			w.handle(jobCtx, m)
		})
	}
	isRunning := func(m Message) bool {
		runMu.Lock()
		defer runMu.Unlock()
		return running[m.Pipeline+"\x00"+m.ID]
	}
	recoverDone := make(chan struct{})
	go func() { defer close(recoverDone); w.recoverLoop(ctx) }()
	defer func() { <-recoverDone }()
	var lastReclaim time.Time
	next := 0
	for ctx.Err() == nil {
		started := false
		pipelines, err := w.cfg.Queue.Pipelines(ctx)
		if err != nil && ctx.Err() == nil {
			w.log.Warn("pfop: list pipelines", "err", err)
		}
		if now := w.cfg.Now(); now.Sub(lastReclaim) >= w.cfg.ReclaimAfter/2 {
			lastReclaim = now
			for _, p := range pipelines {
				// Take over no more than there are free slots for: a
				// message taken but not started is not heartbeated, so
				// another worker would reclaim it and both would run it.
				// Only this loop fills slots, so those reserved stay free.
				free := 0
			reserve:
				for {
					select {
					case sem <- struct{}{}:
						free++
					default:
						break reserve
					}
				}
				var msgs []Message
				if free > 0 {
					msgs, err = w.cfg.Queue.Reclaim(ctx, p, w.cfg.Consumer, w.cfg.ReclaimAfter, free)
					if err != nil {
						w.log.Warn("pfop: reclaim", "pipeline", p, "err", err)
					}
				}
				for _, m := range msgs {
					if isRunning(m) {
						continue // ours already, still running: the claim is renewed
					}
					if free == 0 || ctx.Err() != nil { // more than asked for, or shutting down
						w.release(m)
						continue
					}
					w.log.Info("pfop: reclaimed a job of a silent worker", "job", m.JobID, "pipeline", p)
					free--
					start(m)
					started = true
				}
				for ; free > 0; free-- {
					<-sem
				}
			}
		}
		for i := range pipelines {
			p := pipelines[(next+i)%len(pipelines)]
			select {
			case sem <- struct{}{}:
			default:
				continue
			}
			m, ok, err := w.cfg.Queue.Claim(ctx, p, w.cfg.Consumer, w.limit(p))
			if err != nil || !ok {
				<-sem
				if err != nil && ctx.Err() == nil {
					w.log.Warn("pfop: claim", "pipeline", p, "err", err)
				}
				continue
			}
			start(m)
			started = true
		}
		if len(pipelines) > 0 {
			next = (next + 1) % len(pipelines)
		}
		if started {
			continue
		}
		t := time.NewTimer(w.cfg.PollInterval)
		select {
		case <-ctx.Done():
		case <-w.wake:
		case <-t.C:
		}
		t.Stop()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(w.cfg.Grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		cancelJobs()
		<-done
	}
	return ctx.Err()
}

// recoverLoop runs RecoverLost at start and every ReclaimAfter until ctx
// ends, with a lease of ReclaimAfter: a job lost by its queue waits at most
// about two of them. Before it, at start and then hourly, PruneJobs
// deletes expired job records and repairs the index RecoverLost reads.
func (w *Worker) recoverLoop(ctx context.Context) {
	var lastPrune time.Time
	pass := func() {
		if now := w.cfg.Now(); lastPrune.IsZero() || now.Sub(lastPrune) >= pruneEvery || now.Before(lastPrune) {
			lastPrune = now
			if n, err := w.PruneJobs(ctx, w.cfg.JobRetention); err != nil && ctx.Err() == nil {
				w.log.Warn("pfop: prune job records", "err", err, "deleted", n)
			} else if n > 0 {
				w.log.Info("pfop: deleted expired job records", "count", n)
			}
		}
		if n, err := w.RecoverLost(ctx, w.cfg.ReclaimAfter); err != nil && ctx.Err() == nil {
			w.log.Warn("pfop: recover lost jobs", "err", err, "enqueued", n)
		}
	}
	pass()
	tick.Every(ctx, w.cfg.ReclaimAfter, pass)
}

// release hands a message back, on a context of its own (Run's may be over).
func (w *Worker) release(m Message) {
	ctx, cancel := context.WithTimeout(context.Background(), storeWriteTimeout)
	defer cancel()
	if err := w.cfg.Queue.Release(ctx, m); errors.Is(err, ErrLost) {
		w.log.Info("pfop: not handed back: another worker has the job now", "job", m.JobID)
	} else if err != nil {
		w.log.Warn("pfop: hand back", "job", m.JobID, "err", err)
	}
}

// outcome of one run of a job.
type outcome int

const (
	outcomeDone     outcome = iota // ack
	outcomeHandBack                // release: shutting down or a transient failure
	outcomeLost                    // another worker has it now: neither
)

// handle runs one claimed message with a heartbeat, then acks it, hands
// it back or lets it go.
func (w *Worker) handle(ctx context.Context, m Message) {
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var lost sync.Once
	lostc := make(chan struct{})
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		// On ErrLost, cancel ends hctx and so the loop.
		tick.Every(hctx, max(w.cfg.ReclaimAfter/4, time.Millisecond), func() {
			if err := w.cfg.Queue.Touch(hctx, m, w.cfg.Consumer); errors.Is(err, ErrLost) {
				w.log.Warn("pfop: job taken over by another worker", "job", m.JobID)
				lost.Do(func() { close(lostc) })
				cancel()
			} else if err != nil && hctx.Err() == nil {
				w.log.Warn("pfop: heartbeat", "job", m.JobID, "err", err)
			}
		})
	}()
	out := w.runJob(hctx, m)
	cancel()
	<-hbDone
	select {
	case <-lostc:
		out = outcomeLost
	default:
	}
	switch out {
	case outcomeDone:
		actx, acancel := context.WithTimeout(context.Background(), storeWriteTimeout)
		defer acancel()
		if err := w.cfg.Queue.Ack(actx, m); err != nil {
			w.log.Warn("pfop: ack", "job", m.JobID, "err", err)
		}
	case outcomeHandBack:
		w.release(m)
	}
}

// writeCtx is a context for recording outcomes: not cancelled by the
// shutdown of the run that produced them.
func writeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), storeWriteTimeout)
}

// runJob runs every unfinished item of the job, records each outcome as
// soon as it is known, then the job's, then notifies.
func (w *Worker) runJob(ctx context.Context, m Message) outcome {
	log := w.log.With("job", m.JobID, "pipeline", m.Pipeline)
	wctx, cancel := writeCtx(ctx)
	job, _, err := w.jobs.Get(wctx, m.JobID)
	cancel()
	if errors.Is(err, ErrNotFound) {
		log.Warn("pfop: queued job has no record; dropped")
		return outcomeDone
	}
	if err != nil {
		log.Warn("pfop: read job", "err", err)
		return outcomeHandBack
	}
	if job.Final() {
		return outcomeDone // a re-delivery of a job that ended
	}
	wctx, cancel = writeCtx(ctx)
	job, err = w.jobs.Update(wctx, job.ID, func(j *Job) error {
		j.Code, j.Attempts, j.Updated = CodeProcessing, j.Attempts+1, w.cfg.Now()
		return nil
	})
	cancel()
	if err != nil {
		log.Warn("pfop: mark processing", "err", err)
		return outcomeHandBack
	}
	for i := range job.Items {
		if c := job.Items[i].Code; c == CodeSuccess || c == CodeFailed {
			continue // done by an earlier run
		}
		it := w.runItem(ctx, job, i)
		if ctx.Err() != nil {
			return outcomeHandBack // shutting down (or lost): not an outcome
		}
		wctx, cancel := writeCtx(ctx)
		job, err = w.jobs.Update(wctx, job.ID, func(j *Job) error {
			j.Items[i], j.Updated = it, w.cfg.Now()
			return nil
		})
		cancel()
		if err != nil {
			log.Warn("pfop: record item", "item", i, "err", err)
			return outcomeHandBack
		}
	}
	code := CodeSuccess
	for _, it := range job.Items {
		if it.Code != CodeSuccess {
			code = CodeFailed
		}
	}
	// The job stays "processing" until its notification is done, so
	// that a final code is only seen once the job has really ended.
	if job.NotifyURL != "" {
		st := job
		st.Code = code
		body, err := json.Marshal(st.Status())
		if err != nil {
			log.Error("pfop: encode status", "err", err)
			return outcomeDone
		}
		nerr := w.notify.Notify(ctx, job.NotifyURL, body)
		if nerr != nil && ctx.Err() != nil {
			return outcomeHandBack // notify again after the restart
		}
		if nerr != nil {
			log.Warn("pfop: notification failed", "url", job.NotifyURL, "err", nerr)
			code = CodeNotifyFailed
		}
	}
	wctx, cancel = writeCtx(ctx)
	job, err = w.jobs.Update(wctx, job.ID, func(j *Job) error {
		j.Code, j.Updated, j.Notified = code, w.cfg.Now(), j.NotifyURL != ""
		return nil
	})
	cancel()
	if err != nil {
		log.Warn("pfop: record job", "err", err)
		return outcomeHandBack
	}
	w.metrics.ended(job, code, w.cfg.Now())
	log.Info("pfop: job ended", "code", code, "bucket", job.Bucket, "key", job.Key)
	return outcomeDone
}

func failed(cmd, msg string, step int) Item {
	it := Item{Cmd: cmd, Code: CodeFailed, Desc: Desc(CodeFailed), Error: msg}
	if step >= 0 {
		it.ErrorIndex = &step
	}
	return it
}

// runItem runs one pipeline of the job and returns its outcome.
func (w *Worker) runItem(ctx context.Context, job Job, i int) Item {
	cmd := job.Items[i].Cmd
	plan, err := planItem(job.Bucket, job.Key, cmd)
	if err != nil {
		return failed(cmd, err.Error(), -1)
	}
	ok := Item{Cmd: cmd, Code: CodeSuccess, Desc: Desc(CodeSuccess), Key: plan.key}
	// A re-run after a crash: this job may have saved the result already.
	if plan.pipeline != "" {
		if rec, err := w.jobs.GetResult(ctx, job.Bucket, job.Key, plan.pipeline); err == nil &&
			rec.Job == job.ID && rec.SavedBucket == plan.bucket && rec.SavedKey == plan.key {
			if _, err := w.cfg.Objects.Stat(ctx, plan.bucket, plan.key); err == nil {
				ok.Hash = rec.Hash
				return ok
			}
		}
	}
	if !job.Force {
		obj, err := w.cfg.Objects.Stat(ctx, plan.bucket, plan.key)
		switch {
		case err == nil:
			ok.Hash, ok.ReturnOld = obj.ETag, 1
			if plan.pipeline != "" {
				if _, gerr := w.jobs.GetResult(ctx, job.Bucket, job.Key, plan.pipeline); errors.Is(gerr, ErrNotFound) {
					w.record(ctx, job, plan, obj.ETag)
				}
			}
			return ok
		case !errors.Is(err, origin.ErrNotFound):
			return failed(cmd, fmt.Sprintf("look for an earlier result: %v", err), -1)
		}
	}
	res, err := w.cfg.Processor.Process(ctx, job.Bucket, job.Key, plan.run, io.Discard)
	if err != nil {
		var pe *router.ProcessError
		if errors.As(err, &pe) {
			return failed(cmd, pe.Msg, pe.Step)
		}
		return failed(cmd, err.Error(), -1)
	}
	if res.Saved != nil {
		ok.Hash = res.Saved.ETag
	}
	if plan.pipeline != "" {
		w.record(ctx, job, plan, ok.Hash)
	}
	return ok
}

// record indexes a result for `?p/1/<fop>`.
func (w *Worker) record(ctx context.Context, job Job, plan itemPlan, hash string) {
	wctx, cancel := writeCtx(ctx)
	defer cancel()
	err := w.jobs.PutResult(wctx, ResultRecord{
		Bucket: job.Bucket, Key: job.Key, Fop: plan.pipeline, SavedBucket: plan.bucket, SavedKey: plan.key,
		Hash: hash, Job: job.ID, Created: w.cfg.Now(),
	})
	if err != nil {
		w.log.Warn("pfop: index result", "job", job.ID, "err", err)
	}
}
