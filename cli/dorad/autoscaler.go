package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/doraproject/dora/cli/platform"
)

func newAutoscalerCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "autoscaler",
		Short: "Run the autoscaler: scale each deployment between its floor and ceiling",
		Long: `autoscaler reads the routers' load figures from --load and every running
deployment from --store, and scales each between its floor (--expect) and its
ceiling (--max) through --runtime. /healthz (with "leader") and /metrics answer
on --listen.

With a consul:// store several autoscalers may run: they elect one leader with
a Consul lock on <prefix>/locks/autoscaler; the others wait and take over
within about --lock-ttl when the leader dies.

Backends are URLs, chosen by scheme:
  --store    bolt://./.dora/meta.db | consul://127.0.0.1:8500/dora
  --runtime  nomad://127.0.0.1:4646 (required)
  --load     memory:// | redis://127.0.0.1:6379/0

Every flag can also be set as DORA_<FLAG> (dashes as underscores) or as a key
of the --config file.`,
		Example: `  dorad autoscaler --store consul://127.0.0.1:8500/dora \
    --runtime nomad://127.0.0.1:4646 --load redis://127.0.0.1:6379/0

  dorad autoscaler --config /etc/dora/autoscaler.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, regions, err := loggerAndRegions(v)
			if err != nil {
				return err
			}
			// The platform takes 0 for its defaults: refuse it here, where
			// it can only be the operator's.
			if d := v.GetDuration("interval"); d <= 0 {
				return fmt.Errorf("--interval %v must be positive", d)
			}
			if d := v.GetDuration("lock-ttl"); d < 10*time.Second || d > 24*time.Hour {
				return fmt.Errorf("--lock-ttl %v must be between 10s and 24h (Consul's bounds on a session TTL)", d)
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			s, err := platform.StartAutoscaler(ctx, platform.AutoscalerConfig{
				Listen:   v.GetString("listen"),
				Store:    v.GetString("store"),
				Runtime:  v.GetString("runtime"),
				Load:     v.GetString("load"),
				Regions:  regions,
				Region:   v.GetString("region"),
				Interval: v.GetDuration("interval"),
				LockTTL:  v.GetDuration("lock-ttl"),
				Logger:   log,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Dora autoscaler is running (health and metrics at %s)\n", s.URL)
			return runUntilStopped(ctx, log, "autoscaler", s)
		},
	}
	f := cmd.Flags()
	f.SetNormalizeFunc(listenAlias)
	f.String("listen", platform.DefaultAutoscalerListen, "listen address of /healthz and /metrics")
	addBackendFlag(f, "store", platform.DefaultStoreURL, storeHelp)
	addBackendFlag(f, "runtime", "", runtimeHelp+" (required)")
	addBackendFlag(f, "load", platform.DefaultLoadURL, loadHelp)
	addRegionFlags(f, "the single region when --regions is not given (jobs of other regions carry a suffix)")
	f.Duration("interval", 2*time.Second, "evaluation interval")
	f.Duration("lock-ttl", 10*time.Second, "leader lock session TTL (10s..24h): a dead leader is replaced after about this long")
	return cmd
}
