package platform

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/admin/pfop"
	doraruntime "github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/cli/platform/platformtest"
	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/store"
)

const (
	prodRootAK = "prodRootAccessKey000000001"
	prodRootSK = "prodRootSecretKey0000000000000000000001"
	prodText   = "hello dora\nnothing here\nhello again\n"
	prodQuery  = "/demo.txt?grepd/hello|qhash/md5"
)

// prodWait bounds each wait for Nomad, Consul or the roles to converge; a
// healthy run takes a fraction of it.
const prodWait = 3 * time.Minute

// wantHash is qhash/md5's answer for grepd/hello of prodText.
func wantHash() string {
	sum := md5.Sum([]byte("hello dora\nhello again\n"))
	return hex.EncodeToString(sum[:])
}

// routerGet sends one pipeline request through the router with the bucket's
// Host and checks the answer; it returns an error describing any mismatch.
func routerGet(hc *http.Client, routerURL string) error {
	code, body, err := platformtest.Get(hc, routerURL, "demo", prodQuery)
	if err != nil {
		return err
	}
	var h struct {
		Hash  string `json:"hash"`
		Fsize int64  `json:"fsize"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &h) != nil || h.Hash != wantHash() || h.Fsize != 23 {
		return fmt.Errorf("%d: %q", code, body)
	}
	return nil
}

// startLoad sends pipeline requests from workers goroutines until stop is
// called, which returns the number of successes and the failures.
func startLoad(hc *http.Client, routerURL string, workers int) (stop func() (int64, []string)) {
	ctx, cancel := context.WithCancel(context.Background())
	var ok atomic.Int64
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := routerGet(hc, routerURL); err != nil {
					mu.Lock()
					failures = append(failures, time.Now().Format(time.StampMilli)+" "+err.Error())
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		})
	}
	return func() (int64, []string) {
		cancel()
		wg.Wait()
		return ok.Load(), failures
	}
}

// passingAllocs returns the alloc ids of ufop-grepd instances whose checks
// all pass in Consul, and the query's index.
func passingAllocs(cc *consulapi.Client, q *consulapi.QueryOptions) ([]string, uint64, error) {
	entries, meta, err := cc.Health().Service("ufop-grepd", "", true, q)
	if err != nil {
		return nil, 0, err
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Service.Meta["alloc_id"])
	}
	slices.Sort(ids)
	return ids, meta.LastIndex, nil
}

// healthyInstances waits until the admin reports n healthy RUNNING
// instances of grepd and Consul passes exactly their allocations.
func healthyInstances(t *testing.T, ctx context.Context, c *client.Client, cc *consulapi.Client, n int) []doraruntime.InstanceStatus {
	t.Helper()
	var ins []doraruntime.InstanceStatus
	platformtest.Eventually(t, prodWait, fmt.Sprintf("%d healthy grepd instances in the admin and in Consul", n), func() error {
		var err error
		ins, err = c.Instances(ctx, "grepd", "", false)
		if err != nil {
			return err
		}
		var ids []string
		for _, in := range ins {
			if in.State != doraruntime.StateRunning || !in.Healthy {
				return fmt.Errorf("instance %+v", in)
			}
			ids = append(ids, in.ID)
		}
		if len(ins) != n {
			return fmt.Errorf("%d instances: %+v", len(ins), ins)
		}
		slices.Sort(ids)
		passing, _, err := passingAllocs(cc, nil)
		if err != nil {
			return err
		}
		if !slices.Equal(passing, ids) {
			return fmt.Errorf("consul passes %v, admin reports %v", passing, ids)
		}
		return nil
	})
	return ins
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %q", url, resp.Status, b)
	}
	return string(b)
}

// metricValue reads one unlabelled series of url's /metrics; not finding
// it fails the test.
func metricValue(t *testing.T, url, name string) float64 {
	t.Helper()
	v, err := platformtest.Metric(http.DefaultClient, url, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// startProdAgents starts real Consul, Nomad and Redis agents for a
// production-roles test and a Nomad client whose jobs are purged after
// the roles closed and before Nomad stops (cleanups run last-in first-out).
func startProdAgents(t *testing.T) (*agenttest.Consul, *agenttest.Nomad, *agenttest.Redis, *nomadapi.Client) {
	t.Helper()
	consul := agenttest.StartConsul(t)
	nomad := agenttest.StartNomad(t, consul)
	redis := agenttest.StartRedis(t)
	return consul, nomad, redis, platformtest.NomadClient(t, nomad)
}

// TestProductionRolesOnRealAgents runs dorad admin (Consul KV store, Nomad
// runtime, Redis pfop queue), dorad router (Consul discovery, Redis load),
// dorad autoscaler (Consul lock) and dorad worker (Redis queue, Consul
// discovery) against real Consul, Nomad and Redis agents, and drives them
// with the admin client: bucket, object, ufop, a build of examples/grepd
// fetched by Nomad from the admin's signed artifact URL, two then three
// raw_exec allocations passing their Consul checks, processing through the
// router; then a killed instance; pfop jobs run by workers, one of them
// closed mid-job (checkPfop); then a Redis outage and a Consul outage under
// load, none of which may fail a request.
func TestProductionRolesOnRealAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Consul, Nomad and Redis")
	}
	consul, nomad, redis, nc := startProdAgents(t)
	cc, err := ConsulClient("consul://" + consul.Addr)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := platformtest.ReachableTempDir(t)
	log := platformtest.Logger()
	storeURL := "consul://" + consul.Addr + "/dora-prod-test"
	objectsURL := "file://" + filepath.Join(dir, "objects")
	regions := []RegionSpec{{Name: "z0", NomadRegion: "global", Datacenters: []string{"dc1"}}}

	adm, err := StartAdmin(ctx, AdminConfig{
		Listen:  "127.0.0.1:0",
		Store:   storeURL,
		Runtime: "nomad://" + nomad.Addr,
		Objects: objectsURL,
		Queue:   "redis://" + redis.Addr + "/0",
		DataDir: filepath.Join(dir, "admin"),
		// The pfop check mirrors a bucket from an httptest server on loopback.
		AllowPrivateMirror: true,
		Regions:            regions,
		RootAK:             prodRootAK, RootSK: prodRootSK,
		Logger: log.With("test", "admin"),
	})
	if err != nil {
		t.Fatalf("StartAdmin: %v", err)
	}
	platformtest.CloseAtEnd(t, "admin", adm)
	rtr, err := StartRouter(ctx, RouterConfig{
		Listen:    "127.0.0.1:0",
		Store:     storeURL,
		Discovery: "consul://" + consul.Addr,
		Load:      "redis://" + redis.Addr + "/0",
		Objects:   objectsURL,
		Region:    "z0",
		Logger:    log.With("test", "router"),
		// The pfop check's mirror is an httptest server on loopback.
		AllowPrivateMirror: true,
	})
	if err != nil {
		t.Fatalf("StartRouter: %v", err)
	}
	platformtest.CloseAtEnd(t, "router", rtr)
	scaler, err := StartAutoscaler(ctx, AutoscalerConfig{
		Listen:  "127.0.0.1:0",
		Store:   storeURL,
		Runtime: "nomad://" + nomad.Addr,
		Load:    "redis://" + redis.Addr + "/0",
		Regions: regions,
		Logger:  log.With("test", "autoscaler"),
	})
	if err != nil {
		t.Fatalf("StartAutoscaler: %v", err)
	}
	platformtest.CloseAtEnd(t, "autoscaler", scaler)
	for _, s := range []*Service{adm.Service, rtr, scaler} {
		select {
		case <-s.Done():
			t.Fatalf("%s failed: %v", s.Name, s.Err())
		default:
		}
	}

	// Health and metrics on each role; the lone autoscaler takes the lock.
	getBody(t, adm.URL+"/healthz")
	platformtest.Eventually(t, prodWait, "router metadata loaded", func() error { return platformtest.Healthy(http.DefaultClient, rtr.URL) })
	platformtest.Eventually(t, prodWait, "autoscaler leading", func() error {
		resp, err := http.Get(scaler.URL + "/healthz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `"leader":true`) {
			return fmt.Errorf("autoscaler /healthz: %s", b)
		}
		return nil
	})
	if v, err := platformtest.Metric(http.DefaultClient, scaler.URL, "dora_autoscaler_leader"); err != nil || v != 1 {
		t.Fatalf("dora_autoscaler_leader = %v (%v)", v, err)
	}
	holder, _, err := cc.KV().Get("dora-prod-test/"+LockKey, nil)
	if err != nil || holder == nil || holder.Session == "" {
		t.Fatalf("lock key %s: %+v %v", "dora-prod-test/"+LockKey, holder, err)
	}
	getBody(t, adm.URL+"/metrics")
	getBody(t, rtr.URL+"/metrics")

	// The user's flow through the admin API.
	c := client.New(adm.URL, prodRootAK, prodRootSK)
	if _, err := c.CreateBucket(ctx, client.BucketSpec{Name: "demo"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObject(ctx, "demo", "demo.txt", strings.NewReader(prodText), int64(len(prodText)), "text/plain"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RegisterUfop(ctx, "grepd", "production test", dora.ModePrivate); err != nil {
		t.Fatal(err)
	}
	b := platformtest.Build(ctx, t, c, "grepd", filepath.Join(platformtest.RepoRoot(t), "examples", "grepd"))
	// Seed 000's flow: a release (dora.yaml) naming the built package,
	// then deploy --expect 2; the first deployed version becomes active.
	platformtest.ReleaseBuild(ctx, t, c, "grepd", b, "", client.DeployRequest{Region: "z0", Expect: 2})
	ins := healthyInstances(t, ctx, c, cc, 2)
	job, _, err := nc.Jobs().Info("ufop-grepd-v1", nil)
	if err != nil {
		t.Fatalf("nomad job: %v", err)
	}
	if drv := job.TaskGroups[0].Tasks[0].Driver; drv != "raw_exec" {
		t.Fatalf("task driver %q", drv)
	}
	if art := job.TaskGroups[0].Tasks[0].Artifacts; len(art) != 1 || !strings.HasPrefix(*art[0].GetterSource, adm.URL+"/v1/artifacts/grepd/") {
		t.Fatalf("artifact source does not point at the admin's public URL %s: %+v", adm.URL, art)
	}

	hc := &http.Client{Timeout: 30 * time.Second}
	platformtest.Eventually(t, prodWait, "grepd answering through the router", func() error { return routerGet(hc, rtr.URL) })

	// Resize to three: three healthy, listed by their allocation ids.
	if _, err := c.Resize(ctx, "grepd", 3, ""); err != nil {
		t.Fatal(err)
	}
	ins = healthyInstances(t, ctx, c, cc, 3)
	allocRE := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	for _, in := range ins {
		if !allocRE.MatchString(in.ID) {
			t.Fatalf("instance id %q is not a Nomad allocation id", in.ID)
		}
		if a, _, err := nc.Allocations().Info(in.ID, nil); err != nil || a.JobID != "ufop-grepd-v1" {
			t.Fatalf("allocation %s: %v", in.ID, err)
		}
	}

	// Kill one instance's process: Consul turns it critical, requests
	// keep succeeding (the router retries connect failures elsewhere and
	// drops the instance once Consul does).
	victim := ins[1]
	pid, err := agenttest.PidInDir(filepath.Join(nomad.DataDir, "alloc", victim.ID, "grepd", "local", "app"))
	if err != nil {
		t.Fatal(err)
	}
	_, index, err := passingAllocs(cc, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Blocking queries see every change, so the critical window (until
	// Nomad restarts the task) cannot be missed.
	platformtest.Eventually(t, prodWait, "killed instance critical in Consul", func() error {
		entries, meta, err := cc.Health().Service("ufop-grepd", "", false,
			(&consulapi.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second}).WithContext(ctx))
		if err != nil {
			return err
		}
		index = meta.LastIndex
		for _, e := range entries {
			if e.Service.Meta["alloc_id"] == victim.ID {
				if st := e.Checks.AggregatedStatus(); st != consulapi.HealthCritical {
					return fmt.Errorf("%s is %s", victim.ID, st)
				}
				return nil
			}
		}
		return fmt.Errorf("%s not registered", victim.ID)
	})
	for i := range 30 {
		if err := routerGet(hc, rtr.URL); err != nil {
			t.Fatalf("request %d after the kill: %v", i, err)
		}
	}
	healthyInstances(t, ctx, c, cc, 3)

	checkPfop(t, ctx, pfopEnv{
		admin: adm, router: rtr, client: c, consul: cc,
		storeURL: storeURL, storePrefix: "dora-prod-test/", objectsURL: objectsURL,
		objectsDir: filepath.Join(dir, "objects"), queueURL: "redis://" + redis.Addr + "/0",
		discoveryURL: "consul://" + consul.Addr, log: log,
	})

	// Redis down for 10 s under load: the router drops load samples
	// (counted), no request fails.
	errsBefore := metricValue(t, rtr.URL, "dora_router_load_errors_total")
	stop := startLoad(hc, rtr.URL, 4)
	redis.Stop()
	time.Sleep(10 * time.Second) // the outage being tested, not a synchronisation
	okDuringRedis, failures := stop()
	redis.Start()
	if len(failures) > 0 {
		t.Fatalf("%d requests failed while Redis was down (%d succeeded); first: %s", len(failures), okDuringRedis, failures[0])
	}
	if okDuringRedis == 0 {
		t.Fatal("no request was served while Redis was down")
	}
	if after := metricValue(t, rtr.URL, "dora_router_load_errors_total"); after <= errsBefore {
		t.Fatalf("dora_router_load_errors_total %v → %v: the router did not notice Redis was down", errsBefore, after)
	}
	t.Logf("Redis outage: %d requests served, none failed", okDuringRedis)

	// Consul down for 10 s under load: the router serves from its last
	// metadata snapshot and its last known instances. (A dev agent loses
	// its state when stopped, so the test ends with the outage.)
	stop = startLoad(hc, rtr.URL, 4)
	consul.Stop()
	time.Sleep(10 * time.Second) // the outage being tested
	okDuringConsul, failures := stop()
	if len(failures) > 0 {
		t.Fatalf("%d requests failed while Consul was down (%d succeeded); first: %s", len(failures), okDuringConsul, failures[0])
	}
	if okDuringConsul == 0 {
		t.Fatal("no request was served while Consul was down")
	}
	if v := metricValue(t, rtr.URL, "dora_discovery_consul_up"); v != 0 {
		t.Errorf("dora_discovery_consul_up = %v during the outage", v)
	}
	t.Logf("Consul outage: %d requests served, none failed", okDuringConsul)
	for _, s := range []*Service{adm.Service, rtr, scaler} {
		if err := s.Err(); err != nil {
			t.Errorf("%s failed: %v", s.Name, err)
		}
	}
}

// leaderOf reads an autoscaler's /healthz "leader" field.
func leaderOf(url string) (bool, error) {
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var h struct {
		Status string `json:"status"`
		Leader bool   `json:"leader"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || h.Status != "ok" {
		return false, fmt.Errorf("/healthz: %+v %v", h, err)
	}
	return h.Leader, nil
}

// TestAutoscalersElectOneLeader runs two autoscalers on one Consul store:
// exactly one leads; when it closes, the other takes over.
func TestAutoscalersElectOneLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Consul")
	}
	consul := agenttest.StartConsul(t)
	start := func() *Service {
		s, err := StartAutoscaler(context.Background(), AutoscalerConfig{
			Listen:  "127.0.0.1:0",
			Store:   "consul://" + consul.Addr + "/dora-ha-test",
			Runtime: "nomad://127.0.0.1:1", // no deployment: never called
			Logger:  platformtest.Logger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := start(), start()
	leader, standby := platformtest.OneLeads(t, prodWait, "one autoscaler leads", a, b, func(s *Service) (bool, error) { return leaderOf(s.URL) })
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	platformtest.Eventually(t, prodWait, "the standby takes over", func() error {
		l, err := leaderOf(standby.URL)
		if err != nil || !l {
			return fmt.Errorf("leader=%v %v", l, err)
		}
		return nil
	})
}

// TestAdminPfopNotifyPolicy: the admin refuses notifyURLs on loopback and
// private addresses unless AllowPrivateNotify is set.
func TestAdminPfopNotifyPolicy(t *testing.T) {
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprintf("allow=%v", allow), func(t *testing.T) {
			dir := platformtest.ReachableTempDir(t)
			ctx := context.Background()
			adm, err := StartAdmin(ctx, AdminConfig{
				Listen:             "127.0.0.1:0",
				Store:              "bolt://" + filepath.Join(dir, "meta.db"),
				Objects:            "file://" + filepath.Join(dir, "objects"),
				DataDir:            dir,
				RootAK:             prodRootAK,
				RootSK:             prodRootSK,
				AllowPrivateNotify: allow,
				Logger:             platformtest.Logger(),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer adm.Close()
			c := client.New(adm.URL, prodRootAK, prodRootSK)
			if _, err := c.CreateBucket(ctx, client.BucketSpec{Name: "demo"}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.PutObject(ctx, "demo", "a.txt", strings.NewReader("a"), 1, "text/plain"); err != nil {
				t.Fatal(err)
			}
			status, body := platformtest.SignedPfop(t, adm.URL, prodRootAK, prodRootSK, url.Values{
				"bucket": {"demo"}, "key": {"a.txt"}, "fops": {"qhash/md5"}, "notifyURL": {"http://127.0.0.1:9/done"},
			})
			want := http.StatusBadRequest
			if allow {
				want = http.StatusOK
			}
			if status != want {
				t.Fatalf("pfop with a loopback notifyURL = %d %s, want %d", status, body, want)
			}
		})
	}
}

// pfopEnv is what checkPfop needs of TestProductionRolesOnRealAgents.
type pfopEnv struct {
	admin                  *Admin
	router                 *Service
	client                 *client.Client
	consul                 *consulapi.Client
	storeURL, storePrefix  string
	objectsURL, objectsDir string
	queueURL, discoveryURL string
	log                    *slog.Logger
}

// prefop reads a job's status from the admin.
func (e pfopEnv) prefop(id string) (pfop.Status, error) {
	resp, err := http.Get(e.admin.URL + "/status/get/prefop?id=" + url.QueryEscape(id))
	if err != nil {
		return pfop.Status{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var st pfop.Status
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &st) != nil {
		return st, fmt.Errorf("prefop %s: %s %q", id, resp.Status, b)
	}
	return st, nil
}

// waitFinal polls prefop until the job has ended.
func (e pfopEnv) waitFinal(t *testing.T, id string) pfop.Status {
	t.Helper()
	var st pfop.Status
	platformtest.Eventually(t, prodWait, "pfop job "+id+" ended", func() error {
		var err error
		if st, err = e.prefop(id); err != nil {
			return err
		}
		if st.Code == pfop.CodeWaiting || st.Code == pfop.CodeProcessing {
			return fmt.Errorf("code %d", st.Code)
		}
		return nil
	})
	return st
}

// submit sends a pfop signed as Qiniu's SDK does and returns the job id.
func (e pfopEnv) submit(t *testing.T, bucket, key, fops string) string {
	t.Helper()
	status, body := platformtest.SignedPfop(t, e.admin.URL, prodRootAK, prodRootSK, url.Values{
		"bucket": {bucket}, "key": {key}, "fops": {fops}, "pipeline": {"prodtest"},
	})
	var sub struct {
		PersistentID string `json:"persistentId"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &sub) != nil || sub.PersistentID == "" {
		t.Fatalf("pfop %s:%s %s = %d %s", bucket, key, fops, status, body)
	}
	return sub.PersistentID
}

// persisted reads ?p/1/<fop> of bucket:key through the production router.
func (e pfopEnv) persisted(bucket, key, fop string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, e.router.URL+"/"+key+"?p/1/"+fop, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = bucket + ".localhost"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// startWorker starts a `dorad worker` on the shared Redis queue and Consul
// discovery and waits until its router has loaded the metadata.
func (e pfopEnv) startWorker(t *testing.T, ctx context.Context, name string, grace time.Duration) *Worker {
	t.Helper()
	w, err := StartWorker(ctx, WorkerConfig{
		Listen:    "127.0.0.1:0",
		Store:     e.storeURL,
		Queue:     e.queueURL,
		Discovery: e.discoveryURL,
		Objects:   e.objectsURL,
		Region:    "z0",
		Consumer:  name,
		Grace:     grace,
		Logger:    e.log.With("test", "worker "+name),
		// The mirror the job reads from is an httptest server on loopback.
		AllowPrivateMirror: true,
	})
	if err != nil {
		t.Fatalf("StartWorker %s: %v", name, err)
	}
	t.Cleanup(func() { w.Close() })
	if w.Consumer != name {
		t.Fatalf("worker consumer %q, want %q", w.Consumer, name)
	}
	platformtest.Eventually(t, prodWait, "worker "+name+" metadata loaded", func() error { return platformtest.Healthy(http.DefaultClient, w.URL) })
	return w
}

// jobRecord reads a job as stored in Consul KV (prefop does not show its
// attempts).
func (e pfopEnv) jobRecord(t *testing.T, id string) pfop.Job {
	t.Helper()
	kv, _, err := e.consul.KV().Get(e.storePrefix+store.JobKey(id), nil)
	if err != nil || kv == nil {
		t.Fatalf("job %s in Consul KV: %v %v", id, kv, err)
	}
	var j pfop.Job
	if err := json.Unmarshal(kv.Value, &j); err != nil {
		t.Fatal(err)
	}
	return j
}

// checkPfop: a pfop submitted to the admin (signed like Qiniu's SDK) is run
// by a worker on the Redis queue through a grepd instance found in Consul,
// and its saved result is served by the router's ?p/1/<fop>. Then a worker
// is closed while a job's input is still being fetched (a mirror that
// hangs the first GET): another worker completes the job, which took two
// runs and wrote its result once.
func checkPfop(t *testing.T, ctx context.Context, e pfopEnv) {
	const fop = "grepd/hello"
	wA := e.startWorker(t, ctx, "worker-a", time.Millisecond)

	id := e.submit(t, "demo", "demo.txt", fop)
	st := e.waitFinal(t, id)
	wantKey := pfop.DefaultResultKey("demo.txt", fop)
	if st.Code != pfop.CodeSuccess || len(st.Items) != 1 || st.Items[0].Code != pfop.CodeSuccess || st.Items[0].Key != wantKey ||
		st.InputBucket != "demo" || st.Pipeline != "prodtest" {
		t.Fatalf("pfop status %+v", st)
	}
	code, body, err := e.persisted("demo", "demo.txt", fop)
	if err != nil || code != http.StatusOK || body != "hello dora\nhello again\n" {
		t.Fatalf("router ?p/1/%s = %d %q %v", fop, code, body, err)
	}
	if code, _, err := e.persisted("demo", "demo.txt", "grepd/absent"); err != nil || code != http.StatusNotFound {
		t.Fatalf("router ?p/1/grepd/absent = %d %v, want 404", code, err)
	}

	// A mirror whose first GET hangs until the worker fetching it goes away.
	const mirrored = "hello mirror\nno\n"
	var gets atomic.Int32
	firstGet := make(chan struct{})
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(mirrored)))
		if r.Method == http.MethodGet && gets.Add(1) == 1 {
			close(firstGet)
			<-r.Context().Done()
			return
		}
		io.WriteString(w, mirrored)
	}))
	defer mirror.Close()
	if _, err := e.client.CreateBucket(ctx, client.BucketSpec{Name: "mirrored", Mirror: mirror.URL + "/"}); err != nil {
		t.Fatal(err)
	}
	platformtest.Eventually(t, prodWait, "worker-a sees the mirrored bucket", func() error {
		req, _ := http.NewRequest(http.MethodHead, wA.URL+"/slow.txt", nil)
		req.Host = "mirrored.localhost"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HEAD through worker-a: %s", resp.Status)
		}
		return nil
	})
	id = e.submit(t, "mirrored", "slow.txt", fop)
	select {
	case <-firstGet:
	case <-time.After(prodWait):
		t.Fatal("worker-a never fetched the job's input")
	}
	if st, err := e.prefop(id); err != nil || st.Code != pfop.CodeProcessing {
		t.Fatalf("job under way: %+v %v", st, err)
	}
	if err := wA.Close(); err != nil { // grace 1 ms: the job is cut short and handed back
		t.Fatalf("close worker-a: %v", err)
	}
	resultKey := pfop.DefaultResultKey("slow.txt", fop)
	resultPath := filepath.Join(e.objectsDir, "mirrored", resultKey)
	if _, err := os.Stat(resultPath); !os.IsNotExist(err) {
		t.Fatalf("worker-a left a result behind: %v", err)
	}
	if st, err := e.prefop(id); err != nil || st.Code != pfop.CodeProcessing && st.Code != pfop.CodeWaiting {
		t.Fatalf("job after worker-a closed: %+v %v", st, err)
	}

	wB := e.startWorker(t, ctx, "worker-b", 0)
	st = e.waitFinal(t, id)
	if st.Code != pfop.CodeSuccess || st.Items[0].Code != pfop.CodeSuccess || st.Items[0].Key != resultKey || st.Items[0].ReturnOld != 0 {
		t.Fatalf("job after the takeover %+v", st)
	}
	if j := e.jobRecord(t, id); j.Attempts != 2 {
		t.Fatalf("job ran %d times, want 2 (worker-a's cut-short run and worker-b's)", j.Attempts)
	}
	code, body, err = e.persisted("mirrored", "slow.txt", fop)
	if err != nil || code != http.StatusOK || body != "hello mirror\n" {
		t.Fatalf("router ?p/1/%s on the mirrored bucket = %d %q %v", fop, code, body, err)
	}
	if n := gets.Load(); n != 2 {
		t.Errorf("the mirror served %d GETs, want 2 (one per run)", n)
	}
	if err := wB.Close(); err != nil {
		t.Fatalf("close worker-b: %v", err)
	}
	t.Logf("pfop: job %s completed by worker-b after worker-a was closed mid-job; result written once", id)
}
