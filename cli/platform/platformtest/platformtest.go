// Package platformtest holds the set-up the production-role tests share
// (cli/platform, cli/platform/nomadimage, cli/multihost, cli/e2e, cli/dorad):
// polling with a bound, the repository root, a directory the run-as user can
// reach, a Nomad client whose jobs are purged when the test ends, reading a
// metric, a signed pfop, a request through a router with a bucket's Host,
// and a build, release and deployment of a program through the admin
// client. The agents themselves come from internal/agenttest.
//
// It imports admin/client (so it cannot live under internal/, which the
// layout test keeps free of admin/) and not cli/platform (so that package's
// own tests can use it).
package platformtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/auth"
)

// Eventually calls check every 200 ms until it returns nil and fails the
// test with check's last error once limit has passed. limit bounds a
// failure; a healthy run is much quicker.
func Eventually(t testing.TB, limit time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, limit, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Logger is the roles' logger in tests: silent, or debug lines on stderr
// when $PROD_LOG is set (to read what the roles did in a failed run).
func Logger() *slog.Logger {
	if os.Getenv("PROD_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// RepoRoot is the repository's root directory (where examples/ and cli/
// are), whichever package's test asks.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("platformtest: no caller info")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// ReachableTempDir is a temporary directory the run-as user (nobody, when
// the tests run as root) can traverse to: t.TempDir and its parent are
// 0700, this one and its parent 0711.
func ReachableTempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// BuildDorad builds cli/dorad into a fresh temporary directory and
// returns the binary's path, for tests that run the roles as processes.
func BuildDorad(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "dorad")
	cmd := exec.Command("go", "build", "-o", bin, "./cli/dorad")
	cmd.Dir = RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build dorad: %v\n%s", err, out)
	}
	return bin
}

// NomadClient returns an API client of the test agent and arranges for
// every job to be purged when the test ends. Register it after the
// agents and before the roles: cleanups run last-in first-out, so the
// purge runs after the roles closed and before Nomad stops.
func NomadClient(t testing.TB, nomad *agenttest.Nomad) *nomadapi.Client {
	t.Helper()
	cfg := nomadapi.DefaultConfig()
	cfg.Address = nomad.URL()
	nc, err := nomadapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { PurgeJobs(t, nc) })
	return nc
}

// PurgeJobs deregisters every Nomad job and waits (bounded) for their
// allocations to stop, so that no instance outlives the test.
func PurgeJobs(t testing.TB, nc *nomadapi.Client) {
	jobs, _, err := nc.Jobs().List(nil)
	if err != nil {
		t.Logf("cleanup: list nomad jobs: %v", err)
		return
	}
	for _, j := range jobs {
		if _, _, err := nc.Jobs().Deregister(j.ID, true, nil); err != nil {
			t.Logf("cleanup: deregister %s: %v", j.ID, err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		allocs, _, err := nc.Allocations().List(nil)
		if err != nil {
			return
		}
		running := 0
		for _, a := range allocs {
			if a.ClientStatus == nomadapi.AllocClientStatusRunning || a.ClientStatus == nomadapi.AllocClientStatusPending {
				running++
			}
		}
		if running == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("cleanup: allocations still running after purge")
}

// Metric reads one unlabelled series of base's /metrics.
func Metric(hc *http.Client, base, name string) (float64, error) {
	return MetricMatching(hc, base, name, regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(name)+` (\S+)$`))
}

// MetricMatching reads the value of base's /metrics that re's first group
// captures; what names the series in the error when re matches nothing.
func MetricMatching(hc *http.Client, base, what string, re *regexp.Regexp) (float64, error) {
	resp, err := hc.Get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	m := re.FindSubmatch(b)
	if m == nil {
		return 0, fmt.Errorf("%s/metrics has no %s", base, what)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

// SignedPfop POSTs a pfop form to base+"/pfop/" signed as Qiniu's SDK
// signs (Authorization: Qiniu with X-Qiniu-Date) and returns the status
// and body. A reply without X-Reqid fails the test.
func SignedPfop(t testing.TB, base, ak, sk string, form url.Values) (int, []byte) {
	t.Helper()
	body := form.Encode()
	req, err := http.NewRequest(http.MethodPost, base+"/pfop/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	auth.SignRequest(req, ak, sk, []byte(body), time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("X-Reqid") == "" {
		t.Fatalf("pfop reply without X-Reqid: %s %s", resp.Status, b)
	}
	return resp.StatusCode, b
}

// Get sends GET pathQuery to a router with bucket's Host
// (bucket.localhost) and returns the status and body.
func Get(hc *http.Client, routerURL, bucket, pathQuery string) (int, []byte, error) {
	return GetContext(context.Background(), hc, routerURL, bucket, pathQuery)
}

// GetContext is Get bounded by ctx.
func GetContext(ctx context.Context, hc *http.Client, routerURL, bucket, pathQuery string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, routerURL+pathQuery, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Host = bucket + ".localhost"
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Build builds dir as ufop's next build through the admin and waits for it
// to succeed, failing the test (with the build's log) otherwise.
func Build(ctx context.Context, t testing.TB, c *client.Client, ufop, dir string) dora.Build {
	t.Helper()
	b, err := c.Build(ctx, ufop, dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, err = c.WaitBuild(ctx, ufop, b.Number, 200*time.Millisecond, nil); err != nil || b.Status != dora.BuildSuccess {
		var blog []byte
		if rc, _ := c.BuildLog(ctx, ufop, b.Number); rc != nil {
			blog, _ = io.ReadAll(rc)
			rc.Close()
		}
		t.Fatalf("build %s: %+v %v\n%s", ufop, b, err, blog)
	}
	return b
}

// ReleaseBuild releases build b of ufop as version v1 (default flavor,
// health check GET /health with a 1 s timeout) with the given protocol
// ("" for the server's default) and deploys it with req (its Version is
// set to v1).
func ReleaseBuild(ctx context.Context, t testing.TB, c *client.Client, ufop string, b dora.Build, protocol string, req client.DeployRequest) dora.Deployment {
	t.Helper()
	if _, err := c.CreateRelease(ctx, client.ReleaseConfig{
		UfopName: ufop, VerStr: "v1", Image: dora.BuildImageName(ufop, b.Number), Flavor: "default", Protocol: protocol,
		HealthCheck: &client.HealthCheckConfig{Path: "/health", Timeout: 1},
	}); err != nil {
		t.Fatal(err)
	}
	req.Version = "v1"
	dep, err := c.Deploy(ctx, ufop, req)
	if err != nil {
		t.Fatal(err)
	}
	return dep
}

// OneLeads waits (up to limit) until exactly one of a and b leads and
// returns it and the other. Both leading at once fails the test at once;
// an error from leads means "cannot tell yet" and is polled again.
func OneLeads[T any](t testing.TB, limit time.Duration, what string, a, b T, leads func(T) (bool, error)) (leader, other T) {
	t.Helper()
	Eventually(t, limit, what, func() error {
		la, errA := leads(a)
		lb, errB := leads(b)
		switch {
		case errA != nil || errB != nil:
			return fmt.Errorf("%v %v", errA, errB)
		case la && lb:
			t.Fatalf("%s: both lead at once", what)
		case la:
			leader, other = a, b
		case lb:
			leader, other = b, a
		default:
			return fmt.Errorf("no leader yet")
		}
		return nil
	})
	return leader, other
}

// FreeAddr is a loopback address, "127.0.0.1:<port>", whose port was free
// a moment ago: for a role or process the test starts.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(agenttest.FreePort(t))
}

// CloseAtEnd closes the role (or anything else) c when the test ends; an
// error from Close fails the test, naming what.
func CloseAtEnd(t testing.TB, what string, c interface{ Close() error }) {
	t.Helper()
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("%s close: %v", what, err)
		}
	})
}

// Healthy returns nil when GET base+"/healthz" answers 200 and an error
// naming the status otherwise: a check for Eventually.
func Healthy(hc *http.Client, base string) error {
	resp, err := hc.Get(base + "/healthz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/healthz: %s", base, resp.Status)
	}
	return nil
}
