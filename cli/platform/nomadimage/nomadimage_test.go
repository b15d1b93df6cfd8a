package nomadimage_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/admin/registry"
	doraruntime "github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/cli/platform"
	"github.com/doraproject/dora/cli/platform/platformtest"
	"github.com/doraproject/dora/cli/qdoractl/cmd"
	"github.com/doraproject/dora/internal/agenttest"
)

const (
	rootAK = "nomadImageRootAccessKey001"
	rootSK = "nomadImageRootSecretKey000000000000000001"
)

// wait bounds each wait for Nomad, Consul, podman or the roles to
// converge; a healthy run takes a fraction of it.
const wait = 3 * time.Minute

// demoBinary builds cli/e2e/testdata/ufopdemo (Qiniu's demo shape:
// /handler, /health, port 9100 unless PORT_HTTP) static into dir.
func demoBinary(t testing.TB, dir string) string {
	t.Helper()
	return buildStatic(t, dir, "./cli/e2e/testdata/ufopdemo", "ufopdemo")
}

// buildStatic builds the repository's package pkg static as dir/name.
func buildStatic(t testing.TB, dir, pkg, name string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	build := exec.Command("go", "build", "-o", bin, pkg)
	build.Dir = platformtest.RepoRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// demoTar packs the demo as an image written as a docker-save tarball.
func demoTar(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "ufopdemo.tar")
	agenttest.PackImage(t, demoBinary(t, dir), path, "ufopdemo:v1", agenttest.ImageOptions{})
	return path
}

// hostIP is an address of this host that a container on podman's bridge
// network reaches (the router's one-shot input URLs must be fetchable
// from inside the containers, as from another host in production): the
// first up, non-loopback IPv4 address outside podman's own bridges.
func hostIP(t testing.TB) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 ||
			strings.HasPrefix(ifc.Name, "podman") || strings.HasPrefix(ifc.Name, "cni") || strings.HasPrefix(ifc.Name, "veth") {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
				return ipn.IP.String()
			}
		}
	}
	t.Fatal("this host has no non-loopback IPv4 address: the containers could not reach the router's input URLs")
	return ""
}

// qdoractl runs the CLI in-process and fails the test unless it exits 0.
func qdoractl(t testing.TB, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if code := cmd.Run(ctx, args, strings.NewReader(""), &stdout, &stderr); code != 0 {
		t.Fatalf("qdoractl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// expect checks one request through the router.
func expect(hc *http.Client, routerURL, path string, ok func([]byte) bool) error {
	code, body, err := platformtest.Get(hc, routerURL, "demo", path)
	if err != nil {
		return err
	}
	if code != http.StatusOK || !ok(body) {
		return fmt.Errorf("GET %s: %d %.300q", path, code, body)
	}
	return nil
}

// container is what the test reads of a container from podman's
// Docker-compatible API.
type container struct {
	ID     string
	Names  []string
	Image  string
	State  string
	Labels map[string]string
	Ports  []struct {
		IP          string
		PrivatePort int
		PublicPort  int
		Type        string
	}
}

// containersOf lists the containers (running or not) Nomad's docker driver
// created for an allocation, through the Docker API it uses.
func containersOf(t testing.TB, pd *agenttest.Podman, allocID string) []container {
	t.Helper()
	filters, _ := json.Marshal(map[string][]string{"label": {"com.hashicorp.nomad.alloc_id=" + allocID}})
	resp, err := pd.HTTPClient().Get("http://d/v1.41/containers/json?all=true&filters=" + url.QueryEscape(string(filters)))
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	defer resp.Body.Close()
	var cs []container
	if err := json.NewDecoder(resp.Body).Decode(&cs); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("list containers: %s %v", resp.Status, err)
	}
	return cs
}

// runningAllocs returns the running allocations of the job.
func runningAllocs(nc *nomadapi.Client, jobID string) ([]*nomadapi.AllocationListStub, error) {
	allocs, _, err := nc.Jobs().Allocations(jobID, false, nil)
	if err != nil {
		return nil, err
	}
	var run []*nomadapi.AllocationListStub
	for _, a := range allocs {
		if a.ClientStatus == nomadapi.AllocClientStatusRunning && a.DesiredStatus == "run" {
			run = append(run, a)
		}
	}
	return run, nil
}

// twoHealthy waits until the job has two running allocations, Consul
// passes exactly those two, and the admin reports two healthy RUNNING
// instances with those ids; it returns the allocation ids.
func twoHealthy(t testing.TB, ctx context.Context, c *client.Client, nc *nomadapi.Client, cc *consulapi.Client, ufop, jobID string) []string {
	t.Helper()
	var ids []string
	platformtest.Eventually(t, wait, "two Nomad allocations, two passing Consul checks, two healthy instances", func() error {
		allocs, err := runningAllocs(nc, jobID)
		if err != nil {
			return err
		}
		ids = ids[:0]
		for _, a := range allocs {
			ids = append(ids, a.ID)
		}
		slices.Sort(ids)
		if len(ids) != 2 {
			return fmt.Errorf("%d running allocations", len(ids))
		}
		entries, _, err := cc.Health().Service("ufop-"+ufop, "", true, nil)
		if err != nil {
			return err
		}
		var passing []string
		for _, e := range entries {
			passing = append(passing, e.Service.Meta["alloc_id"])
		}
		slices.Sort(passing)
		if !slices.Equal(passing, ids) {
			return fmt.Errorf("consul passes %v, nomad runs %v", passing, ids)
		}
		ins, err := c.Instances(ctx, ufop, "", false)
		if err != nil {
			return err
		}
		var healthy []string
		for _, in := range ins {
			if in.State == doraruntime.StateRunning && in.Healthy {
				healthy = append(healthy, in.ID)
			}
		}
		slices.Sort(healthy)
		if !slices.Equal(healthy, ids) {
			return fmt.Errorf("admin reports %+v", ins)
		}
		return nil
	})
	return ids
}

// env is a running platform: podman's API service, Consul, Nomad (docker
// driver on podman; CNI bridge networking), Redis, and the admin and the
// router of the production roles.
type env struct {
	work      string
	adminAddr string
	pd        *agenttest.Podman
	nomad     *agenttest.Nomad
	nc        *nomadapi.Client
	cc        *consulapi.Client
	adm       *platform.Admin
	routerURL string
	client    *client.Client
}

// startPlatform starts the agents and the roles; the admin runs
// deployments on Nomad with runtimeQuery appended to its nomad:// URL.
// When the test ends, every job is purged and no allocation nor container
// of it may be left running.
func startPlatform(t testing.TB, runtimeQuery string) *env {
	t.Helper()
	e := &env{work: t.TempDir()}
	// The admin's address is chosen first: podman must know the registry
	// is plain HTTP (registries.conf) before it pulls from it.
	e.adminAddr = fmt.Sprintf("127.0.0.1:%d", agenttest.FreePort(t))
	e.pd = agenttest.StartPodman(t, agenttest.PodmanOptions{InsecureRegistries: []string{e.adminAddr}})
	consul := agenttest.StartConsul(t)
	e.nomad = agenttest.StartNomadWith(t, consul, agenttest.NomadOptions{
		DockerEndpoint: e.pd.Endpoint,
		CNIPath:        agenttest.CNIPath(t),
	})
	redis := agenttest.StartRedis(t)
	ncfg := nomadapi.DefaultConfig()
	ncfg.Address = e.nomad.URL()
	var err error
	if e.nc, err = nomadapi.NewClient(ncfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.purge(t) })
	if e.cc, err = platform.ConsulClient("consul://" + consul.Addr); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	log := platformtest.Logger()
	storeURL := "consul://" + consul.Addr + "/dora-nomad-image"
	objectsURL := "file://" + filepath.Join(e.work, "objects")
	regions := []platform.RegionSpec{{Name: "z0", NomadRegion: "global", Datacenters: []string{"dc1"}}}
	e.adm, err = platform.StartAdmin(ctx, platform.AdminConfig{
		Listen:  e.adminAddr,
		Store:   storeURL,
		Runtime: "nomad://" + e.nomad.Addr + runtimeQuery,
		Objects: objectsURL,
		Queue:   "redis://" + redis.Addr + "/0",
		DataDir: filepath.Join(e.work, "admin"),
		Regions: regions,
		RootAK:  rootAK, RootSK: rootSK,
		// The data dir lives in the test's temp dir, which nobody may not
		// reach; build scripts here only copy files.
		RunAs:  platform.RunAsSelf,
		Logger: log.With("test", "admin"),
	})
	if err != nil {
		t.Fatalf("StartAdmin: %v", err)
	}
	platformtest.CloseAtEnd(t, "admin", e.adm)
	// The router listens on an address the instances reach from their own
	// network namespaces: its one-shot input URLs name it.
	rtr, err := platform.StartRouter(ctx, platform.RouterConfig{
		Listen:    net.JoinHostPort(hostIP(t), "0"),
		Store:     storeURL,
		Discovery: "consul://" + consul.Addr,
		Load:      "redis://" + redis.Addr + "/0",
		Objects:   objectsURL,
		Region:    "z0",
		Logger:    log.With("test", "router"),
	})
	if err != nil {
		t.Fatalf("StartRouter: %v", err)
	}
	platformtest.CloseAtEnd(t, "router", rtr)
	e.routerURL = rtr.URL
	e.client = client.New(e.adm.URL, rootAK, rootSK)

	// qdoractl, logged in to this admin.
	t.Setenv("HOME", t.TempDir())
	for _, k := range []string{"DORA_API", "DORA_AK", "DORA_SK", "QDORACTL_CONFIG"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	qdoractl(t, "login", "-u", rootAK, "-p", rootSK, "--api", e.adm.URL)
	return e
}

// The objects every test processes: small.txt goes to the program in the
// request's body, big.txt (beyond the 64 KiB body limit) by the router's
// one-shot input URL, which the program fetches from inside its network
// namespace.
var (
	small = "hello dora\nfrom nomad\n"
	big   = strings.Repeat("0123456789abcdef", 16<<10) // 256 KiB
)

// putObjects creates the bucket demo with small.txt and big.txt.
func (e *env) putObjects(t testing.TB) {
	t.Helper()
	qdoractl(t, "bucket", "create", "demo")
	for key, text := range map[string]string{"small.txt": small, "big.txt": big} {
		p := filepath.Join(e.work, key)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		qdoractl(t, "put", "demo", key, p)
	}
}

// purge deregisters every job and waits (bounded) until none of their
// allocations and containers runs; anything left fails the test. It runs
// after the roles closed, before Nomad and podman stop.
func (e *env) purge(t testing.TB) {
	jobs, _, err := e.nc.Jobs().List(nil)
	if err != nil {
		t.Errorf("cleanup: list jobs: %v", err)
		return
	}
	var allocs []string
	for _, j := range jobs {
		as, _, err := e.nc.Jobs().Allocations(j.ID, true, nil)
		if err != nil {
			t.Errorf("cleanup: allocations of %s: %v", j.ID, err)
		}
		for _, a := range as {
			allocs = append(allocs, a.ID)
		}
		if _, _, err := e.nc.Jobs().Deregister(j.ID, true, nil); err != nil {
			t.Errorf("cleanup: deregister %s: %v", j.ID, err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for _, id := range allocs {
		for {
			var running []string
			if a, _, err := e.nc.Allocations().Info(id, nil); err == nil && a.ClientStatus == nomadapi.AllocClientStatusRunning {
				running = append(running, "allocation "+id)
			}
			for _, c := range containersOf(t, e.pd, id) {
				if c.State == "running" {
					running = append(running, "container "+c.ID)
				}
			}
			if len(running) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("still running a minute after the jobs were purged: %v", running)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// TestImageOnNomadWithPodman is seed 000's Docker flow on the production
// roles: Nomad's docker driver on podman's Docker-compatible API socket,
// Consul discovery, Redis load. An image shaped like Qiniu's demo (fixed
// port 9100 unless PORT_HTTP) is pushed with `qdoractl push --from` to the
// admin's registry, released (dora.yaml) and deployed with --expect 2: two
// Nomad allocations pull it from the registry at the address the admin
// advertises, with the registry's pull credentials in the job's auth
// block; two Consul checks pass; requests through the router succeed in
// both input modes (body, and the one-shot input URL the container fetches
// back from the router); a killed container is restarted while requests
// keep succeeding; nothing is left once the job is purged.
func TestImageOnNomadWithPodman(t *testing.T) {
	if testing.Short() {
		t.Skip("starts podman, Consul, Nomad and Redis")
	}
	e := startPlatform(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	work, adminAddr, pd, nc, cc := e.work, e.adminAddr, e.pd, e.nc, e.cc
	tarPath := demoTar(t, work)
	const ufop, jobID = "ufopdemo", "ufop-ufopdemo-v1"

	// Seed 000 with qdoractl: push --from, a bucket and objects, register,
	// release --config, deploy --expect 2.
	if out := qdoractl(t, "push", "ufopdemo:v1", "--from", tarPath); !strings.Contains(out, "Push success") {
		t.Fatalf("push:\n%s", out)
	}
	e.putObjects(t)
	qdoractl(t, "register", ufop, "-m", "private", "-d", "image on nomad")
	relDir := filepath.Join(work, "release")
	if err := os.Mkdir(relDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(relDir, "dora.yaml"), []byte("ufopname: "+ufop+"\nverstr: v1\nimage: ufopdemo:v1\n"+
		"desc: Qiniu's demo shape\nflavor: C1M1\nhealth_check:\n  path: /health\n  timeout: 1\nlog_file_paths: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	qdoractl(t, "release", "--config", relDir)
	t0 := time.Now()
	qdoractl(t, "deploy", ufop, "v1", "--region", "z0", "--expect", "2")

	hc := &http.Client{Timeout: 30 * time.Second}
	routerURL := e.routerURL
	wantSmall := strings.ToUpper(small)
	var first time.Duration
	platformtest.Eventually(t, wait, "first 200 through the router", func() error {
		err := expect(hc, routerURL, "/small.txt?"+ufop, func(b []byte) bool { return string(b) == wantSmall })
		if err == nil {
			first = time.Since(t0)
		}
		return err
	})
	t.Logf("deploy -> first 200 on Nomad (docker driver on podman): %v", first)
	allocs := twoHealthy(t, ctx, e.client, nc, cc, ufop, jobID)

	// The job: docker driver, the image at the address the admin
	// advertises, the registry's pull credentials as auth.
	job, _, err := nc.Jobs().Info(jobID, nil)
	if err != nil {
		t.Fatal(err)
	}
	task := job.TaskGroups[0].Tasks[0]
	wantPrefix := adminAddr + "/"
	if task.Driver != "docker" || !strings.HasPrefix(fmt.Sprint(task.Config["image"]), wantPrefix) || !strings.HasSuffix(fmt.Sprint(task.Config["image"]), "/ufopdemo:v1") {
		t.Fatalf("task driver %q image %v, want docker and %s<account>/ufopdemo:v1", task.Driver, task.Config["image"], wantPrefix)
	}
	// The registry refuses anonymous pulls: the auth block is what let the
	// docker driver pull.
	image := fmt.Sprint(task.Config["image"])
	repo, tag, _ := strings.Cut(strings.TrimPrefix(image, adminAddr+"/"), ":")
	if resp, err := http.Get("http://" + adminAddr + "/v2/" + repo + "/manifests/" + tag); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous pull of %s: %s, want 401", image, resp.Status)
	}
	wantUser, _ := registry.PullCredentials(rootSK)
	if auth := fmt.Sprint(task.Config["auth"]); !strings.Contains(auth, "username:"+wantUser) {
		t.Fatalf("task auth %s, want the registry's pull user %s", auth, wantUser)
	}

	// Each allocation is one podman container of the pushed image,
	// publishing its port 9100 on a loopback host port.
	for _, id := range allocs {
		cs := containersOf(t, pd, id)
		if len(cs) != 1 || cs[0].State != "running" {
			t.Fatalf("containers of allocation %s: %+v", id, cs)
		}
		published := false
		for _, p := range cs[0].Ports {
			published = published || (p.PrivatePort == 9100 && p.PublicPort != 0)
		}
		if !published {
			t.Fatalf("container of %s does not publish 9100: %+v", id, cs[0].Ports)
		}
	}
	// Its logs (Nomad's, through the admin) show it listening on 9100.
	platformtest.Eventually(t, wait, "logtail shows :9100", func() error {
		out := qdoractl(t, "logtail", ufop, "-index", "1")
		if !strings.Contains(out, "ufopdemo listening on :9100") {
			return fmt.Errorf("logtail: %q", out)
		}
		return nil
	})

	// Both input modes, and a pipeline.
	wantBig := strings.ToUpper(big)
	sum := md5.Sum([]byte(wantSmall))
	for i := range 10 {
		if err := expect(hc, routerURL, "/small.txt?"+ufop, func(b []byte) bool { return string(b) == wantSmall }); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if err := expect(hc, routerURL, "/big.txt?"+ufop, func(b []byte) bool { return string(b) == wantBig }); err != nil {
			t.Fatalf("request %d (input URL): %v", i, err)
		}
	}
	if err := expect(hc, routerURL, "/small.txt?"+ufop+"|qhash/md5", func(b []byte) bool {
		return strings.Contains(string(b), hex.EncodeToString(sum[:]))
	}); err != nil {
		t.Fatal(err)
	}
	if out := qdoractl(t, "state", ufop); strings.Count(out, "RUNNING") < 2 {
		t.Fatalf("state:\n%s", out)
	}

	// Kill one container: Nomad restarts the task, requests keep
	// succeeding meanwhile.
	victim := containersOf(t, pd, allocs[0])[0]
	resp, err := pd.HTTPClient().Post("http://d/v1.41/containers/"+victim.ID+"/kill?signal=KILL", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("kill %s: %s", victim.ID, resp.Status)
	}
	for i := range 20 {
		if err := expect(hc, routerURL, "/small.txt?"+ufop, func(b []byte) bool { return string(b) == wantSmall }); err != nil {
			t.Fatalf("request %d after the kill: %v", i, err)
		}
	}
	platformtest.Eventually(t, wait, "the killed task restarted", func() error {
		a, _, err := nc.Allocations().Info(allocs[0], nil)
		if err != nil {
			return err
		}
		if ts := a.TaskStates[ufop]; ts == nil || ts.Restarts < 1 || ts.State != "running" {
			return fmt.Errorf("task state %+v", ts)
		}
		return nil
	})
	twoHealthy(t, ctx, e.client, nc, cc, ufop, jobID)

	// Container start latency, from Nomad's task events: the driver's
	// "Driver" (image pulled, creating) to "Started".
	for _, id := range allocs {
		a, _, err := nc.Allocations().Info(id, nil)
		if err != nil {
			t.Fatal(err)
		}
		events := a.TaskStates[ufop].Events
		var received, started int64
		for _, e := range events {
			if e.Type == "Received" && received == 0 {
				received = e.Time
			}
			if e.Type == "Started" && started == 0 {
				started = e.Time
			}
		}
		t.Logf("allocation %s: task received -> started (pull, create, start) %v; events %v", id[:8], time.Duration(started-received), eventTypes(events))
	}
}

func eventTypes(es []*nomadapi.TaskEvent) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Type)
	}
	return out
}
