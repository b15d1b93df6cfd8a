package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	localruntime "github.com/doraproject/dora/admin/runtime/local"
	"github.com/doraproject/dora/cli/platform"
)

func newDevCommand(v *viper.Viper) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole platform in one process on embedded backends",
		Long: `dev runs the admin API, the router, the local runtime, the autoscaler and a
bbolt metadata store in one process. Everything durable lives under --data-dir:
a restart keeps accounts, buckets, objects, ufops, builds, releases and
deployments, and brings deployed instances back.

The root account's keys come from DORA_ROOT_AK/DORA_ROOT_SK when set; otherwise
they are generated on first start, written to <data-dir>/root.credentials
(mode 0600) and printed once. The --config file may list instance flavors as
for dorad admin (flavors: [{name, cpu, memoryMB, desc}]).`,
		Example: `  dorad dev
  dorad dev --data-dir /var/lib/dora --router-addr 127.0.0.1:80
  DORA_ROOT_AK=... DORA_ROOT_SK=... dorad dev`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(v)
			if err != nil {
				return err
			}
			// The platform takes 0 for its default: refuse it here.
			if d := v.GetDuration("autoscale-interval"); d <= 0 {
				return fmt.Errorf("--autoscale-interval %v must be positive", d)
			}
			if v.GetDuration("image-gc-delay") == 0 {
				return errors.New("--image-gc-delay 0: give a positive delay, or a negative one to keep every image")
			}
			flavors, err := flavorsFrom(v)
			if err != nil {
				return err
			}
			imageJobs, err := maxImageJobs(v)
			if err != nil {
				return err
			}
			defer startGCFloor(v)()
			rootAK, rootSK := rootKeys(v)
			ctx, stop := signalContext(cmd)
			defer stop()
			dev, err := platform.StartDev(ctx, platform.DevConfig{
				DataDir:             dataDirOf(v),
				AdminAddr:           v.GetString("admin-addr"),
				RouterAddr:          v.GetString("router-addr"),
				DomainSuffix:        v.GetString("domain-suffix"),
				Region:              v.GetString("region"),
				Flavors:             flavors,
				RootAK:              rootAK,
				RootSK:              rootSK,
				AutoscaleInterval:   v.GetDuration("autoscale-interval"),
				RunAs:               v.GetString("run-as"),
				GoCache:             v.GetString("go-cache"),
				Objects:             v.GetString("objects"),
				ContainerRuntime:    v.GetString("container-runtime"),
				PackagesAsProcesses: v.GetBool("packages-as-processes"),
				ImageGCDelay:        v.GetDuration("image-gc-delay"),
				MaxImageJobs:        imageJobs,
				Logger:              log,

				AllowPrivateMirror: v.GetBool("allow-private-mirror"),
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Dora is running.\n  admin API: %s\n  router:    %s (buckets at http://<bucket>.%s:%s/<key>)\n",
				dev.AdminURL, dev.RouterURL, v.GetString("domain-suffix"), portOf(dev.RouterURL))
			if dev.NewRoot {
				fmt.Fprintf(out, "\nRoot keys (shown once; kept in %s/%s):\n  AK: %s\n  SK: %s\n\nLog in with:\n  qdoractl login -u %s -p %s --api %s\n\n",
					dataDirOf(v), platform.CredentialsFile, dev.RootAK, dev.RootSK, dev.RootAK, dev.RootSK, dev.AdminURL)
			}
			select {
			case <-ctx.Done():
				log.Info("shutting down")
			case <-dev.Done():
				log.Error("a part failed; shutting down", "err", dev.Err())
			}
			closed := make(chan error, 1)
			go func() { closed <- dev.Close() }()
			select {
			case err := <-closed:
				if err != nil {
					return err
				}
			case <-time.After(30 * time.Second):
				return fmt.Errorf("shutdown took longer than 30s")
			}
			return dev.Err()
		},
	}
	f := cmd.Flags()
	f.String("data-dir", "./.dora", "directory for metadata, objects, builds and instances")
	f.String("admin-addr", "127.0.0.1:8090", "admin API listen address")
	f.String("router-addr", "127.0.0.1:8080", "router listen address")
	f.String("domain-suffix", "localhost", "buckets answer at <bucket>.<suffix>")
	f.String("region", "z0", "name of the single region the embedded platform runs")
	f.Duration("autoscale-interval", 2*time.Second, "autoscaler evaluation interval")
	f.String("run-as", "", `user build scripts and instances run as: a name, uid or uid:gid; "self" for dorad's own user (default: nobody when dorad runs as root, else dorad's own user with a warning)`)
	f.String("objects", "", "object origin URL: empty for <data-dir>/objects, file://<dir>, or s3://<s3-bucket>[/<prefix>]?endpoint=http(s)://host:port[&region=r][&path-style=true] (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)")
	f.String("container-runtime", "", `runs OCI images: "podman" (required), "none" (image deployments refused); default: podman when podman and runc are installed`)
	f.Duration("image-gc-delay", localruntime.DefaultImageGCDelay, "how long an image pulled into podman's storage for image deployments stays there once no deployment names it (a deployment at zero keeps its image); negative: keep every image")
	f.Bool("packages-as-processes", false, "run program packages as plain processes on a free port ($PORT) even with podman (default: each instance a container with port 9100 in its own network namespace)")
	f.String("go-cache", "", "Go build cache shared by builds (default <data-dir>/cache/go-build, owned by the run-as user)")
	f.Bool("allow-private-mirror", false, "let buckets mirror loopback and private addresses (link-local and cloud metadata addresses stay refused)")
	addGCFloorFlag(f)
	addMaxImageJobsFlag(f)
	return cmd
}

func portOf(url string) string {
	for i := len(url) - 1; i >= 0; i-- {
		if url[i] == ':' {
			return url[i+1:]
		}
	}
	return ""
}
