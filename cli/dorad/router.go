package main

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/doraproject/dora/cli/platform"
	"github.com/doraproject/dora/internal/gcfloor"
	"github.com/doraproject/dora/router"
)

func newRouterCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "router",
		Short: "Run the data-plane router on the given backends",
		Long: `router serves bucket objects at http://<bucket>.<domain-suffix>/<key> and runs
fop pipelines (?a/x|b/y) through the ufop instances --discovery reports. It
reads the metadata from --store, the objects from --objects, and flushes its
load figures to --load once a second. /healthz and /metrics answer on its own
host names (localhost, loopback, --public-addr).

It keeps serving when Redis is down (load samples are dropped and counted) and
when Consul is down (it keeps the last metadata and instances it saw).

A request for a ufop with no healthy instance waits up to --hold-timeout for
one (at most --max-held such requests at once), counted as demand: the
autoscaler starts an instance of a deployment scaled to zero, and the request
goes on. Past the bound it gets 503 with Retry-After.

Results of pipelines whose releases opt in (cache: in dora.yaml) and of
built-ins are cached: --result-cache-bytes in memory, and with
--result-cache-dir also on disk (--result-cache-disk-bytes; the directory is
swept at start and used by one router at a time).

Backends are URLs, chosen by scheme:
  --store      bolt://./.dora/meta.db | consul://127.0.0.1:8500/dora
  --discovery  memory:// (in-process only) | consul://127.0.0.1:8500
  --load       memory:// | redis://127.0.0.1:6379/0
  --objects    file://./.dora/objects

Every flag can also be set as DORA_<FLAG> (dashes as underscores) or as a key
of the --config file.`,
		Example: `  dorad router --store consul://127.0.0.1:8500/dora --discovery consul://127.0.0.1:8500 \
    --load redis://127.0.0.1:6379/0 --objects file:///srv/dora/objects \
    --listen 0.0.0.0:8080 --public-addr 10.0.0.7:8080 --domain-suffix dora.example.com

  DORA_STORE=consul://127.0.0.1:8500/dora DORA_DISCOVERY=consul://127.0.0.1:8500 dorad router`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(v)
			if err != nil {
				return err
			}
			cfg, err := routerConfig(v)
			if err != nil {
				return err
			}
			cfg.Logger = log
			defer startGCFloor(v)()
			ctx, stop := signalContext(cmd)
			defer stop()
			s, err := platform.StartRouter(ctx, cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Dora router is running at %s (buckets at http://<bucket>.%s:%s/<key>)\n",
				s.URL, v.GetString("domain-suffix"), portOf(s.URL))
			return runUntilStopped(ctx, log, "router", s)
		},
	}
	f := cmd.Flags()
	f.SetNormalizeFunc(listenAlias)
	f.String("listen", platform.DefaultRouterListen, "listen address of the router")
	addBackendFlag(f, "store", platform.DefaultStoreURL, storeHelp)
	addBackendFlag(f, "discovery", platform.DefaultDiscoveryURL, discoveryHelp)
	addBackendFlag(f, "load", platform.DefaultLoadURL, loadHelp)
	addBackendFlag(f, "objects", platform.DefaultObjectsURL, objectsHelp)
	f.String("region", "z0", "the platform region this router serves")
	f.String("domain-suffix", "localhost", "buckets answer at <bucket>.<suffix>")
	f.String("public-addr", "", "host:port instances reach this router at for their input (default the listen address)")
	f.Duration("hold-timeout", router.DefaultHoldTimeout,
		"how long a request waits for an instance of a ufop that has none (scale from zero); 0 answers 503 at once")
	f.Int("max-held", router.DefaultMaxHeld, "how many requests may wait for an instance at once; beyond, 503 at once")
	f.Int64("result-cache-bytes", router.DefaultResultCacheBytes, "memory for cached pipeline results (releases with cache: on, built-ins); 0 disables the result cache")
	f.String("result-cache-dir", "", "directory of the result cache's disk tier, one per router (default: memory only)")
	f.Int64("result-cache-disk-bytes", router.DefaultResultCacheDiskBytes, "bytes the result cache may keep in --result-cache-dir")
	f.Bool("allow-private-mirror", false, "let buckets' mirrors be fetched from loopback and private addresses (development only)")
	f.StringSlice("trusted-proxies", nil, "addresses or CIDRs of the TLS-terminating proxies in front of the router, whose X-Forwarded-Proto: https makes a request https for private buckets' download tokens (default: none, the header is ignored)")
	addGCFloorFlag(f)
	addMaxImageJobsFlag(f)
	return cmd
}

// parseTrustedProxies reads --trusted-proxies: each an address (one host)
// or a CIDR prefix.
func parseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("--trusted-proxies: %q is not an address or a CIDR prefix: %w", s, err)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("--trusted-proxies: %q is not an address or a CIDR prefix: %w", s, err)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// addMaxImageJobsFlag adds --max-image-jobs to the commands whose process
// runs built-in steps (router, worker, dev).
func addMaxImageJobsFlag(f *pflag.FlagSet) {
	f.Int("max-image-jobs", 0, fmt.Sprintf("built-in image and media steps (imageMogr2, imageView2, watermark, imageAve, avinfo) running at once; more wait up to 10 s, then 503 (default 0: one per CPU, at least 2, here %d)", router.DefaultMaxImageJobs()))
}

// maxImageJobs reads --max-image-jobs: 0 is the default, negative refused.
func maxImageJobs(v *viper.Viper) (int, error) {
	n := v.GetInt("max-image-jobs")
	if n < 0 {
		return 0, fmt.Errorf("--max-image-jobs %d must not be negative (0: one per CPU)", n)
	}
	return n, nil
}

// addGCFloorFlag adds --gc-floor to the commands whose process serves the
// data path (router, dev).
func addGCFloorFlag(f *pflag.FlagSet) {
	f.Uint64("gc-floor", gcfloor.RouterMin, "bytes the Go heap may reach before a garbage collection while the live heap is small: fewer collections, a shorter latency tail, up to this much more memory (0: Go's default pacing; GOGC in the environment also turns it off)")
}

// startGCFloor keeps the process's GC heap goal at --gc-floor or more; the
// returned stop restores Go's pacing.
func startGCFloor(v *viper.Viper) (stop func()) {
	return gcfloor.Start(v.GetUint64("gc-floor"))
}

// routerConfig reads the router's settings; the hold bounds are checked
// here because 0 means something else on the command line (no hold) than
// in platform.RouterConfig (the default).
func routerConfig(v *viper.Viper) (platform.RouterConfig, error) {
	hold := v.GetDuration("hold-timeout")
	if hold < 0 {
		return platform.RouterConfig{}, fmt.Errorf("--hold-timeout %v must not be negative (0 answers 503 at once)", hold)
	}
	if hold == 0 {
		hold = -1 // no hold
	}
	maxHeld := v.GetInt("max-held")
	if maxHeld < 1 {
		return platform.RouterConfig{}, fmt.Errorf("--max-held %d must be at least 1 (use --hold-timeout 0 to hold nothing)", maxHeld)
	}
	resBytes, resDisk := v.GetInt64("result-cache-bytes"), v.GetInt64("result-cache-disk-bytes")
	switch {
	case resBytes < 0:
		return platform.RouterConfig{}, fmt.Errorf("--result-cache-bytes %d must not be negative (0 disables the result cache)", resBytes)
	case resBytes == 0:
		resBytes = -1 // disabled
	}
	if resDisk <= 0 {
		return platform.RouterConfig{}, fmt.Errorf("--result-cache-disk-bytes %d must be positive (leave --result-cache-dir empty for no disk tier)", resDisk)
	}
	trusted, err := parseTrustedProxies(stringList(v, "trusted-proxies"))
	if err != nil {
		return platform.RouterConfig{}, err
	}
	imageJobs, err := maxImageJobs(v)
	if err != nil {
		return platform.RouterConfig{}, err
	}
	return platform.RouterConfig{
		Listen:       v.GetString("listen"),
		Store:        v.GetString("store"),
		Discovery:    v.GetString("discovery"),
		Load:         v.GetString("load"),
		Objects:      v.GetString("objects"),
		Region:       v.GetString("region"),
		DomainSuffix: v.GetString("domain-suffix"),
		PublicAddr:   v.GetString("public-addr"),
		HoldTimeout:  hold,
		MaxHeld:      maxHeld,

		ResultCacheBytes:     resBytes,
		ResultCacheDir:       v.GetString("result-cache-dir"),
		ResultCacheDiskBytes: resDisk,

		AllowPrivateMirror: v.GetBool("allow-private-mirror"),
		TrustedProxies:     trusted,
		MaxImageJobs:       imageJobs,
	}, nil
}
