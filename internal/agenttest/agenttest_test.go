package agenttest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeTB records Fatalf/Skipf and stops the calling function like the real
// ones do (here by panicking with a marker).
type fakeTB struct {
	testing.TB
	fatal, skip string
}

type stopped struct{}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	panic(stopped{})
}
func (f *fakeTB) Skipf(format string, args ...any) {
	f.skip = fmt.Sprintf(format, args...)
	panic(stopped{})
}

func callFind(t *testing.T, f *fakeTB) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(stopped); !ok {
				panic(r)
			}
		}
	}()
	findBinary(f, "dora-no-such-binary", "DORA_NO_SUCH_BINARY", true)
	t.Fatal("findBinary returned for a missing binary")
}

func TestMissingBinaryFailsUnlessSkipRequested(t *testing.T) {
	cases := []struct {
		skipEnv   string
		wantFatal bool
	}{
		{"", true},
		{"0", true},
		{"yes", true}, // only exactly "1" skips
		{"1", false},
	}
	for _, tc := range cases {
		t.Run("DORA_SKIP_AGENTS="+tc.skipEnv, func(t *testing.T) {
			t.Setenv(SkipEnv, tc.skipEnv)
			t.Setenv("DORA_NO_SUCH_BINARY", "/nonexistent/dora-no-such-binary")
			f := &fakeTB{TB: t}
			callFind(t, f)
			if tc.wantFatal {
				if f.fatal == "" || f.skip != "" {
					t.Fatalf("fatal %q skip %q; want a failure", f.fatal, f.skip)
				}
				if !strings.Contains(f.fatal, "dora-no-such-binary") || !strings.Contains(f.fatal, "/nonexistent/") {
					t.Errorf("failure message does not say what was tried: %q", f.fatal)
				}
			} else if f.skip == "" || f.fatal != "" {
				t.Fatalf("fatal %q skip %q; want a skip", f.fatal, f.skip)
			}
		})
	}
}

func TestBinaryFromEnv(t *testing.T) {
	t.Setenv("DORA_TEST_SH", "/bin/sh")
	if got := findBinary(t, "dora-no-such-binary", "DORA_TEST_SH", true); got != "/bin/sh" {
		t.Fatalf("findBinary = %q, want the env value", got)
	}
}

func get(url string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestConsulStopStart(t *testing.T) {
	t.Parallel()
	c := StartConsul(t)
	if !strings.HasPrefix(c.Addr, "127.0.0.1:") {
		t.Fatalf("Addr %q not on loopback", c.Addr)
	}
	if code, err := get(c.URL() + "/v1/kv/x"); err != nil || code != http.StatusNotFound {
		t.Fatalf("GET kv: %d %v, want 404", code, err)
	}
	c.Stop()
	if c.Running() {
		t.Fatal("Running after Stop")
	}
	if _, err := get(c.URL() + "/v1/status/leader"); err == nil {
		t.Fatal("agent still answers after Stop")
	}
	c.Stop() // harmless
	c.Start()
	if code, err := get(c.URL() + "/v1/status/leader"); err != nil || code != http.StatusOK {
		t.Fatalf("after Start: %d %v", code, err)
	}
}

func TestRedisStopStart(t *testing.T) {
	t.Parallel()
	r := StartRedis(t)
	ctx := context.Background()
	if err := redisReady(ctx, r.Addr); err != nil {
		t.Fatal(err)
	}
	r.Stop()
	if err := redisReady(ctx, r.Addr); err == nil {
		t.Fatal("redis answers after Stop")
	}
	r.Start()
	if err := redisReady(ctx, r.Addr); err != nil {
		t.Fatalf("after Start: %v", err)
	}
}

func TestNomadWithConsul(t *testing.T) {
	t.Parallel()
	c := StartConsul(t)
	n := StartNomad(t, c)
	if err := nomadReady(context.Background(), n.Addr, []string{"raw_exec"}); err != nil {
		t.Fatal(err)
	}
	// Nomad registered itself in Consul.
	deadline := time.Now().Add(30 * time.Second)
	for {
		body, err := httpGet(context.Background(), c.URL()+"/v1/catalog/services")
		if err == nil && strings.Contains(body, `"nomad"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nomad not registered in consul: %s %v", body, err)
		}
		time.Sleep(200 * time.Millisecond) // poll interval
	}
}

func TestPidInDirAndBelow(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "app")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	cmd.Dir = sub
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	want := cmd.Process.Pid
	tests := []struct {
		name    string
		find    func(string) (int, error)
		dir     string
		wantPid int // 0: an error
	}{
		{"in the exact dir", PidInDir, sub, want},
		{"below its parent", PidBelow, dir, want},
		{"not in the parent itself", PidInDir, dir, 0},
		{"not below itself", PidBelow, sub, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pid, err := tt.find(tt.dir)
			if tt.wantPid == 0 {
				if err == nil {
					t.Fatalf("found pid %d, want an error", pid)
				}
				return
			}
			if err != nil || pid != tt.wantPid {
				t.Fatalf("= %d, %v; want %d", pid, err, tt.wantPid)
			}
		})
	}
}

// TestNomadDockerOnPodman: the docker driver of a Nomad agent configured
// with a podman service's endpoint is detected and healthy.
func TestNomadDockerOnPodman(t *testing.T) {
	t.Parallel()
	pd := StartPodman(t, PodmanOptions{})
	if err := podmanReady(context.Background(), pd.Socket); err != nil {
		t.Fatal(err)
	}
	n := StartNomadWith(t, nil, NomadOptions{DockerEndpoint: pd.Endpoint})
	if err := nomadReady(context.Background(), n.Addr, []string{"raw_exec", "docker"}); err != nil {
		t.Fatal(err)
	}
	// A Nomad agent pointed at a socket where nothing listens has no
	// healthy docker driver.
	m := StartNomad(t, nil)
	if err := nomadReady(context.Background(), m.Addr, []string{"docker"}); err == nil {
		t.Fatal("docker driver ready without a Docker API")
	}
}

// TestFreePortsBelowEphemeralRange: agents' ports come from below the
// kernel's ephemeral range (where no bind to port 0 or outgoing
// connection can take them), distinct, and free for TCP and UDP.
func TestFreePortsBelowEphemeralRange(t *testing.T) {
	// (A host whose ephemeral range reaches below agentPortHigh gets the
	// kernel's ports: only their being distinct and free is checked.)
	inRange := ephemeralLow() >= agentPortHigh
	ports := freePorts(t, 16)
	seen := map[int]bool{}
	for _, p := range ports {
		if inRange && (p < agentPortLow || p >= agentPortHigh) || seen[p] {
			t.Fatalf("ports %v: want distinct ports in %d-%d", ports, agentPortLow, agentPortHigh-1)
		}
		seen[p] = true
		addr := "127.0.0.1:" + strconv.Itoa(p)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("port %d is not free for TCP: %v", p, err)
		}
		ln.Close()
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatalf("port %d is not free for UDP: %v", p, err)
		}
		pc.Close()
	}
}
