// Package agenttest starts real Consul, Nomad and Redis agents for tests:
// each on loopback, on free ports, in its own temporary directory, stopped
// by t.Cleanup. Tests of the production backends run against these agents,
// never against mocks.
//
// Binaries: Consul and Nomad are looked up in $DORA_CONSUL / $DORA_NOMAD,
// then in $HOME/.cache/dora-deps/bin (where scripts/install-deps.sh builds
// them), then on PATH; redis-server in $DORA_REDIS_SERVER, then on PATH.
// A missing binary FAILS the test (t.Fatalf) so CI cannot go green without
// the real backends; set DORA_SKIP_AGENTS=1 to skip such tests instead on a
// machine without them.
//
// Every agent writes its output to a log file in the test's temp dir; the
// log's tail is printed when the agent fails to start or the test fails.
// Readiness is awaited by polling the agent's API until a deadline, never
// by sleeping a fixed time.
package agenttest

import (
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Deadlines for an agent to become ready and to exit after a stop signal.
// They bound failures; a healthy agent is ready much sooner.
const (
	ConsulReadyTimeout = 60 * time.Second
	NomadReadyTimeout  = 120 * time.Second
	RedisReadyTimeout  = 20 * time.Second
	StopTimeout        = 20 * time.Second
)

// SkipEnv is the environment variable that turns a missing binary into a
// skip instead of a failure.
const SkipEnv = "DORA_SKIP_AGENTS"

// logTailBytes is how much of an agent's log is printed on failure.
const logTailBytes = 6 << 10

// findBinary locates name: $env, then ~/.cache/dora-deps/bin/name (when
// depsCache), then PATH. It fails or skips the test when it is missing.
func findBinary(t testing.TB, name, env string, depsCache bool) string {
	t.Helper()
	var tried []string
	if env != "" {
		if p := os.Getenv(env); p != "" {
			if isExecutable(p) {
				return p
			}
			tried = append(tried, fmt.Sprintf("$%s=%s (not an executable file)", env, p))
		} else {
			tried = append(tried, "$"+env+" (unset)")
		}
	}
	if depsCache {
		if home, err := os.UserHomeDir(); err == nil {
			p := filepath.Join(home, ".cache", "dora-deps", "bin", name)
			if isExecutable(p) {
				return p
			}
			tried = append(tried, p)
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	tried = append(tried, "PATH")
	msg := fmt.Sprintf("agenttest: %s binary not found (tried %v); run scripts/install-deps.sh", name, tried)
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("%s; skipping because %s=1", msg, SkipEnv)
	}
	t.Fatalf("%s, or set %s=1 to skip tests that need real agents", msg, SkipEnv)
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

// FreePort returns a port on 127.0.0.1 that was free (TCP and UDP) a
// moment ago, for an agent, role or process the test starts and that
// binds it itself. See freePorts for where it comes from.
func FreePort(t testing.TB) int {
	t.Helper()
	return freePorts(t, 1)[0]
}

// Where ports for agents are picked: [agentPortLow, agentPortHigh), below
// Linux's ephemeral range (ip_local_port_range, 32768-60999 by default)
// and below Nomad's dynamic ports (20000-32000). A port the kernel picked
// (bind to port 0, as every httptest server does, or the source port of
// an outgoing connection, TCP or UDP) can be handed to anyone on the host
// again as soon as it is closed, and on a busy machine one was: Consul
// failed with "listen tcp 127.0.0.1:35499: bind: address already in use"
// for the gRPC port agenttest had picked a moment earlier. A port from this
// range is only ever taken by a process that asks for it by number.
const (
	agentPortLow  = 10000
	agentPortHigh = 20000
)

// freePorts returns n distinct ports on 127.0.0.1, free for TCP and UDP
// (serf listens on both) when checked (all listeners held until the end,
// so none is returned twice), picked at random in [agentPortLow,
// agentPortHigh) (or by the kernel on a host whose ephemeral range
// reaches below agentPortHigh).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	ports := make([]int, 0, n)
	if ephemeralLow() < agentPortHigh {
		for range n {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatalf("agenttest: find a free port: %v", err)
			}
			closers = append(closers, ln)
			ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
		}
		return ports
	}
	for tries := 0; len(ports) < n; tries++ {
		if tries == 10000 {
			t.Fatalf("agenttest: no free port in %d-%d after %d tries", agentPortLow, agentPortHigh-1, tries)
		}
		port := agentPortLow + mrand.IntN(agentPortHigh-agentPortLow)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			ln.Close()
			continue
		}
		closers = append(closers, ln, pc)
		ports = append(ports, port)
	}
	return ports
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return low
}

// process is one agent's OS process, restartable with the same arguments.
type process struct {
	t       testing.TB
	name    string
	bin     string
	args    []string
	env     []string
	dir     string
	logPath string
	ready   func(ctx context.Context) error // nil error: ready
	timeout time.Duration

	mu  sync.Mutex // guards cur
	cur *run
}

// run is one execution of the process.
type run struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd exited
	err  error         // cmd.Wait's result, readable after done
}

// start launches the process and waits for it to be ready; it fails the
// test (with the log's tail) otherwise.
func (p *process) start() {
	p.t.Helper()
	p.mu.Lock()
	if p.cur != nil {
		p.mu.Unlock()
		p.t.Fatalf("agenttest: %s already running", p.name)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.mu.Unlock()
		p.t.Fatalf("agenttest: %s log: %v", p.name, err)
	}
	fmt.Fprintf(logf, "\n==== agenttest: %s: starting %s %q\n", time.Now().Format(time.RFC3339Nano), p.bin, p.args)
	cmd := exec.Command(p.bin, p.args...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Own process group, so that Ctrl-C on `go test` does not hit the
	// agent before the cleanup stops it, and SIGKILL reaches its children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		p.mu.Unlock()
		p.t.Fatalf("agenttest: start %s: %v", p.name, err)
	}
	r := &run{cmd: cmd, done: make(chan struct{})}
	p.cur = r
	p.mu.Unlock()
	go func() {
		r.err = cmd.Wait()
		logf.Close()
		close(r.done)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	poll := time.NewTicker(100 * time.Millisecond)
	defer poll.Stop()
	for {
		last := p.ready(ctx)
		if last == nil {
			return
		}
		select {
		case <-r.done:
			p.mu.Lock()
			p.cur = nil
			p.mu.Unlock()
			p.t.Fatalf("agenttest: %s exited before it was ready (%v)\n%s", p.name, r.err, p.tail())
		case <-ctx.Done():
			p.stop()
			p.t.Fatalf("agenttest: %s not ready within %v: %v\n%s", p.name, p.timeout, last, p.tail())
		case <-poll.C:
		}
	}
}

// stop signals the process to exit (SIGINT, then SIGKILL to its process
// group after StopTimeout) and waits for it. Stopping a stopped process
// does nothing.
func (p *process) stop() {
	p.mu.Lock()
	r := p.cur
	p.cur = nil
	p.mu.Unlock()
	if r == nil {
		return
	}
	_ = r.cmd.Process.Signal(os.Interrupt)
	timer := time.NewTimer(StopTimeout)
	defer timer.Stop()
	select {
	case <-r.done:
	case <-timer.C:
		p.t.Logf("agenttest: %s ignored SIGINT for %v; killing it", p.name, StopTimeout)
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
	}
}

// running reports whether the process is started and has not exited.
func (p *process) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return false
	}
	select {
	case <-p.cur.done:
		return false
	default:
		return true
	}
}

// tail returns the end of the log file.
func (p *process) tail() string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(log: %v)", err)
	}
	off := max(st.Size()-logTailBytes, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return fmt.Sprintf("(log: %v)", err)
	}
	return fmt.Sprintf("---- last %d bytes of %s (%s) ----\n%s\n---- end of log ----", len(b), p.name, p.logPath, b)
}

// register starts the process and arranges for it to be stopped at the
// end of the test, printing its log's tail if the test failed.
func (p *process) register() {
	p.t.Helper()
	p.t.Cleanup(func() {
		p.stop()
		if p.t.Failed() {
			p.t.Logf("agenttest: %s", p.tail())
		}
	})
	p.start()
}

// outage is embedded in each agent type (Consul, Nomad, Redis, SeaweedFS)
// to give it Stop, Start and Running, for tests of how the platform
// behaves while the agent is down. What an agent keeps across Stop and
// Start is said on its type.
type outage struct{ p *process }

// Stop stops the agent (an outage) and waits until its process exited.
// Stopping a stopped agent does nothing.
func (o outage) Stop() { o.p.stop() }

// Start starts the agent again on the same ports and waits until it is
// ready.
func (o outage) Start() {
	o.p.t.Helper()
	o.p.start()
}

// Running reports whether the agent's process is up.
func (o outage) Running() bool { return o.p.running() }

// errNotReady is returned by readiness probes that got an answer which is
// not yet the expected one.
var errNotReady = errors.New("not ready yet")

func itoa(n int) string { return strconv.Itoa(n) }
