package platform

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/cli/platform/platformtest"
)

// wakeStages are the log messages that mark the steps of a wake from zero,
// in order: the autoscaler hears the held request, decides and writes the
// new count, the local runtime is asked to scale, the process is spawned,
// and its first health probe passes (it is then published to the pool).
var wakeStages = []string{"autoscaler woken", "scaling", "scale", "instance started", "instance healthy"}

// BenchmarkWakeFromZero measures issue 11's row "first request after scale
// to zero, host process": the embedded platform (`dorad dev`: bolt store,
// local runtime running program packages as host processes, memory load
// store, an autoscaler whose tick is an hour away, so that only the
// router's wake-up can start the instance: a tick within the run would
// also scale up from zero on the load of the earlier iterations), a
// floor-0 deployment of
// examples/passthru at zero instances, then the time from sending GET
// /<key>?passthru through the router until its response is read in full.
// Between iterations the deployment is resized to 0 and each iteration
// must add a "scale from zero" event (else the instance was not started
// by the wake-up and the figure would lie). It reports the median and the
// maximum in s/wake and max-s/wake, and the median time from sending to
// each stage of wakeStages (woken-s, … healthy-s); with -v it logs each
// iteration's breakdown. Run it with -benchtime=Nx (N wake-ups): each
// wake-up takes a resize and a spawn besides the timed part. The first
// build compiles passthru into a Go cache kept in
// $TMPDIR/dora-bench-go-build across runs.
func BenchmarkWakeFromZero(b *testing.B) {
	ctx := context.Background()
	rec := &stageRecorder{}
	cache := filepath.Join(os.TempDir(), "dora-bench-go-build")
	dev, err := StartDev(ctx, DevConfig{
		DataDir:             filepath.Join(platformtest.ReachableTempDir(b), "data"),
		AdminAddr:           "127.0.0.1:0",
		RouterAddr:          "127.0.0.1:0",
		Logger:              slog.New(rec),
		GoCache:             cache,
		AutoscaleInterval:   time.Hour,
		HoldTimeout:         30 * time.Second,
		PackagesAsProcesses: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dev.Close() })
	c := client.New(dev.AdminURL, dev.RootAK, dev.RootSK)
	if _, err := c.CreateBucket(ctx, client.BucketSpec{Name: "wake"}); err != nil {
		b.Fatal(err)
	}
	body := strings.Repeat("wake up\n", 512) // 4 KiB
	if _, err := c.PutObject(ctx, "wake", "in.txt", strings.NewReader(body), int64(len(body)), "text/plain"); err != nil {
		b.Fatal(err)
	}
	if _, err := c.RegisterUfop(ctx, "passthru", "wake-up benchmark", dora.ModePrivate); err != nil {
		b.Fatal(err)
	}
	build := platformtest.Build(ctx, b, c, "passthru", filepath.Join(platformtest.RepoRoot(b), "examples", "passthru"))
	dep := platformtest.ReleaseBuild(ctx, b, c, "passthru", build, "dora", client.DeployRequest{Region: "z0", Expect: 0, Max: 1})

	hc := &http.Client{Timeout: time.Minute}
	defer hc.CloseIdleConnections()
	// wake scales the deployment to zero, then times one request.
	wake := func() (time.Duration, map[string]time.Duration) {
		b.StopTimer()
		defer b.StartTimer()
		if _, err := c.Resize(ctx, "passthru", 0, "z0"); err != nil {
			b.Fatal(err)
		}
		platformtest.Eventually(b, time.Minute, "scaled to zero", func() error {
			d, err := c.Deployment(ctx, "passthru", dep.ID)
			if err != nil {
				return err
			}
			if d.Status != dora.DeployRunning || d.Desired != 0 || len(d.Instances) != 0 {
				return fmt.Errorf("status %s (%s), desired %d, %d instances", d.Status, d.Message, d.Desired, len(d.Instances))
			}
			return nil
		})
		// The published set reaches the router's pool through channels;
		// leave them a moment (the event check below catches a miss).
		time.Sleep(100 * time.Millisecond)
		evs, err := c.DeploymentEvents(ctx, "passthru", dep.ID)
		if err != nil {
			b.Fatal(err)
		}
		hc.CloseIdleConnections()
		rec.reset()

		b.StartTimer()
		start := time.Now()
		code, got, err := platformtest.Get(hc, dev.RouterURL, "wake", "/in.txt?passthru")
		took := time.Since(start)
		b.StopTimer()

		if err != nil || code != 200 || string(got) != body {
			b.Fatalf("first request from zero: %d %v (%d bytes)", code, err, len(got))
		}
		// The autoscaler writes the event while the runtime scales: it
		// may land just after the answer.
		after, err := c.DeploymentEvents(ctx, "passthru", dep.ID)
		for deadline := time.Now().Add(10 * time.Second); err == nil && len(after) == len(evs) && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
			after, err = c.DeploymentEvents(ctx, "passthru", dep.ID)
		}
		if err != nil {
			b.Fatal(err)
		}
		if len(after) != len(evs)+1 || after[len(after)-1].Reason != "scale from zero" || after[len(after)-1].To != 1 {
			b.Fatalf("the request did not wake the deployment from zero: events before %d, after %+v", len(evs), after)
		}
		return took, rec.since(start)
	}

	warm, _ := wake() // the platform's first wake-up: not counted
	b.Logf("warm-up wake-up: %v", warm)
	var took []time.Duration
	stages := map[string][]time.Duration{}
	b.ResetTimer()
	for b.Loop() {
		d, st := wake()
		took = append(took, d)
		line := fmt.Sprintf("wake %d: %v", len(took), d.Round(time.Millisecond))
		for _, s := range wakeStages {
			if at, ok := st[s]; ok {
				stages[s] = append(stages[s], at)
				line += fmt.Sprintf("; %s +%v", s, at.Round(100*time.Microsecond))
			}
		}
		b.Log(line)
	}
	b.ReportMetric(median(took).Seconds(), "s/wake")
	b.ReportMetric(slices.Max(took).Seconds(), "max-s/wake")
	for _, s := range wakeStages {
		if len(stages[s]) == len(took) {
			b.ReportMetric(median(stages[s]).Seconds(), strings.ReplaceAll(strings.TrimPrefix(s, "instance "), " ", "-")+"-s")
		}
	}
}

// median of ds (not empty); the mean of the middle two for an even count.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// stageRecorder is a slog.Handler that keeps when each message was first
// logged since the last reset (the platform's own log lines are the
// trace of a wake-up).
type stageRecorder struct {
	mu    sync.Mutex
	first map[string]time.Time
}

func (r *stageRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *stageRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.first == nil {
		r.first = map[string]time.Time{}
	}
	if _, ok := r.first[rec.Message]; !ok {
		r.first[rec.Message] = rec.Time
	}
	return nil
}

func (r *stageRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *stageRecorder) WithGroup(string) slog.Handler      { return r }

func (r *stageRecorder) reset() {
	r.mu.Lock()
	r.first = nil
	r.mu.Unlock()
}

// since returns, for each stage logged, how long after start it was.
func (r *stageRecorder) since(start time.Time) map[string]time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]time.Duration{}
	for _, s := range wakeStages {
		if t, ok := r.first[s]; ok {
			out[s] = t.Sub(start)
		}
	}
	return out
}
