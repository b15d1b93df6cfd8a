package agenttest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ConsulMaxValueBytes is the kv_max_value_size the test agent runs with,
// above Consul's 512 KiB default, so that the store contract's 1 MiB
// values fit. Production agents storing such values need the same setting.
const ConsulMaxValueBytes = 4 << 20

// Consul is a running Consul dev agent (server and client in one process)
// on loopback.
//
// -dev keeps all state in memory: Stop followed by Start (an outage) comes
// back with an EMPTY KV store and a new Raft index history, even though the
// agent reuses the same ports and data dir (which only holds its node id).
// Clients must therefore cope with indexes going backwards.
type Consul struct {
	// Addr is the HTTP API address, "127.0.0.1:<port>".
	Addr string
	// Ports of the agent's listeners.
	HTTPPort, GRPCPort, SerfLANPort, SerfWANPort, ServerPort int
	// DataDir is the agent's -data-dir inside the test's temp dir.
	DataDir string
	// LogPath is the file holding the agent's output across restarts.
	LogPath string

	outage
}

// StartConsul starts a Consul dev agent and waits until it has elected
// itself leader. It is stopped when the test ends.
func StartConsul(t testing.TB) *Consul {
	t.Helper()
	bin := findBinary(t, "consul", "DORA_CONSUL", true)
	dir := t.TempDir()
	ports := freePorts(t, 5)
	c := &Consul{
		HTTPPort: ports[0], GRPCPort: ports[1], SerfLANPort: ports[2], SerfWANPort: ports[3], ServerPort: ports[4],
		DataDir: filepath.Join(dir, "data"),
		LogPath: filepath.Join(dir, "consul.log"),
	}
	c.Addr = fmt.Sprintf("127.0.0.1:%d", c.HTTPPort)
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		t.Fatalf("agenttest: consul data dir: %v", err)
	}
	c.p = &process{
		t:    t,
		name: "consul " + c.Addr,
		bin:  bin,
		args: []string{
			"agent", "-dev",
			"-bind", "127.0.0.1", "-client", "127.0.0.1",
			"-http-port", itoa(c.HTTPPort), "-dns-port", "-1", "-grpc-port", itoa(c.GRPCPort),
			"-serf-lan-port", itoa(c.SerfLANPort), "-serf-wan-port", itoa(c.SerfWANPort),
			"-server-port", itoa(c.ServerPort),
			"-data-dir", c.DataDir,
			"-node", fmt.Sprintf("dora-test-%d", c.HTTPPort),
			// -dev would open the gRPC TLS port 8503: one agent per host.
			"-hcl", "ports { grpc_tls = -1 }",
			"-hcl", fmt.Sprintf("limits { kv_max_value_size = %d }", ConsulMaxValueBytes),
			"-log-level", "info",
		},
		env:     []string{"CHECKPOINT_DISABLE=1"},
		dir:     dir,
		logPath: c.LogPath,
		ready:   func(ctx context.Context) error { return consulReady(ctx, c.Addr) },
		timeout: ConsulReadyTimeout,
	}
	c.p.register()
	return c
}

// URL returns the HTTP API base URL, "http://127.0.0.1:<port>".
func (c *Consul) URL() string { return "http://" + c.Addr }

// consulReady: the agent answers and knows a Raft leader.
func consulReady(ctx context.Context, addr string) error {
	body, err := httpGet(ctx, "http://"+addr+"/v1/status/leader")
	if err != nil {
		return err
	}
	if leader := strings.Trim(strings.TrimSpace(body), `"`); leader == "" {
		return fmt.Errorf("no leader: %w", errNotReady)
	}
	return nil
}

// httpGet returns the body of a 200 reply.
func httpGet(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b), nil
}
