package agenttest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PodmanReadyTimeout bounds the wait for podman's API socket.
const PodmanReadyTimeout = 60 * time.Second

// Podman is a running `podman system service`: podman's Docker-compatible
// (and libpod) API on a unix socket in the test's temp dir, which Nomad's
// docker driver uses as its Docker engine (StartNomadWith,
// NomadOptions.DockerEndpoint).
//
// It runs rootful with the runc OCI runtime (crun refuses this kind of
// host's hybrid cgroup layout) and with its own containers.conf and
// registries.conf (CONTAINERS_CONF, CONTAINERS_REGISTRIES_CONF), never the
// machine's: default ulimits no higher than this process's hard limits
// (podman otherwise asks for nofile=1048576, which a host without
// CAP_SYS_RESOURCE to spare refuses) and the given plain-HTTP registries.
// Containers and images live in the machine's podman store.
type Podman struct {
	// Socket is the API socket's path; Endpoint is "unix://" + Socket.
	Socket, Endpoint string
	// Dir holds containers.conf, registries.conf and the service's log.
	Dir string

	p *process
}

// PodmanOptions configure StartPodman.
type PodmanOptions struct {
	// InsecureRegistries are host:port registries pulled over plain HTTP
	// (a test's Dora registry on loopback).
	InsecureRegistries []string
}

// StartPodman starts `podman --runtime runc system service --time=0` on a
// socket in a temporary directory and waits until its API answers
// /_ping. A missing podman or runc fails the test (scripts/install-deps.sh
// installs both). The service is stopped when the test ends.
func StartPodman(t testing.TB, opts PodmanOptions) *Podman {
	t.Helper()
	bin := findBinary(t, "podman", "DORA_PODMAN", false)
	runc := findBinary(t, "runc", "DORA_RUNC", false)
	// A short directory: a unix socket path is limited to 108 bytes.
	dir, err := os.MkdirTemp("", "dora-podman-")
	if err != nil {
		t.Fatalf("agenttest: podman dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("agenttest: nofile limit: %v", err)
	}
	nofile := min(lim.Max, 65536)
	conf := fmt.Sprintf(`# Written by agenttest for one test's podman service.
[containers]
default_ulimits = ["nofile=%d:%d", "nproc=32768:32768"]

[engine]
runtime = "runc"

[engine.runtimes]
runc = [%q]
`, nofile, nofile, runc)
	reg := "unqualified-search-registries = []\n"
	for _, r := range opts.InsecureRegistries {
		reg += fmt.Sprintf("\n[[registry]]\nlocation = %q\ninsecure = true\n", r)
	}
	files := map[string]string{"containers.conf": conf, "registries.conf": reg}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatalf("agenttest: podman %s: %v", name, err)
		}
	}
	pd := &Podman{Socket: filepath.Join(dir, "podman.sock"), Dir: dir}
	pd.Endpoint = "unix://" + pd.Socket
	pd.p = &process{
		t:    t,
		name: "podman service " + pd.Socket,
		bin:  bin,
		args: []string{"--runtime", "runc", "system", "service", "--time=0", pd.Endpoint},
		env: []string{
			"CONTAINERS_CONF=" + filepath.Join(dir, "containers.conf"),
			"CONTAINERS_REGISTRIES_CONF=" + filepath.Join(dir, "registries.conf"),
		},
		dir:     dir,
		logPath: filepath.Join(dir, "podman.log"),
		ready:   func(ctx context.Context) error { return podmanReady(ctx, pd.Socket) },
		timeout: PodmanReadyTimeout,
	}
	pd.p.register()
	return pd
}

// HTTPClient returns a client whose requests go to the API socket (any
// host in the URL, e.g. http://d/v1.41/containers/json).
func (pd *Podman) HTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", pd.Socket)
		},
	}}
}

// Command returns a podman CLI command using this service's configuration
// (runc, the ulimits, the registries), for a test's direct look at the
// store (podman ps, inspect).
func (pd *Podman) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, pd.p.bin, append([]string{"--runtime", "runc"}, args...)...)
	cmd.Env = append(os.Environ(), pd.p.env...)
	return cmd
}

// podmanReady: the Docker-compatible API answers GET /_ping with OK.
func podmanReady(ctx context.Context, socket string) error {
	if _, err := os.Stat(socket); err != nil {
		return fmt.Errorf("socket: %w", errNotReady)
	}
	hc := (&Podman{Socket: socket}).HTTPClient()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://d/_ping", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%v: %w", err, errNotReady)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "OK" {
		return fmt.Errorf("/_ping: %s %q: %w", resp.Status, b, errNotReady)
	}
	return nil
}
