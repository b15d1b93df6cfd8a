package agenttest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Nomad is a running Nomad dev agent (server and client in one process) on
// loopback, with the raw_exec driver enabled and Consul integration
// pointing at a test Consul agent.
//
// -dev keeps the server state in memory and destroys its allocations on
// shutdown: Stop followed by Start comes back with no jobs. Some drivers
// (exec) need root; the test machines run as root.
type Nomad struct {
	// Addr is the HTTP API address, "127.0.0.1:<port>".
	Addr string
	// Ports of the agent's listeners.
	HTTPPort, RPCPort, SerfPort int
	// DataDir holds the client's allocation directories. It lives outside
	// the test's temp dir (drivers may leave mounts in it) and is removed
	// on a best-effort basis at the end.
	DataDir string
	// ConfigPath is the agent's -config file.
	ConfigPath string
	// LogPath is the file holding the agent's output across restarts.
	LogPath string
	// Consul is the agent Nomad registers services with (nil: none).
	Consul *Consul

	outage
}

// NomadOptions configure StartNomadWith.
type NomadOptions struct {
	// DockerEndpoint, when set, enables the docker task driver on that
	// Docker API (e.g. a StartPodman service's Endpoint) and makes
	// readiness wait for the driver to be healthy.
	DockerEndpoint string
	// CNIPath, when set, is the client's cni_path (the CNI plugins that
	// bridge networking runs, see CNIPath) and readiness waits for the
	// client to have fingerprinted the bridge plugin.
	CNIPath string
}

// CNIPath returns the directory holding the CNI plugins Nomad's bridge
// networking needs (bridge, firewall, host-local, loopback, portmap):
// $DORA_CNI_PATH, /opt/cni/bin, then /usr/lib/cni (Debian's
// containernetworking-plugins). It fails the test when none has them.
func CNIPath(t testing.TB) string {
	t.Helper()
	dirs := []string{"/opt/cni/bin", "/usr/lib/cni"}
	if d := os.Getenv("DORA_CNI_PATH"); d != "" {
		dirs = append([]string{d}, dirs...)
	}
	for _, d := range dirs {
		ok := true
		for _, p := range []string{"bridge", "firewall", "host-local", "loopback", "portmap"} {
			ok = ok && isExecutable(filepath.Join(d, p))
		}
		if ok {
			return d
		}
	}
	msg := fmt.Sprintf("agenttest: no CNI plugins (bridge, firewall, host-local, loopback, portmap) in %v; install containernetworking-plugins (scripts/install-deps.sh)", dirs)
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("%s; skipping because %s=1", msg, SkipEnv)
	}
	t.Fatal(msg)
	return ""
}

// StartNomad starts a Nomad dev agent and waits until its client node is
// ready with a healthy raw_exec driver. consul may be nil: Nomad then
// points at a closed port and registers nothing. The agent is stopped when
// the test ends.
func StartNomad(t testing.TB, consul *Consul) *Nomad {
	t.Helper()
	return StartNomadWith(t, consul, NomadOptions{})
}

// StartNomadWith is StartNomad with options.
func StartNomadWith(t testing.TB, consul *Consul, opts NomadOptions) *Nomad {
	t.Helper()
	bin := findBinary(t, "nomad", "DORA_NOMAD", true)
	dir := t.TempDir()
	dataDir, err := os.MkdirTemp("", "dora-nomad-")
	if err != nil {
		t.Fatalf("agenttest: nomad data dir: %v", err)
	}
	t.Cleanup(func() {
		// Runs after the agent stopped (cleanups run last-in first-out).
		if err := os.RemoveAll(dataDir); err != nil {
			t.Logf("agenttest: leaving nomad data dir %s: %v", dataDir, err)
		}
	})
	ports := freePorts(t, 3)
	n := &Nomad{
		HTTPPort: ports[0], RPCPort: ports[1], SerfPort: ports[2],
		DataDir:    dataDir,
		ConfigPath: filepath.Join(dir, "nomad.hcl"),
		LogPath:    filepath.Join(dir, "nomad.log"),
		Consul:     consul,
	}
	n.Addr = fmt.Sprintf("127.0.0.1:%d", n.HTTPPort)
	consulBlock := `consul {
  address          = "127.0.0.1:1"
  auto_advertise   = false
  server_auto_join = false
  client_auto_join = false
}`
	if consul != nil {
		consulBlock = fmt.Sprintf("consul {\n  address = %q\n}", consul.Addr)
	}
	dockerBlock := ""
	drivers := []string{"raw_exec"}
	if opts.DockerEndpoint != "" {
		// Images stay in the store after a task (no image GC): tests share
		// the machine's podman store and re-use their images.
		dockerBlock = fmt.Sprintf(`plugin "docker" {
  config {
    endpoint = %q
    gc {
      image = false
    }
  }
}
`, opts.DockerEndpoint)
		drivers = append(drivers, "docker")
	}
	clientBlock := ""
	if opts.CNIPath != "" {
		clientBlock = fmt.Sprintf("client {\n  cni_path = %q\n}\n", opts.CNIPath)
	}
	cfg := fmt.Sprintf(`data_dir = %q
ports {
  http = %d
  rpc  = %d
  serf = %d
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
%s
%s%s`, dataDir, n.HTTPPort, n.RPCPort, n.SerfPort, consulBlock, dockerBlock, clientBlock)
	if err := os.WriteFile(n.ConfigPath, []byte(cfg), 0o600); err != nil {
		t.Fatalf("agenttest: nomad config: %v", err)
	}
	n.p = &process{
		t:    t,
		name: "nomad " + n.Addr,
		bin:  bin,
		args: []string{
			"agent", "-dev",
			"-bind", "127.0.0.1", "-network-interface", "lo",
			"-config", n.ConfigPath,
			"-log-level", "INFO",
		},
		env:     []string{"CHECKPOINT_DISABLE=1"},
		dir:     dir,
		logPath: n.LogPath,
		ready: func(ctx context.Context) error {
			if err := nomadReady(ctx, n.Addr, drivers); err != nil {
				return err
			}
			if opts.CNIPath != "" {
				return nomadHasCNI(ctx, n.Addr)
			}
			return nil
		},
		timeout: NomadReadyTimeout,
	}
	n.p.register()
	return n
}

// URL returns the HTTP API base URL, "http://127.0.0.1:<port>".
func (n *Nomad) URL() string { return "http://" + n.Addr }

// nomadReady: a leader exists and a client node is ready with healthy
// drivers (raw_exec, and docker when configured).
func nomadReady(ctx context.Context, addr string, drivers []string) error {
	leader, err := httpGet(ctx, "http://"+addr+"/v1/status/leader")
	if err != nil {
		return err
	}
	if leader == "" || leader == `""` {
		return fmt.Errorf("no leader: %w", errNotReady)
	}
	body, err := httpGet(ctx, "http://"+addr+"/v1/nodes")
	if err != nil {
		return err
	}
	var nodes []struct {
		Status  string
		Drivers map[string]struct {
			Detected, Healthy bool
			HealthDescription string
		}
	}
	if err := json.Unmarshal([]byte(body), &nodes); err != nil {
		return fmt.Errorf("decode /v1/nodes: %w", err)
	}
	why := fmt.Sprintf("%d nodes", len(nodes))
nodes:
	for _, node := range nodes {
		if node.Status != "ready" {
			why = "node " + node.Status
			continue
		}
		for _, name := range drivers {
			d, ok := node.Drivers[name]
			if !ok || !d.Detected || !d.Healthy {
				why = fmt.Sprintf("driver %s: detected=%v healthy=%v %q", name, d.Detected, d.Healthy, d.HealthDescription)
				continue nodes
			}
		}
		return nil
	}
	return fmt.Errorf("no ready client node with healthy %v (%s): %w", drivers, why, errNotReady)
}

// nomadHasCNI: the client node fingerprinted the CNI bridge plugin.
func nomadHasCNI(ctx context.Context, addr string) error {
	body, err := httpGet(ctx, "http://"+addr+"/v1/nodes?resources=true")
	if err != nil {
		return err
	}
	var stubs []struct{ ID string }
	if err := json.Unmarshal([]byte(body), &stubs); err != nil {
		return fmt.Errorf("decode /v1/nodes: %w", err)
	}
	for _, s := range stubs {
		body, err := httpGet(ctx, "http://"+addr+"/v1/node/"+s.ID)
		if err != nil {
			return err
		}
		var node struct{ Attributes map[string]string }
		if err := json.Unmarshal([]byte(body), &node); err != nil {
			return fmt.Errorf("decode node: %w", err)
		}
		if node.Attributes["plugins.cni.version.bridge"] != "" {
			return nil
		}
	}
	return fmt.Errorf("no client node has the CNI bridge plugin: %w", errNotReady)
}
