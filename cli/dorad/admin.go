package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/doraproject/dora/cli/platform"
)

func newAdminCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Run the admin API (control plane) on the given backends",
		Long: `admin serves the management API (docs/api.md) with the OCI registry under /v2/,
/healthz and /metrics. It keeps the metadata in --store, runs deployments
through --runtime, stores objects in --objects, and builds program packages
under --data-dir (with the registry's blobs).

Persistent processing answers on the same listener, as Qiniu's SDKs expect:
POST /pfop (and /pfop/), GET /status/get/prefop?id= and the form upload POST /.
Jobs go on --queue, where dorad worker processes claim them: use a redis://
queue shared with the workers (a bolt:// file is locked by this process).
notifyURLs may not reach loopback or private addresses unless
--allow-private-notify is given.

Qiniu's SDKs also find here the resumable uploads (mkblk/bput/mkfile, and
/buckets/<b>/objects/<k>/uploads; parts wait under <data-dir>/uploads) and
the bucket APIs (stat, delete, move, copy, chgm, chtype, deleteAfterDays,
batch, list, fetch) with the region query, which names each bucket's domain
(<bucket>.<domain-suffix>, at --router-host's port) as its download host.

Backends are URLs, chosen by scheme:
  --store    bolt://./.dora/meta.db | consul://127.0.0.1:8500/dora
  --runtime  local:// | nomad://127.0.0.1:4646[?driver=raw_exec|exec][&network=host|bridge]
  --objects  file://./.dora/objects
  --queue    bolt://<data-dir>/pfop.db | redis://127.0.0.1:6379/0

Runtimes on other hosts fetch build artifacts from --public-url, so set it to
an address they can reach. With a consul:// store the root keys must come from
DORA_ROOT_AK and DORA_ROOT_SK (the same on every admin); with a bolt store they
are read from or generated into <data-dir>/root.credentials.

Build scripts (and instances of the local runtime) are other people's code:
when dorad runs as root they run as nobody (--run-as chooses another user, or
"self"), which cannot read the data directory's keys, metadata, objects or
registry; every directory above --data-dir must let that user through (o+x).
See docs/security.md.

Every flag can also be set as DORA_<FLAG> (dashes as underscores) or as a key
of the --config file. The config file may also list instance flavors
(default C1M1, C2M2, C4M4, default):
  flavors:
    - {name: C1M1, cpu: 1000, memoryMB: 1024, desc: "1 core, 1 GiB"}`,
		Example: `  # production: Consul KV metadata, Nomad instances
  DORA_ROOT_AK=... DORA_ROOT_SK=... dorad admin \
    --store consul://127.0.0.1:8500/dora --runtime nomad://127.0.0.1:4646 \
    --queue redis://127.0.0.1:6379/0 --public-url http://10.0.0.5:8090 --listen 0.0.0.0:8090 \
    --regions z0=global/dc1,z1=asia/sh1+sh2

  # the same from the environment
  DORA_STORE=consul://127.0.0.1:8500/dora DORA_RUNTIME=nomad://127.0.0.1:4646 dorad admin

  # from a config file (yaml keys = flag names)
  dorad admin --config /etc/dora/admin.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, regions, err := loggerAndRegions(v)
			if err != nil {
				return err
			}
			flavors, err := flavorsFrom(v)
			if err != nil {
				return err
			}
			rootAK, rootSK := rootKeys(v)
			ctx, stop := signalContext(cmd)
			defer stop()
			a, err := platform.StartAdmin(ctx, platform.AdminConfig{
				Listen:    v.GetString("listen"),
				Store:     v.GetString("store"),
				Runtime:   v.GetString("runtime"),
				Objects:   v.GetString("objects"),
				Queue:     v.GetString("queue"),
				DataDir:   dataDirOf(v),
				Regions:   regions,
				Region:    v.GetString("region"),
				Flavors:   flavors,
				PublicURL: v.GetString("public-url"),
				RootAK:    rootAK,
				RootSK:    rootSK,
				RunAs:     v.GetString("run-as"),
				GoCache:   v.GetString("go-cache"),
				Logger:    log,

				AllowPrivateNotify: v.GetBool("allow-private-notify"),
				AllowPrivateMirror: v.GetBool("allow-private-mirror"),
				DomainSuffix:       v.GetString("domain-suffix"),
				RouterHost:         v.GetString("router-host"),
				StatsFrom:          stringList(v, "stats-from"),
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Dora admin API is running at %s\n", a.URL)
			if a.NewRoot {
				fmt.Fprintf(out, "\nRoot keys (shown once; kept in %s/%s):\n  AK: %s\n  SK: %s\n\n",
					dataDirOf(v), platform.CredentialsFile, a.RootAK, a.RootSK)
			}
			return runUntilStopped(ctx, log, "admin", a)
		},
	}
	f := cmd.Flags()
	f.SetNormalizeFunc(listenAlias)
	f.String("listen", platform.DefaultAdminListen, "listen address of the admin API")
	addBackendFlag(f, "store", platform.DefaultStoreURL, storeHelp)
	addBackendFlag(f, "runtime", platform.DefaultRuntimeURL, runtimeHelp)
	addBackendFlag(f, "objects", platform.DefaultObjectsURL, objectsHelp)
	addBackendFlag(f, "queue", "", queueHelp+" (default bolt://<data-dir>/pfop.db)")
	f.Bool("allow-private-notify", false, "let pfop notifyURLs reach loopback and private addresses (development only)")
	f.Bool("allow-private-mirror", false, "let buckets mirror (and rs fetch) loopback and private addresses (development only)")
	f.String("router-host", "", "the routers' public host:port: the SDKs' region query names <bucket>.<domain-suffix> at its port as the download host (default: no port, the routers answering bucket domains on 80)")
	f.StringSlice("stats-from", nil, "/metrics URLs of the routers and the autoscaler, sampled for the web console's charts (e.g. http://router-1:8080/metrics)")
	f.String("domain-suffix", "localhost", "the routers' domain suffix (buckets answer at <bucket>.<suffix>); no bucket may bind a domain under it")
	f.String("data-dir", "./.dora", "directory for builds, registry blobs and local-runtime instances")
	addRegionFlags(f, "the single region offered when --regions is not given")
	f.String("public-url", "", "URL runtimes on other hosts reach this admin at (default http://<listen address>)")
	f.String("run-as", "", `user build scripts and local:// instances run as: a name, uid or uid:gid; "self" for dorad's own user (default: nobody when dorad runs as root, else dorad's own user with a warning)`)
	f.String("go-cache", "", "Go build cache shared by every build of every account (owned by the run-as user; default: a fresh cache per build, slower but one account's build cannot poison another's)")
	addRootKeyFlags(f)
	return cmd
}
