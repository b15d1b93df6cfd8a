package platform

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/autoscaler"
	"github.com/doraproject/dora/cli/platform/platformtest"
	"github.com/doraproject/dora/router/rescache"
)

// TestStartRouterRefusesNegativeMaxHeld: a negative bound of held requests
// is a configuration error, caught before any backend is opened.
func TestStartRouterRefusesNegativeMaxHeld(t *testing.T) {
	_, err := StartRouter(context.Background(), RouterConfig{Listen: "127.0.0.1:0", MaxHeld: -1, Store: "bolt://" + filepath.Join(t.TempDir(), "m.db")})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "-1") {
		t.Fatalf("StartRouter with MaxHeld -1: %v, want ErrConfig naming the value", err)
	}
}

// nomadJob finds the single Nomad job whose id starts with prefix and
// returns its id and its group's count.
func nomadJob(nc *nomadapi.Client, prefix string) (string, int, error) {
	stubs, _, err := nc.Jobs().PrefixList(prefix)
	if err != nil {
		return "", 0, err
	}
	if len(stubs) != 1 {
		return "", 0, fmt.Errorf("%d nomad jobs named %s*", len(stubs), prefix)
	}
	job, _, err := nc.Jobs().Info(stubs[0].ID, nil)
	if err != nil {
		return "", 0, err
	}
	if len(job.TaskGroups) != 1 || job.TaskGroups[0].Count == nil {
		return "", 0, fmt.Errorf("job %s has %d groups", stubs[0].ID, len(job.TaskGroups))
	}
	return stubs[0].ID, *job.TaskGroups[0].Count, nil
}

// gauge reads a per-deployment series of an autoscaler's /metrics.
func gauge(url, name, deploymentID string) (float64, error) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{[^}]*deployment="` + regexp.QuoteMeta(deploymentID) + `"[^}]*\} (\S+)$`)
	return platformtest.MetricMatching(http.DefaultClient, url, name+" for "+deploymentID, re)
}

// knownReasons are the reasons a scaling change may carry.
var knownReasons = []string{
	autoscaler.ReasonScaleUp, autoscaler.ReasonScaleDown, autoscaler.ReasonPanic,
	autoscaler.ReasonClampCeiling, autoscaler.ReasonClampFloor, autoscaler.ReasonScaleFromZero,
}

// TestProductionAutoscalingOnRealAgents is the autoscaling loop of
// production on real Consul, Nomad and Redis agents: dorad admin (Consul KV
// store, Nomad raw_exec runtime), router (Consul discovery, Redis load) and
// autoscaler (Redis load, under the Consul lock). examples/slowpoke is
// built, released with short autoscaling windows and deployed with floor 1,
// ceiling 3 and a target of 1 request in flight per instance. Four clients
// keep it busy (load wanting 4): Nomad's job count rises above 1 and never
// exceeds 3, the admin's scaling events and Nomad's own scaling events
// carry the reasons; once the load stops the count returns to 1.
func TestProductionAutoscalingOnRealAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Consul, Nomad and Redis")
	}
	consul, nomad, redis, nc := startProdAgents(t)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := platformtest.ReachableTempDir(t)
	log := platformtest.Logger()
	storeURL := "consul://" + consul.Addr + "/dora-autoscale-test"
	objectsURL := "file://" + filepath.Join(dir, "objects")
	loadURL := "redis://" + redis.Addr + "/0"
	regions := []RegionSpec{{Name: "z0", NomadRegion: "global", Datacenters: []string{"dc1"}}}

	adm, err := StartAdmin(ctx, AdminConfig{
		Listen: "127.0.0.1:0", Store: storeURL, Runtime: "nomad://" + nomad.Addr, Objects: objectsURL,
		DataDir: filepath.Join(dir, "admin"), Regions: regions, RootAK: prodRootAK, RootSK: prodRootSK,
		Logger: log.With("test", "admin"),
	})
	if err != nil {
		t.Fatalf("StartAdmin: %v", err)
	}
	t.Cleanup(func() { adm.Close() })
	rtr, err := StartRouter(ctx, RouterConfig{
		Listen: "127.0.0.1:0", Store: storeURL, Discovery: "consul://" + consul.Addr, Load: loadURL,
		Objects: objectsURL, Region: "z0", Logger: log.With("test", "router"),
	})
	if err != nil {
		t.Fatalf("StartRouter: %v", err)
	}
	t.Cleanup(func() { rtr.Close() })
	scaler, err := StartAutoscaler(ctx, AutoscalerConfig{
		Listen: "127.0.0.1:0", Store: storeURL, Runtime: "nomad://" + nomad.Addr, Load: loadURL,
		Regions: regions, Interval: 500 * time.Millisecond, Logger: log.With("test", "autoscaler"),
	})
	if err != nil {
		t.Fatalf("StartAutoscaler: %v", err)
	}
	t.Cleanup(func() { scaler.Close() })
	platformtest.Eventually(t, time.Minute, "autoscaler leading", func() error {
		if l, err := leaderOf(scaler.URL); err != nil || !l {
			return fmt.Errorf("leader=%v %v", l, err)
		}
		return nil
	})

	// slowpoke: built by the admin, released with short windows, deployed
	// with floor 1, ceiling 3, target 1.
	c := client.New(adm.URL, prodRootAK, prodRootSK)
	if _, err := c.CreateBucket(ctx, client.BucketSpec{Name: "load"}); err != nil {
		t.Fatal(err)
	}
	const input = "slow and steady\n"
	if _, err := c.PutObject(ctx, "load", "in.txt", strings.NewReader(input), int64(len(input)), "text/plain"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RegisterUfop(ctx, "slowpoke", "autoscaling test", dora.ModePrivate); err != nil {
		t.Fatal(err)
	}
	b, err := c.Build(ctx, "slowpoke", filepath.Join(platformtest.RepoRoot(t), "examples", "slowpoke"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err = c.WaitBuild(ctx, "slowpoke", b.Number, 200*time.Millisecond, nil); err != nil || b.Status != dora.BuildSuccess {
		t.Fatalf("build: %+v %v", b, err)
	}
	if _, err := c.CreateRelease(ctx, client.ReleaseConfig{
		UfopName: "slowpoke", VerStr: "v1", Image: fmt.Sprintf("slowpoke.v%d", b.Number), Flavor: "default", Protocol: "dora",
		HealthCheck: &client.HealthCheckConfig{Path: "/health", Timeout: 1}, LogFilePaths: []string{},
		Autoscale: &dora.AutoscalePolicy{
			StableWindow: 6 * time.Second, PanicWindow: 2 * time.Second,
			ScaleUpCooldown: 500 * time.Millisecond, ScaleDownCooldown: 2 * time.Second,
			EvaluationInterval: 500 * time.Millisecond,
		},
	}); err != nil {
		t.Fatal(err)
	}
	dep, err := c.Deploy(ctx, "slowpoke", client.DeployRequest{Version: "v1", Region: "z0", Expect: 1, Max: 3, Target: 1})
	if err != nil {
		t.Fatal(err)
	}
	const ceiling = 3
	deployment := func() (client.DeploymentInfo, int, error) {
		d, err := c.Deployment(ctx, "slowpoke", dep.ID)
		healthy := 0
		for _, in := range d.Instances {
			if in.Healthy {
				healthy++
			}
		}
		return d, healthy, err
	}
	var jobID string
	platformtest.Eventually(t, prodWait, "one healthy slowpoke instance, Nomad count 1", func() error {
		id, count, err := nomadJob(nc, "ufop-slowpoke")
		if err != nil {
			return err
		}
		jobID = id
		d, healthy, err := deployment()
		if err != nil || count != 1 || healthy != 1 || d.Status != dora.DeployRunning {
			return fmt.Errorf("nomad count %d, status %s, healthy %d, %v", count, d.Status, healthy, err)
		}
		return nil
	})
	get := func(hc *http.Client, ctx context.Context, ms int) error {
		code, body, err := platformtest.GetContext(ctx, hc, rtr.URL, "load", "/in.txt?slowpoke/"+strconv.Itoa(ms))
		if err != nil || code != http.StatusOK || string(body) != input {
			return fmt.Errorf("%d %q %v", code, body, err)
		}
		return nil
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer hc.CloseIdleConnections()
	platformtest.Eventually(t, time.Minute, "slowpoke answering through the router", func() error { return get(hc, ctx, 1) })

	// Nomad's count, sampled all along.
	var maxCount atomic.Int64
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for sampleCtx.Err() == nil {
			if _, n, err := nomadJob(nc, jobID); err == nil {
				maxCount.Store(max(maxCount.Load(), int64(n)))
			}
			select {
			case <-sampleCtx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	defer func() { stopSampling(); sampler.Wait() }()

	// Four clients: the load wants 4 instances, the ceiling allows 3.
	loadCtx, stopLoad := context.WithCancel(ctx)
	var loaders sync.WaitGroup
	var served atomic.Int64
	var failMu sync.Mutex
	var failures []string
	for range 4 {
		loaders.Go(func() {
			for loadCtx.Err() == nil {
				if err := get(hc, loadCtx, 500); err != nil {
					if loadCtx.Err() == nil {
						failMu.Lock()
						failures = append(failures, time.Now().Format(time.StampMilli)+" "+err.Error())
						failMu.Unlock()
					}
					continue
				}
				served.Add(1)
			}
		})
	}
	endLoad := func() { stopLoad(); loaders.Wait() }
	defer endLoad()

	platformtest.Eventually(t, prodWait, "Nomad count at the ceiling with every instance healthy, under load", func() error {
		_, count, err := nomadJob(nc, jobID)
		if err != nil {
			return err
		}
		d, healthy, err := deployment()
		if err != nil || count != ceiling || d.Desired != ceiling || healthy != ceiling {
			return fmt.Errorf("nomad count %d, desired %d, healthy %d, %v", count, d.Desired, healthy, err)
		}
		return nil
	})
	t.Logf("at the ceiling: Nomad count %d", ceiling)
	// The load goes on until its stable average asks for more than the
	// ceiling (target 1 in flight per instance): the count stays at 3
	// (the sampler checks every value Nomad had).
	platformtest.Eventually(t, prodWait, "the stable average asking for more than the ceiling", func() error {
		v, err := gauge(scaler.URL, "dora_autoscaler_stable_concurrency", dep.ID)
		if err != nil || v <= ceiling {
			return fmt.Errorf("stable concurrency %v %v", v, err)
		}
		return nil
	})
	endLoad()
	if served.Load() == 0 || len(failures) > 0 {
		t.Fatalf("load: %d served, %d failed; first failures: %v", served.Load(), len(failures), failures[:min(3, len(failures))])
	}
	t.Logf("load stopped after %d requests", served.Load())

	platformtest.Eventually(t, prodWait, "back to 1 after the load", func() error {
		_, count, err := nomadJob(nc, jobID)
		if err != nil {
			return err
		}
		d, healthy, err := deployment()
		if err != nil || count != 1 || d.Desired != 1 || healthy != 1 {
			return fmt.Errorf("nomad count %d, desired %d, healthy %d, %v", count, d.Desired, healthy, err)
		}
		return nil
	})
	stopSampling()
	sampler.Wait()
	if m := maxCount.Load(); m != ceiling {
		t.Fatalf("Nomad's count peaked at %d, want the ceiling %d", m, ceiling)
	}

	// The admin's events: the way up and the way down, each with its reason.
	evs, err := c.DeploymentEvents(ctx, "slowpoke", dep.ID)
	if err != nil {
		t.Fatal(err)
	}
	up, down := false, false
	for _, e := range evs {
		if !slices.Contains(knownReasons, e.Reason) || e.To > ceiling || e.To < 1 {
			t.Fatalf("event %+v: unknown reason or count out of 1..%d; all: %+v", e, ceiling, evs)
		}
		up = up || e.To > e.From
		down = down || e.From > 1 && e.To == 1 && e.Reason == autoscaler.ReasonScaleDown
	}
	if !up || !down {
		t.Fatalf("events lack the scale-up or the scale-down to 1: %+v", evs)
	}

	// Nomad's own scaling events carry the same reasons as messages.
	ss, _, err := nc.Jobs().ScaleStatus(jobID, nil)
	if err != nil {
		t.Fatal(err)
	}
	var nomadReasons []string
	for _, tg := range ss.TaskGroups {
		for _, e := range tg.Events {
			if e.Count == nil || e.Error {
				continue
			}
			if *e.Count > ceiling {
				t.Fatalf("nomad scaling event beyond the ceiling: %+v", e)
			}
			nomadReasons = append(nomadReasons, fmt.Sprintf("%d→%d %s", e.PreviousCount, *e.Count, e.Message))
			if !slices.Contains(knownReasons, e.Message) {
				t.Fatalf("nomad scaling event without a Dora reason: %+v", e)
			}
		}
	}
	if len(nomadReasons) < 2 {
		t.Fatalf("nomad has %d scaling events, want the way up and the way down: %v", len(nomadReasons), nomadReasons)
	}
	t.Logf("nomad scaling events: %v", nomadReasons)

	// The autoscaler's per-deployment gauges are on its /metrics, and no
	// scale call failed (a Nomad deployment in progress is "busy", not an
	// error).
	metrics := getBody(t, scaler.URL+"/metrics")
	for _, name := range []string{"desired_instances", "ready_instances", "panic_mode", "stable_concurrency", "panic_concurrency"} {
		if !strings.Contains(metrics, "dora_autoscaler_"+name+`{deployment="`+dep.ID+`"`) {
			t.Errorf("autoscaler /metrics lacks dora_autoscaler_%s for %s", name, dep.ID)
		}
	}
	if m := regexp.MustCompile(`(?m)^dora_autoscaler_errors_total\{op="scale"\} (\S+)$`).FindStringSubmatch(metrics); m != nil && m[1] != "0" {
		t.Errorf("dora_autoscaler_errors_total{op=\"scale\"} = %s", m[1])
	}
	for _, s := range []*Service{adm.Service, rtr, scaler} {
		if err := s.Err(); err != nil {
			t.Errorf("%s failed: %v", s.Name, err)
		}
	}
}

// TestStartRouterResultCacheDir: RouterConfig.ResultCacheDir reaches the
// router: the directory is created and held (a second router on it is
// refused) until the first router is closed.
func TestStartRouterResultCacheDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "results")
	cfg := func() RouterConfig {
		return RouterConfig{Listen: "127.0.0.1:0", Store: "bolt://" + filepath.Join(t.TempDir(), "m.db"),
			Objects: "file://" + t.TempDir(), ResultCacheDir: dir, ResultCacheDiskBytes: 1 << 20}
	}
	s, err := StartRouter(context.Background(), cfg())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := StartRouter(context.Background(), cfg()); !errors.Is(err, rescache.ErrLocked) {
		s.Close()
		t.Fatalf("a second router on the same directory: %v, want rescache.ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := StartRouter(context.Background(), cfg())
	if err != nil {
		t.Fatalf("a router on the directory once the first closed: %v", err)
	}
	s2.Close()
}
