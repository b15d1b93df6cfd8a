package nomad

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/agenttest"
	consulapi "github.com/hashicorp/consul/api"
	"github.com/hashicorp/nomad/api"
)

// waitTimeout bounds each wait for Nomad or Consul to converge.
const waitTimeout = 90 * time.Second

// eventually polls check until it returns nil or the deadline passes.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, waitTimeout, err)
		}
		<-tick.C
	}
}

// buildGrepdArtifact compiles examples/grepd and returns it as a tar.gz.
func buildGrepdArtifact(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "grepd"), "./examples/grepd")
	cmd.Dir = filepath.Join("..", "..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build grepd: %v\n%s", err, out)
	}
	var buf bytes.Buffer
	if err := client.WriteTarGz(context.Background(), &buf, dir); err != nil { // as qdoractl build packs
		t.Fatal(err)
	}
	return buf.Bytes()
}

// artifactServer serves the package like the admin API: only with the
// expected token in the query.
func artifactServer(t *testing.T, tarGz []byte) (url string, fetches func() int) {
	t.Helper()
	var n int
	ch := make(chan int, 1)
	ch <- 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/artifacts/grepd/1.tar.gz" || r.URL.Query().Get("token") != "AK:sig=" {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		v := <-ch
		ch <- v + 1
		w.Header().Set("Content-Type", "application/gzip")
		w.Write(tarGz)
	}))
	t.Cleanup(srv.Close)
	_ = n
	return srv.URL + "/v1/artifacts/grepd/1.tar.gz?e=4102444800&token=AK:sig=", func() int { v := <-ch; ch <- v; return v }
}

func consulClient(t *testing.T, addr string) *consulapi.Client {
	t.Helper()
	cfg := consulapi.DefaultConfig()
	cfg.Address = addr
	c, err := consulapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// passing returns the alloc ids of the passing ufop-grepd v1 instances.
func passing(c *consulapi.Client) (map[string]string, uint64, error) {
	entries, meta, err := c.Health().ServiceMultipleTags("ufop-grepd", []string{"version=v1", "region=z0"}, true, nil)
	if err != nil {
		return nil, 0, err
	}
	out := map[string]string{}
	for _, e := range entries {
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		out[e.Service.Meta["alloc_id"]] = fmt.Sprintf("%s:%d", addr, e.Service.Port)
	}
	return out, meta.LastIndex, nil
}

func grepdSpec(id string, desired int, artifact string) runtime.Spec {
	return runtime.Spec{
		Deployment: dora.Deployment{ID: id, Ufop: "grepd", Version: "v1", Region: "z0", Expect: desired, Desired: desired},
		Release: dora.Release{Ufop: "grepd", Version: "v1", Image: "grepd.v1", Flavor: "default",
			HealthCheck: dora.HealthCheck{Path: "/health", Timeout: 1},
			Env:         []dora.EnvVar{{Key: "GREPD_TEST", Value: "1"}}},
		Owner:   "1366779853",
		Flavor:  dora.Flavor{Name: "default", CPU: 100, MemoryMB: 64},
		Package: &runtime.Package{ArtifactURL: artifact, Run: "./grepd"},
	}
}

// waitHealthy waits until Status says RUNNING with n healthy instances and
// Consul has n passing instances; it returns both views.
func waitHealthy(t *testing.T, ctx context.Context, rt *Runtime, c *consulapi.Client, id string, n int) (runtime.DeploymentStatus, map[string]string) {
	t.Helper()
	var st runtime.DeploymentStatus
	var pass map[string]string
	eventually(t, fmt.Sprintf("%d healthy instances", n), func() error {
		var err error
		if st, err = rt.Status(ctx, id); err != nil {
			return err
		}
		if pass, _, err = passing(c); err != nil {
			return err
		}
		if st.Status != dora.DeployRunning || st.Healthy != n || len(st.Instances) != n || len(pass) != n {
			return fmt.Errorf("status %s %q healthy %d/%d instances, consul passing %d", st.Status, st.Message, st.Healthy, len(st.Instances), len(pass))
		}
		return nil
	})
	return st, pass
}

// grep sends one Dora /handler request to an instance.
func grep(addr, word, body string) (string, error) {
	resp, err := http.Post("http://"+addr+"/handler?cmd=grepd/"+word, "text/plain", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), err
}

func TestGrepdOnNomad(t *testing.T) {
	consul := agenttest.StartConsul(t)
	nomad := agenttest.StartNomad(t, consul)
	cc := consulClient(t, consul.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	artifact, fetches := artifactServer(t, buildGrepdArtifact(t))
	rt, err := New(Config{
		Address: nomad.URL(), Consul: cc,
		Regions:        map[string]RegionConfig{"z0": {NomadRegion: "global", Datacenters: []string{"dc1"}}},
		MinHealthyTime: time.Second, RestartDelay: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	const id = "deploy-grepd-nomad"
	spec := grepdSpec(id, 2, artifact)
	if err := rt.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	st, pass := waitHealthy(t, ctx, rt, cc, id, 2)
	if fetches() < 1 {
		t.Errorf("artifact fetched %d times", fetches())
	}

	// The job as an operator sees it.
	job, _, err := rt.Client().Jobs().Info("ufop-grepd-v1", nil)
	if err != nil {
		t.Fatalf("job ufop-grepd-v1: %v", err)
	}
	for k, want := range map[string]string{"owner": "1366779853", "ufop": "grepd", "version": "v1", "region": "z0", "deployment": id} {
		if job.Meta[k] != want {
			t.Errorf("job meta %s = %q, want %q", k, job.Meta[k], want)
		}
	}
	if d := *job.TaskGroups[0].Tasks[0]; d.Driver != "raw_exec" || d.Resources.CPU == nil || *d.Resources.CPU != 100 || *d.Resources.MemoryMB != 64 {
		t.Errorf("task driver %s cpu %v memory %v", d.Driver, *d.Resources.CPU, *d.Resources.MemoryMB)
	}
	version := *job.Version

	// Instances are Nomad allocations, reachable at their allocated ports.
	allocs, _, err := rt.Client().Jobs().Allocations("ufop-grepd-v1", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	running := map[string]bool{}
	for _, a := range allocs {
		if a.ClientStatus == "running" {
			running[a.ID] = true
		}
	}
	for i, in := range st.Instances {
		if in.Index != i+1 || !running[in.ID] || !in.Healthy || in.State != runtime.StateRunning {
			t.Errorf("instance %d: %+v (running allocs %v)", i+1, in, running)
		}
		if pass[in.ID] != in.Addr {
			t.Errorf("instance %d addr %s, consul says %s", in.Index, in.Addr, pass[in.ID])
		}
		got, err := grep(in.Addr, "foo", "foo 1\nbar\nfoo 2\n")
		if err != nil || got != "foo 1\nfoo 2\n" {
			t.Errorf("grepd at %s: %q %v", in.Addr, got, err)
		}
	}

	// Apply is idempotent: no new job version.
	if err := rt.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if job, _, err := rt.Client().Jobs().Info("ufop-grepd-v1", nil); err != nil || *job.Version != version {
		t.Fatalf("re-apply: version %d → %v (%v)", version, job, err)
	}

	// A runtime with an empty cache (an admin restart) finds the job by its meta.
	rt2, err := New(Config{Address: nomad.URL(), Regions: rt.cfg.Regions})
	if err != nil {
		t.Fatal(err)
	}
	if st2, err := rt2.Status(ctx, id); err != nil || st2.Status != dora.DeployRunning || st2.Healthy != 2 {
		t.Fatalf("fresh runtime status: %+v %v", st2, err)
	}
	if _, err := rt2.Status(ctx, "deploy-unknown"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("unknown deployment: %v, want ErrNotFound", err)
	}

	// Scale to 3 through Nomad's scale API.
	if err := rt.Scale(ctx, id, 3, "test: resize -num 3"); err != nil {
		t.Fatal(err)
	}
	st, pass = waitHealthy(t, ctx, rt, cc, id, 3)
	applied(t, rt, id, 3)
	for i, in := range st.Instances {
		if in.Index != i+1 || in.ID == "" || pass[in.ID] == "" {
			t.Errorf("after scale, instance %d: %+v", i+1, in)
		}
	}

	// Logs through Nomad's log API, stamped with the read time.
	rc, err := rt.Logs(ctx, id, runtime.LogQuery{Index: 1, Stream: "stderr", Tail: 5})
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := io.ReadAll(rc)
	rc.Close()
	lines := strings.Split(strings.TrimSuffix(string(logs), "\n"), "\n")
	if !strings.Contains(string(logs), "listening") || len(lines) > 5 {
		t.Errorf("logs: %q", logs)
	}
	for _, l := range lines {
		stamp, _, _ := strings.Cut(l, " ")
		if _, err := time.Parse(time.RFC3339, stamp); err != nil {
			t.Errorf("log line without timestamp: %q", l)
		}
	}
	if _, err := rt.Logs(ctx, id, runtime.LogQuery{Index: 9}); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("logs of instance 9: %v, want ErrNotFound", err)
	}

	// Kill one instance's process: Consul stops passing it.
	victim := st.Instances[1]
	dir := filepath.Join(nomad.DataDir, "alloc", victim.ID, "grepd", "local", "app")
	pid, err := agenttest.PidInDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Follow Consul with blocking queries so a short critical window is seen.
	_, index, err := passing(cc)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "killed instance no longer passing in Consul", func() error {
		entries, meta, err := cc.Health().ServiceMultipleTags("ufop-grepd", []string{"version=v1"}, true,
			(&consulapi.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second}).WithContext(ctx))
		if err != nil {
			return err
		}
		index = meta.LastIndex
		for _, e := range entries {
			if e.Service.Meta["alloc_id"] == victim.ID {
				return fmt.Errorf("%s still passing", victim.ID)
			}
		}
		return nil
	})
	// Nomad restarts it in place; the survivors served all along.
	for _, in := range []runtime.InstanceStatus{st.Instances[0], st.Instances[2]} {
		if got, err := grep(in.Addr, "bar", "foo\nbar\n"); err != nil || got != "bar\n" {
			t.Errorf("survivor %s: %q %v", in.Addr, got, err)
		}
	}
	st, _ = waitHealthy(t, ctx, rt, cc, id, 3)
	if st.Instances[1].ID != victim.ID || st.Instances[1].Restarts < 1 {
		t.Errorf("killed instance after restart: %+v", st.Instances[1])
	}

	// Stop instance 3: the count drops, 3 shows STOPPED; start it again.
	if err := rt.StopInstances(ctx, id, []int{3}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "instance 3 stopped", func() error {
		st, err := rt.Status(ctx, id)
		if err != nil {
			return err
		}
		if st.Status != dora.DeployRunning || st.Healthy != 2 || len(st.Instances) != 3 || st.Instances[2].State != runtime.StateStopped {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	applied(t, rt, id, 3) // the stopped instance still counts
	if err := rt.StopInstances(ctx, id, []int{4}); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("stop instance 4: %v, want ErrNotFound", err)
	}
	if err := rt.StartInstances(ctx, id, []int{3}); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, ctx, rt, cc, id, 3)

	// Stop everything: the job stops; start brings it back.
	if err := rt.StopInstances(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	if st, err := rt.Status(ctx, id); err != nil || st.Status != dora.DeployStopped {
		t.Fatalf("after stop all: %+v %v", st, err)
	}
	// Scaling a stopped job keeps it stopped, with the count for later.
	if err := rt.Scale(ctx, id, 2, "test: resize while stopped"); err != nil {
		t.Fatal(err)
	}
	if st, err := rt.Status(ctx, id); err != nil || st.Status != dora.DeployStopped {
		t.Fatalf("after scaling a stopped job: %+v %v", st, err)
	}
	applied(t, rt, id, 2)
	if err := rt.StartInstances(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, ctx, rt, cc, id, 2)

	// Remove purges the job.
	if err := rt.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, _, err := rt.Client().Jobs().Info("ufop-grepd-v1", nil); !isNotFound(err) {
		t.Fatalf("job after Remove: %v, want 404", err)
	}
	if _, err := rt.Status(ctx, id); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("status after Remove: %v", err)
	}
	if _, err := rt.Applied(ctx, id); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("applied count after Remove: %v, want ErrNotFound", err)
	}
	eventually(t, "consul forgets the instances", func() error {
		entries, _, err := cc.Health().Service("ufop-grepd", "", false, nil)
		if err != nil || len(entries) != 0 {
			return fmt.Errorf("%d entries %v", len(entries), err)
		}
		return nil
	})
}

// An OCI image needs Docker, which this machine lacks: Apply registers the
// job and Status reports Nomad's placement failure.
func TestOCIImageWithoutDocker(t *testing.T) {
	nomad := agenttest.StartNomad(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rt, err := New(Config{Address: nomad.URL()})
	if err != nil {
		t.Fatal(err)
	}
	spec := grepdSpec("deploy-oci", 1, "")
	spec.Package, spec.OCIImage = nil, "127.0.0.1:5000/1366779853/ufopdemo:v1"
	spec.Deployment.Region = "z1"
	if err := rt.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	job, _, err := rt.Client().Jobs().Info("ufop-grepd-v1-z1", nil)
	if err != nil {
		t.Fatalf("job ufop-grepd-v1-z1: %v", err)
	}
	if d := job.TaskGroups[0].Tasks[0]; d.Driver != "docker" || d.Config["image"] != spec.OCIImage {
		t.Errorf("task %s %v", d.Driver, d.Config)
	}
	eventually(t, "FAILED with Nomad's reason", func() error {
		st, err := rt.Status(ctx, "deploy-oci")
		if err != nil {
			return err
		}
		if st.Status != dora.DeployFailed || !strings.Contains(st.Message, "docker") {
			return fmt.Errorf("%s: %s", st.Status, st.Message)
		}
		t.Logf("status message: %s", st.Message)
		return nil
	})
	if err := rt.Remove(ctx, "deploy-oci"); err != nil {
		t.Fatal(err)
	}
	var ure api.UnexpectedResponseError
	_, _, err = rt.Client().Jobs().Info("ufop-grepd-v1-z1", nil)
	if !errors.As(err, &ure) || ure.StatusCode() != http.StatusNotFound {
		t.Fatalf("after remove: %v", err)
	}
}

// applied checks the count rt's job is set to run for deployment id.
func applied(t *testing.T, rt *Runtime, id string, want int) {
	t.Helper()
	if n, err := rt.Applied(context.Background(), id); err != nil || n != want {
		t.Fatalf("applied count of %s = %d, %v; want %d", id, n, err, want)
	}
}
