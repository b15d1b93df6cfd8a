package nomadimage_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/cli/platform/platformtest"
	"github.com/doraproject/dora/internal/agenttest"
)

// TestFixedPortPackageOnNomad: a program package whose program listens on
// the fixed port 9100 and ignores PORT and PORT_HTTP (Qiniu's demo, started
// with both unset) runs two instances on one Nomad client when the admin's
// runtime is nomad://…?network=bridge: two raw_exec allocations, each in
// its own network namespace (Nomad's CNI bridge, 9100 mapped to a dynamic
// host port), both passing their Consul checks and serving through the
// router in both input modes.
func TestFixedPortPackageOnNomad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts podman, Consul, Nomad and Redis")
	}
	e := startPlatform(t, "?network=bridge")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const ufop, jobID = "fixedport", "ufop-fixedport-v1"

	e.putObjects(t)
	t0 := e.deployPackage(t, ctx, ufop, demoBinary(t, e.work), "env -u PORT -u PORT_HTTP ./ufopdemo")
	hc := &http.Client{Timeout: 30 * time.Second}
	wantSmall, wantBig := strings.ToUpper(small), strings.ToUpper(big)
	var first time.Duration
	platformtest.Eventually(t, wait, "first 200 through the router", func() error {
		err := expect(hc, e.routerURL, "/small.txt?"+ufop, func(b []byte) bool { return string(b) == wantSmall })
		if err == nil {
			first = time.Since(t0)
		}
		return err
	})
	t.Logf("deploy -> first 200 on Nomad (package, raw_exec, bridge): %v", first)
	allocs := twoHealthy(t, ctx, e.client, e.nc, e.cc, ufop, jobID)

	job, _, err := e.nc.Jobs().Info(jobID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tg := job.TaskGroups[0]; tg.Tasks[0].Driver != "raw_exec" || len(tg.Networks) != 1 || tg.Networks[0].Mode != "bridge" {
		t.Fatalf("job: driver %s, networks %+v; want raw_exec in bridge mode", tg.Tasks[0].Driver, tg.Networks)
	}
	for i := range 10 {
		if err := expect(hc, e.routerURL, "/small.txt?"+ufop, func(b []byte) bool { return string(b) == wantSmall }); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if err := expect(hc, e.routerURL, "/big.txt?"+ufop, func(b []byte) bool { return string(b) == wantBig }); err != nil {
			t.Fatalf("request %d (input URL): %v", i, err)
		}
	}

	// Both programs listen on 9100, each in a network namespace of its own.
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{self: true}
	for _, id := range allocs {
		pid, err := agenttest.PidInDir(filepath.Join(e.nomad.DataDir, "alloc", id, ufop, "local", "app"))
		if err != nil {
			t.Fatal(err)
		}
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			t.Fatal(err)
		}
		if seen[ns] {
			t.Fatalf("allocation %s's program shares network namespace %s", id, ns)
		}
		seen[ns] = true
	}
	// Nomad ships the task's logs on its own schedule.
	for i := 1; i <= 2; i++ {
		platformtest.Eventually(t, wait, fmt.Sprintf("logtail of instance %d shows :9100", i), func() error {
			if out := qdoractl(t, "logtail", ufop, "-index", fmt.Sprint(i)); !strings.Contains(out, "ufopdemo listening on :9100") {
				return fmt.Errorf("instance %d does not listen on 9100:\n%s", i, out)
			}
			return nil
		})
	}
}

// deployPackage registers ufop, builds a program package carrying bin
// (already built: the build only copies it) started with run, releases it
// as v1 (Dora protocol, health at /health) and deploys it with --expect 2;
// it returns when the deploy call returned.
func (e *env) deployPackage(t testing.TB, ctx context.Context, ufop, bin, run string) time.Time {
	t.Helper()
	src := filepath.Join(e.work, "src-"+ufop)
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, filepath.Base(bin)), data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "ufop.yaml"), []byte("image: ubuntu\nbuild_script:\n  - cp -r $RESOURCE/. .\n"+
		"run: "+run+"\nprotocol: dora\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := e.client
	if _, err := c.RegisterUfop(ctx, ufop, "a prebuilt program", dora.ModePrivate); err != nil {
		t.Fatal(err)
	}
	b := platformtest.Build(ctx, t, c, ufop, src)
	if _, err := c.CreateRelease(ctx, client.ReleaseConfig{
		UfopName: ufop, VerStr: "v1", Image: dora.BuildImageName(ufop, b.Number), Flavor: "default",
		HealthCheck: &client.HealthCheckConfig{Path: "/health", Timeout: 1}, Protocol: "dora",
	}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := c.Deploy(ctx, ufop, client.DeployRequest{Version: "v1", Region: "z0", Expect: 2}); err != nil {
		t.Fatal(err)
	}
	return t0
}
