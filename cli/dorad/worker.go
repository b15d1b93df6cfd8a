package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/cli/platform"
)

// queueHelp describes --queue of `dorad worker` and `dorad admin`.
const queueHelp = "pfop queue URL: bolt://<file> (one process) or redis://<host:port>/<db> (shared by the admins and every worker)"

func newWorkerCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run persistent-processing (pfop) jobs from the queue",
		Long: `worker claims pfop jobs from --queue and runs each of their pipelines with
the same engine as the router (an embedded router: instances read their input
from its one-shot URLs at --public-addr), saves the results to --objects and
records the jobs' outcomes in --store, where prefop reads them. Each named
pipeline (queue) has a concurrency limit counted across every worker: give all
workers the same --limits. On SIGINT/SIGTERM it stops claiming, lets running
jobs finish for --grace and hands the others back. With a redis:// queue, the
jobs of a worker that died are taken over by another after --reclaim-after.

Backends are URLs, chosen by scheme:
  --store      bolt://./.dora/meta.db | consul://127.0.0.1:8500/dora
  --queue      bolt://./.dora/pfop.db | redis://127.0.0.1:6379/0
  --discovery  memory:// (in-process only) | consul://127.0.0.1:8500
  --objects    file://./.dora/objects

Every flag can also be set as DORA_<FLAG> (dashes as underscores) or as a key
of the --config file.`,
		Example: `  dorad worker --store consul://127.0.0.1:8500/dora --queue redis://127.0.0.1:6379/0 \
    --discovery consul://127.0.0.1:8500 --objects file:///srv/dora/objects \
    --listen 0.0.0.0:8092 --public-addr 10.0.0.8:8092 --limits 0.default=8,video=2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(v)
			if err != nil {
				return err
			}
			limits, err := parseLimits(v.GetString("limits"))
			if err != nil {
				return err
			}
			if err := checkWorkerValues(v); err != nil {
				return err
			}
			imageJobs, err := maxImageJobs(v)
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			w, err := platform.StartWorker(ctx, platform.WorkerConfig{
				Listen:             v.GetString("listen"),
				PublicAddr:         v.GetString("public-addr"),
				Store:              v.GetString("store"),
				Queue:              v.GetString("queue"),
				Discovery:          v.GetString("discovery"),
				Objects:            v.GetString("objects"),
				Region:             v.GetString("region"),
				Limits:             limits,
				DefaultLimit:       v.GetInt("default-limit"),
				Concurrency:        v.GetInt("concurrency"),
				Consumer:           v.GetString("consumer"),
				ReclaimAfter:       v.GetDuration("reclaim-after"),
				JobRetention:       v.GetDuration("job-retention"),
				Grace:              v.GetDuration("grace"),
				AllowPrivateNotify: v.GetBool("allow-private-notify"),
				AllowPrivateMirror: v.GetBool("allow-private-mirror"),
				MaxImageJobs:       imageJobs,
				Logger:             log,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Dora pfop worker %s is running at %s\n", w.Consumer, w.URL)
			// No shutdown limit of our own: Close is bounded by --grace.
			select {
			case <-ctx.Done():
				log.Info("shutting down", "role", "worker")
			case <-w.Done():
				log.Error("a part failed; shutting down", "role", "worker", "err", w.Err())
			}
			if err := w.Close(); err != nil {
				return fmt.Errorf("worker: shutdown: %w", err)
			}
			return w.Err()
		},
	}
	f := cmd.Flags()
	f.SetNormalizeFunc(listenAlias)
	f.String("listen", platform.DefaultWorkerListen, "listen address of the embedded router (one-shot input URLs, /healthz, /metrics)")
	f.String("public-addr", "", "host:port instances reach this worker at for their input (default the listen address)")
	addBackendFlag(f, "store", platform.DefaultStoreURL, storeHelp)
	addBackendFlag(f, "queue", platform.DefaultQueueURL, queueHelp)
	addBackendFlag(f, "discovery", platform.DefaultDiscoveryURL, discoveryHelp)
	addBackendFlag(f, "objects", platform.DefaultObjectsURL, objectsHelp)
	f.String("region", dora.DefaultRegion, "the platform region whose instances run the steps")
	f.String("limits", "", "per-pipeline concurrency limits across all workers: name=n[,name=n...]")
	f.Int("default-limit", pfop.DefaultLimit, "concurrency limit of a pipeline not named in --limits")
	f.Int("concurrency", pfop.DefaultConcurrency, "jobs this worker runs at once")
	f.Duration("reclaim-after", pfop.DefaultReclaimAfter, "take over a job whose worker has been silent this long")
	f.Duration("job-retention", pfop.DefaultJobRetention, "keep a finished job's record (prefop answers for it) this long; negative: forever")
	f.Duration("grace", pfop.DefaultGrace, "on shutdown, how long running jobs may finish before they are handed back")
	f.String("consumer", "", "this worker's name in the queue (default <host>-<pid>-<random>)")
	f.Bool("allow-private-notify", false, "let notifyURLs reach loopback and private addresses (development only)")
	f.Bool("allow-private-mirror", false, "let buckets' mirrors be fetched from loopback and private addresses (development only)")
	addMaxImageJobsFlag(f)
	return cmd
}

// checkWorkerValues refuses the values pfop.NewWorker would replace by
// its defaults without a word (a --grace 0 would wait the default 30 s).
func checkWorkerValues(v *viper.Viper) error {
	for _, name := range []string{"concurrency", "default-limit"} {
		if n := v.GetInt(name); n < 1 {
			return fmt.Errorf("--%s %d must be at least 1", name, n)
		}
	}
	for _, name := range []string{"reclaim-after", "grace"} {
		if d := v.GetDuration(name); d <= 0 {
			return fmt.Errorf("--%s %v must be positive", name, d)
		}
	}
	if v.GetDuration("job-retention") == 0 {
		return fmt.Errorf("--job-retention 0: give a positive duration, or a negative one to keep finished jobs forever")
	}
	return nil
}

// parseLimits reads "name=n,name=n".
func parseLimits(s string) (map[string]int, error) {
	out := map[string]int{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, n, ok := strings.Cut(part, "=")
		var limit int
		if _, err := fmt.Sscanf(n, "%d", &limit); !ok || err != nil || limit <= 0 || fmt.Sprint(limit) != n {
			return nil, fmt.Errorf("--limits: %q: want <pipeline>=<positive number>", part)
		}
		if err := pfop.ValidatePipeline(name); err != nil {
			return nil, fmt.Errorf("--limits: %w", err)
		}
		out[name] = limit
	}
	return out, nil
}
