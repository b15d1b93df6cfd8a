// Package multihost tests every production role running twice, as on
// separate hosts: two `dorad admin`, two `dorad router`, two `dorad worker`
// and two `dorad autoscaler` processes, each with its own data directory,
// on real Consul (store, discovery, leader locks), Nomad (runtime), Redis
// (load, pfop queue) and SeaweedFS (S3 objects) agents on loopback. It is
// its own package so that `go test ./...` runs it beside the others: it is
// slow (a dorad build, a grepd build, Nomad allocations, lock TTLs).
package multihost

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/cli/platform/platformtest"
	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/auth"
)

const (
	rootAK = "multihostRootAccessKey0001"
	rootSK = "multihostRootSecretKey000000000000000001"
	text   = "hello dora\nnothing here\nhello again\n"
	// wait bounds every convergence (a role up, an instance healthy, a
	// leader elected); a healthy run takes a fraction of it.
	wait = 4 * time.Minute
)

// proc is one dorad process.
type proc struct {
	*platformtest.Process
	name, addr string
	out        *tailBuffer
	killed     atomic.Bool
}

// tailBuffer keeps a process's output for failure messages.
type tailBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *tailBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() > 1<<20 {
		rest := w.b.Bytes()[w.b.Len()-(256<<10):]
		w.b = *bytes.NewBuffer(append([]byte(nil), rest...))
	}
	return w.b.Write(p)
}

func (w *tailBuffer) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.b.String()
	if len(s) > 4000 {
		s = s[len(s)-4000:]
	}
	return s
}

func (p *proc) url() string { return "http://" + p.addr }

// kill9 sends SIGKILL: no shutdown code runs, as when a host dies.
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	p.killed.Store(true)
	if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %s: %v", p.name, err)
	}
	<-p.Done()
}

var hc = &http.Client{Timeout: 30 * time.Second}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// checkObject reads demo.txt whole; checkPipeline runs grepd then qhash.
func checkObject(routerURL string) error {
	code, b, err := platformtest.Get(hc, routerURL, "demo", "/demo.txt")
	if err != nil {
		return err
	}
	if code != 200 || string(b) != text {
		return fmt.Errorf("GET /demo.txt: %d %q", code, b)
	}
	return nil
}

func checkPipeline(routerURL string) error {
	code, b, err := platformtest.Get(hc, routerURL, "demo", "/demo.txt?grepd/hello|qhash/md5")
	if err != nil {
		return err
	}
	var h struct {
		Hash string `json:"hash"`
	}
	if code != 200 || json.Unmarshal(b, &h) != nil || h.Hash != md5hex("hello dora\nhello again\n") {
		return fmt.Errorf("GET /demo.txt?grepd/hello|qhash/md5: %d %q", code, b)
	}
	return nil
}

// tally counts one target's requests: ok, and failed with when each
// started and ended (to tell those in flight at a kill).
type tally struct {
	name     string
	ok       atomic.Int64
	mu       sync.Mutex
	failures []failure
}

type failure struct {
	start, end time.Time
	err        string
}

func (c *tally) record(start time.Time, err error) {
	if err == nil {
		c.ok.Add(1)
		return
	}
	c.mu.Lock()
	c.failures = append(c.failures, failure{start, time.Now(), err.Error()})
	c.mu.Unlock()
}

// failedBefore returns the failures of requests that ended before t (the
// zero time: all of them).
func (c *tally) failedBefore(t time.Time) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, f := range c.failures {
		if t.IsZero() || f.end.Before(t) {
			out = append(out, f.start.Format("15:04:05.000")+" "+f.err)
		}
	}
	return out
}

// load runs check in n goroutines against one target until stop.
func load(n int, c *tally, stop <-chan struct{}, wg *sync.WaitGroup, check func() error) {
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				c.record(start, check())
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func adminLeads(p *proc) bool {
	v, err := platformtest.Metric(hc, p.url(), "dora_admin_leader")
	return err == nil && v == 1
}

func scalerLeads(p *proc) bool {
	resp, err := hc.Get(p.url() + "/healthz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var h struct {
		Leader bool `json:"leader"`
	}
	return json.NewDecoder(resp.Body).Decode(&h) == nil && h.Leader
}

// oneOf waits until exactly one of a and b is alive and satisfies leads
// and returns it and the other; both at once fails the test.
func oneOf(t *testing.T, what string, a, b *proc, leads func(*proc) bool) (*proc, *proc) {
	t.Helper()
	return platformtest.OneLeads(t, wait, what, a, b, func(p *proc) (bool, error) { return p.Alive() && leads(p), nil })
}

// pfopSubmit posts a pfop to an admin, signed as Qiniu's SDKs sign.
func pfopSubmit(adminURL, key, fops string) (string, error) {
	form := url.Values{"bucket": {"demo"}, "key": {key}, "fops": {fops}, "pipeline": {"multihost"}}.Encode()
	req, err := http.NewRequest(http.MethodPost, adminURL+"/pfop/", strings.NewReader(form))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	auth.SignRequest(req, rootAK, rootSK, []byte(form), time.Now())
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sub struct {
		PersistentID string `json:"persistentId"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &sub) != nil || sub.PersistentID == "" {
		return "", fmt.Errorf("pfop: %d %q", resp.StatusCode, b)
	}
	return sub.PersistentID, nil
}

// pfopCode is the job's prefop code as an admin reports it.
func pfopCode(adminURL, id string) (int, error) {
	resp, err := hc.Get(adminURL + "/status/get/prefop?id=" + url.QueryEscape(id))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var s struct {
		Code int `json:"code"`
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || json.Unmarshal(b, &s) != nil {
		return 0, fmt.Errorf("prefop %s: %d %q", id, resp.StatusCode, b)
	}
	return s.Code, nil
}

func waitPfop(t *testing.T, adminURL, id string) {
	t.Helper()
	platformtest.Eventually(t, wait, "pfop "+id+" done", func() error {
		code, err := pfopCode(adminURL, id)
		if err != nil {
			return err
		}
		switch code {
		case 0:
			return nil
		case 1, 2: // waiting, processing
			return fmt.Errorf("code %d", code)
		}
		t.Fatalf("pfop %s ended with code %d", id, code)
		return nil
	})
}

// TestTwoOfEveryRole: two admins, routers, workers and autoscalers as
// separate processes on shared Consul, Nomad, Redis and S3:
//   - any request through either router works (object, grepd|qhash);
//   - a saveas through router 1 is readable through router 2 at once;
//   - a pfop run by worker 2 (worker 1 paused) is readable through router 1;
//   - exactly one admin and one autoscaler lead;
//   - kill -9 of one process of each role (the leading admin, the leading
//     autoscaler, router 2, worker 1) under steady load through both
//     routers and both admins: no failed request among those that did not
//     run on a killed process (for the killed ones, only requests that
//     ended before the kill count), the survivors take the leads, pfop
//     jobs acknowledged before the kill all finish, and new work (saveas,
//     pfop) goes on.
func TestTwoOfEveryRole(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Consul, Nomad, Redis, SeaweedFS and eight dorad processes")
	}
	root := platformtest.RepoRoot(t)
	bin := platformtest.BuildDorad(t)

	consul := agenttest.StartConsul(t)
	nomad := agenttest.StartNomad(t, consul)
	redis := agenttest.StartRedis(t)
	weed := agenttest.StartSeaweedFS(t)
	weed.CreateBucket(t, "dora-mh")
	nc := platformtest.NomadClient(t, nomad) // purges the jobs after the roles stopped

	dir := platformtest.ReachableTempDir(t)
	goCache := filepath.Join(dir, "gocache")
	if err := os.MkdirAll(goCache, 0o711); err != nil {
		t.Fatal(err)
	}
	store := "consul://" + consul.Addr + "/dora-mh"
	objects := "s3://dora-mh/mh?endpoint=" + url.QueryEscape(weed.Endpoint) + "&path-style=true"
	redisURL := "redis://" + redis.Addr + "/0"
	env := append(os.Environ(),
		"DORA_ROOT_AK="+rootAK, "DORA_ROOT_SK="+rootSK,
		"AWS_ACCESS_KEY_ID="+weed.AccessKey, "AWS_SECRET_ACCESS_KEY="+weed.SecretKey,
		"AWS_CONFIG_FILE="+filepath.Join(dir, "none"), "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "none"),
		"AWS_EC2_METADATA_DISABLED=true", "AWS_PROFILE=")
	var procs []*proc
	start := func(role, name string, args ...string) *proc {
		p := &proc{name: name, addr: platformtest.FreeAddr(t), out: &tailBuffer{}}
		cmd := exec.Command(bin, append([]string{role, "--listen", p.addr, "--log-level", "debug"}, args...)...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = p.out, p.out
		p.Process = platformtest.StartProcess(t, cmd)
		procs = append(procs, p)
		return p
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range procs {
				t.Logf("--- %s (alive %v, killed %v): %v\n%s", p.name, p.Alive(), p.killed.Load(), p.Err(), p.out.tail())
			}
		}
	})
	adminArgs := func(name string) []string {
		return []string{"--store", store, "--runtime", "nomad://" + nomad.Addr, "--objects", objects,
			"--queue", redisURL, "--data-dir", filepath.Join(dir, name), "--regions", "z0=global/dc1",
			"--go-cache", filepath.Join(goCache, "go-build")}
	}
	routerArgs := []string{"--store", store, "--discovery", "consul://" + consul.Addr, "--load", redisURL,
		"--objects", objects, "--region", "z0"}
	workerArgs := func(name string) []string {
		return []string{"--store", store, "--queue", redisURL, "--discovery", "consul://" + consul.Addr,
			"--objects", objects, "--region", "z0", "--consumer", name, "--reclaim-after", "5s"}
	}
	scalerArgs := []string{"--store", store, "--runtime", "nomad://" + nomad.Addr, "--load", redisURL,
		"--regions", "z0=global/dc1"}

	admin1 := start("admin", "admin-1", adminArgs("admin-1")...)
	admin2 := start("admin", "admin-2", adminArgs("admin-2")...)
	router1 := start("router", "router-1", routerArgs...)
	router2 := start("router", "router-2", routerArgs...)
	worker1 := start("worker", "worker-1", workerArgs("worker-1")...)
	worker2 := start("worker", "worker-2", workerArgs("worker-2")...)
	scaler1 := start("autoscaler", "autoscaler-1", scalerArgs...)
	scaler2 := start("autoscaler", "autoscaler-2", scalerArgs...)
	for _, p := range procs {
		platformtest.Eventually(t, wait, p.name+" healthy", func() error {
			if !p.Alive() {
				t.Fatalf("%s exited: %v\n%s", p.name, p.Err(), p.out.tail())
			}
			return platformtest.Healthy(hc, p.url())
		})
	}
	adminLeader, adminOther := oneOf(t, "one admin leads", admin1, admin2, adminLeads)
	scalerLeader, _ := oneOf(t, "one autoscaler leads", scaler1, scaler2, scalerLeads)
	t.Logf("leaders: %s, %s", adminLeader.name, scalerLeader.name)

	// The user's flow, through both admins: the bucket and object through
	// one, the ufop, build, release and deployment through the other (the
	// one that does not lead, which survives the kills: it keeps the build's
	// artifact on its disk).
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cl := client.New(adminLeader.url(), rootAK, rootSK)
	co := client.New(adminOther.url(), rootAK, rootSK)
	if _, err := cl.CreateBucket(ctx, client.BucketSpec{Name: "demo"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.PutObject(ctx, "demo", "demo.txt", strings.NewReader(text), int64(len(text)), "text/plain"); err != nil {
		t.Fatal(err)
	}
	if _, err := co.StatObject(ctx, "demo", "demo.txt"); err != nil {
		t.Fatalf("stat through the other admin: %v", err)
	}
	if _, err := co.RegisterUfop(ctx, "grepd", "multihost test", dora.ModePrivate); err != nil {
		t.Fatal(err)
	}
	b := platformtest.Build(ctx, t, co, "grepd", filepath.Join(root, "examples", "grepd"))
	// Two instances, at most two: the autoscaler never needs to place a
	// new allocation (which fetches the artifact from the building admin).
	platformtest.ReleaseBuild(ctx, t, co, "grepd", b, "", client.DeployRequest{Region: "z0", Expect: 2, Max: 2})

	// Any request through either router works.
	for _, r := range []*proc{router1, router2} {
		platformtest.Eventually(t, wait, "grepd|qhash through "+r.name, func() error { return checkPipeline(r.url()) })
		if err := checkObject(r.url()); err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
	}

	// A saveas through router 1 is readable through router 2 at once.
	saveas := func(via *proc, key string) {
		t.Helper()
		q := "grepd/hello|saveas/" + auth.EncodedEntryURI("demo", key)
		sign := auth.SaveAsSign(rootSK, "demo.localhost/demo.txt?"+q)
		code, body, err := platformtest.Get(hc, via.url(), "demo", "/demo.txt?"+q+"/sign/"+rootAK+":"+sign)
		if err != nil || code != 200 || string(body) != "hello dora\nhello again\n" {
			t.Fatalf("saveas %s through %s: %d %q %v", key, via.name, code, body, err)
		}
	}
	saveas(router1, "out/saved-1.txt")
	if code, body, err := platformtest.Get(hc, router2.url(), "demo", "/out/saved-1.txt"); err != nil || code != 200 || string(body) != "hello dora\nhello again\n" {
		t.Fatalf("saveas result through router-2: %d %q %v", code, body, err)
	}

	// A pfop run by worker 2 (worker 1 is paused, so it cannot claim it) is
	// readable through router 1.
	if err := worker1.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	id, err := pfopSubmit(adminOther.url(), "demo.txt", "grepd/hello|saveas/"+auth.EncodedEntryURI("demo", "out/pfop-2.txt"))
	if err != nil {
		t.Fatal(err)
	}
	waitPfop(t, adminLeader.url(), id)
	const jobsDone = `dora_pfop_jobs_total{outcome="success",pipeline="multihost"}`
	// The worker counts a job after it has stored the job's code, which
	// the test has just read: the count follows.
	platformtest.Eventually(t, wait, "worker-2 counts the job", func() error {
		if n, err := platformtest.Metric(hc, worker2.url(), jobsDone); err != nil || n != 1 {
			return fmt.Errorf("worker-2 %s = %v, %v; want 1", jobsDone, n, err)
		}
		return nil
	})
	if err := worker1.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if n, err := platformtest.Metric(hc, worker1.url(), jobsDone); err == nil && n != 0 {
		t.Fatalf("worker-1, paused, ran %v jobs", n)
	}
	if code, body, err := platformtest.Get(hc, router1.url(), "demo", "/out/pfop-2.txt"); err != nil || code != 200 || string(body) != "hello dora\nhello again\n" {
		t.Fatalf("pfop result through router-1: %d %q %v", code, body, err)
	}

	// Steady load through both routers and both admins.
	tallies := map[*proc]*tally{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range []*proc{router1, router2} {
		c := &tally{name: r.name}
		tallies[r] = c
		load(2, c, stop, &wg, func() error { return checkObject(r.url()) })
		load(2, c, stop, &wg, func() error { return checkPipeline(r.url()) })
	}
	for _, a := range []*proc{admin1, admin2} {
		c := &tally{name: a.name}
		tallies[a] = c
		ac := client.New(a.url(), rootAK, rootSK)
		load(1, c, stop, &wg, func() error {
			o, err := ac.StatObject(ctx, "demo", "demo.txt")
			if err == nil && o.Size != int64(len(text)) {
				err = fmt.Errorf("stat: %+v", o)
			}
			return err
		})
	}
	// pfop jobs, submitted to the admin that survives, some of them
	// claimed by the worker about to be killed.
	var jobs []string
	for i := range 6 {
		id, err := pfopSubmit(adminOther.url(), "demo.txt", "grepd/hello|saveas/"+auth.EncodedEntryURI("demo", fmt.Sprintf("out/job-%d.txt", i)))
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, id)
	}
	time.Sleep(5 * time.Second) // load before the kills, to compare with after
	jobBefore, _, err := nc.Jobs().Info("ufop-grepd-v1", nil)
	if err != nil {
		t.Fatalf("nomad job: %v", err)
	}

	// kill -9 one process of each role at once.
	killAt := time.Now()
	for _, p := range []*proc{adminLeader, scalerLeader, router2, worker1} {
		p.kill9(t)
	}
	t.Logf("killed %s, %s, router-2, worker-1 at %s", adminLeader.name, scalerLeader.name, killAt.Format("15:04:05.000"))

	// The survivors take the leads (within the lock TTL, which Consul may
	// stretch up to twice, plus the lock delay).
	scalerSurvivor := scaler1
	if scalerLeader == scaler1 {
		scalerSurvivor = scaler2
	}
	platformtest.Eventually(t, wait, adminOther.name+" leads", func() error {
		if !adminLeads(adminOther) {
			return fmt.Errorf("not leading")
		}
		return nil
	})
	platformtest.Eventually(t, wait, scalerSurvivor.name+" leads", func() error {
		if !scalerLeads(scalerSurvivor) {
			return fmt.Errorf("not leading")
		}
		return nil
	})
	t.Logf("leads taken over %v after the kills", time.Since(killAt).Round(time.Millisecond))
	// The new leader admin deploys nothing twice: wait for a few of its
	// reconcile passes, then the Nomad job is the version it was.
	p0, err := platformtest.Metric(hc, adminOther.url(), "dora_admin_reconcile_passes_total")
	if err != nil {
		t.Fatal(err)
	}
	platformtest.Eventually(t, wait, "reconcile passes of the new leader", func() error {
		p, err := platformtest.Metric(hc, adminOther.url(), "dora_admin_reconcile_passes_total")
		if err == nil && p < p0+3 {
			err = fmt.Errorf("%v passes", p)
		}
		return err
	})
	jobAfter, _, err := nc.Jobs().Info("ufop-grepd-v1", nil)
	if err != nil {
		t.Fatalf("nomad job: %v", err)
	}
	if *jobAfter.Version != *jobBefore.Version {
		t.Errorf("the takeover re-deployed: nomad job version %d → %d", *jobBefore.Version, *jobAfter.Version)
	}
	if builds, err := co.Builds(ctx, "grepd"); err != nil || len(builds) != 1 {
		t.Errorf("builds after the takeover: %+v, %v", builds, err)
	}

	// Jobs acknowledged before the kill finish (worker 2 reclaims worker
	// 1's); new work goes on.
	for _, id := range jobs {
		waitPfop(t, adminOther.url(), id)
	}
	for i := range jobs {
		key := fmt.Sprintf("/out/job-%d.txt", i)
		if code, body, err := platformtest.Get(hc, router1.url(), "demo", key); err != nil || code != 200 || string(body) != "hello dora\nhello again\n" {
			t.Fatalf("%s through router-1: %d %q %v", key, code, body, err)
		}
	}
	saveas(router1, "out/saved-after.txt")
	id, err = pfopSubmit(adminOther.url(), "demo.txt", "grepd/hello|saveas/"+auth.EncodedEntryURI("demo", "out/pfop-after.txt"))
	if err != nil {
		t.Fatal(err)
	}
	waitPfop(t, adminOther.url(), id)
	time.Sleep(5 * time.Second) // load after the kills
	close(stop)
	wg.Wait()

	for _, p := range procs {
		if !p.killed.Load() && !p.Alive() {
			t.Errorf("%s exited: %v", p.name, p.Err())
		}
	}
	for _, p := range []*proc{router1, router2, admin1, admin2} {
		c := tallies[p]
		var until time.Time // survivors: every request counts
		if p.killed.Load() {
			until = killAt // killed: only requests that ended before the kill
		}
		failed := c.failedBefore(until)
		t.Logf("%s (killed %v): %d ok, %d failed that count, %d failed in all", p.name, p.killed.Load(), c.ok.Load(), len(failed), len(c.failedBefore(time.Time{})))
		if len(failed) > 0 {
			t.Errorf("%s: %d failed requests that did not run on a killed process, first: %v", p.name, len(failed), failed[:min(5, len(failed))])
		}
		if c.ok.Load() == 0 {
			t.Errorf("%s: no request succeeded", p.name)
		}
	}
}
