package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/procsweep/proctest"
	"github.com/doraproject/dora/pool"
)

// grepdDir holds the grepd example built once for the whole package.
var grepdDir string

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		runHelper(dir)
	}
	dir, err := os.MkdirTemp("", "local-runtime-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "grepd"), "github.com/doraproject/dora/examples/grepd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static: it also runs alone in an image (podman_test.go)
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build grepd: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	grepdDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// recorder is a Publisher keeping the last published set.
type recorder struct {
	mu   sync.Mutex
	last []pool.Instance
	n    int
}

func (p *recorder) Publish(in []pool.Instance) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.last = append([]pool.Instance(nil), in...)
	p.n++
}

func (p *recorder) ids() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []string
	for _, i := range p.last {
		ids = append(ids, i.ID)
	}
	sort.Strings(ids)
	return ids
}

func (p *recorder) get(id string) (pool.Instance, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, i := range p.last {
		if i.ID == id {
			return i, true
		}
	}
	return pool.Instance{}, false
}

// eventually polls cond until it holds or 30s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newRuntime(t *testing.T, pub Publisher) *Runtime {
	t.Helper()
	return newRuntimeWith(t, Config{Dir: t.TempDir(), Publisher: pub})
}

// newRuntimeWith is New(cfg) with the tests' settings (region z0, fast
// probes and restarts, short stops, small logs, no log output), closed
// when the test ends.
func newRuntimeWith(t *testing.T, cfg Config) *Runtime {
	t.Helper()
	cfg.Region = "z0"
	cfg.HealthInterval, cfg.RestartBackoff = 200*time.Millisecond, 20*time.Millisecond
	cfg.StopTimeout, cfg.MaxLogBytes = 3*time.Second, 64<<10
	// The runtime's log is shown when the test fails (after Close, so
	// nothing writes to it any more): what started, became healthy,
	// exited and why, for a failure seen once under load.
	logs := &agenttest.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("runtime log:\n%s", logs)
		}
	})
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close()
		removePulled(t, r)
	})
	return r
}

// removePulled removes from podman's storage the image names r pulled
// (the tests' images, each from a registry of its own on a port of its
// own), as its collector would once they are unused: a closed runtime
// keeps them for its next run, which a test never has. Names r did not
// pull itself stay.
func removePulled(t *testing.T, r *Runtime) {
	t.Helper()
	if r.cfg.Podman == nil {
		return
	}
	r.imgRecMu.Lock()
	recs := append([]*imageRecord(nil), r.images...)
	r.imgRecMu.Unlock()
	for _, rec := range recs {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := r.cfg.Podman.RemoveImageName(ctx, rec.Ref, rec.ID); err != nil {
			t.Logf("left in podman's storage: %v", err)
		}
		cancel()
	}
}

func grepdSpec(id string, n int) runtime.Spec {
	return runtime.Spec{
		Deployment: dora.Deployment{ID: id, Ufop: "grepd", Version: "v1", Region: "z0", Expect: n, Desired: n},
		Release:    dora.Release{Ufop: "grepd", Version: "v1", Image: "grepd.v1", HealthCheck: dora.HealthCheck{Path: "/health"}},
		Package:    &runtime.Package{Dir: grepdDir, Run: "./grepd"},
	}
}

func status(t *testing.T, r *Runtime, id string) runtime.DeploymentStatus {
	t.Helper()
	st, err := r.Status(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func inst(st runtime.DeploymentStatus, index int) runtime.InstanceStatus {
	for _, i := range st.Instances {
		if i.Index == index {
			return i
		}
	}
	return runtime.InstanceStatus{}
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	pub := &recorder{}
	r := newRuntime(t, pub)
	const id = "deploy-life"

	if err := r.Apply(ctx, grepdSpec(id, 2)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "2 healthy instances published", func() bool { return strings.Join(pub.ids(), ",") == id+"-1,"+id+"-2" })
	got, _ := pub.get(id + "-1")
	if got.Ufop != "grepd" || got.Version != "v1" || got.Region != "z0" || !strings.HasPrefix(got.Addr, "127.0.0.1:") {
		t.Fatalf("published %+v", got)
	}
	st := status(t, r, id)
	if st.Status != dora.DeployRunning || st.Healthy != 2 || len(st.Instances) != 2 {
		t.Fatalf("status %+v", st)
	}

	// The instance really serves the Dora protocol on its published addr.
	resp, err := http.Post("http://"+got.Addr+"/handler?cmd=grepd/b", "text/plain", strings.NewReader("a\nb\nab\n"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "b\nab\n" {
		t.Fatalf("grepd answered %q", body)
	}

	// Apply again: idempotent, same processes.
	pid1 := inst(st, 1).PID
	if err := r.Apply(ctx, grepdSpec(id, 2)); err != nil {
		t.Fatal(err)
	}
	if p := inst(status(t, r, id), 1).PID; p != pid1 {
		t.Fatalf("re-apply restarted instance 1 (pid %d -> %d)", pid1, p)
	}

	// Scale up to 3.
	if err := r.Scale(ctx, id, 3, "test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "3 published", func() bool { return len(pub.ids()) == 3 })
	applied(t, r, id, 3)

	// kill -9 instance 2: restarted once, healthy again with a new pid;
	// instance 1 untouched. Counted from before the kill: an instance
	// whose freshly picked port another process took before it could
	// listen exits and is restarted once at start, which is not what
	// this checks.
	before := status(t, r, id)
	pid2, restarts1, restarts2 := inst(before, 2).PID, inst(before, 1).Restarts, inst(before, 2).Restarts
	if err := syscall.Kill(pid2, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "instance 2 restarted and healthy", func() bool {
		i := inst(status(t, r, id), 2)
		return i.Restarts == restarts2+1 && i.Healthy && i.PID != pid2 && i.PID != 0
	})
	if i := inst(status(t, r, id), 1); i.Restarts != restarts1 {
		t.Fatalf("instance 1 restarts = %d, was %d before instance 2 was killed", i.Restarts, restarts1)
	}

	// Stop instance 1: it stays stopped, also across Scale.
	pid1 = inst(status(t, r, id), 1).PID
	if err := r.StopInstances(ctx, id, []int{1}); err != nil {
		t.Fatal(err)
	}
	if proctest.Alive(pid1) {
		t.Fatalf("stopped instance's process %d still alive", pid1)
	}
	i1 := inst(status(t, r, id), 1)
	if i1.State != runtime.StateStopped || i1.Healthy || i1.PID != 0 {
		t.Fatalf("instance 1 after stop: %+v", i1)
	}
	eventually(t, "instance 1 unpublished", func() bool { _, ok := pub.get(id + "-1"); return !ok && len(pub.ids()) == 2 })
	applied(t, r, id, 3) // the stopped instance still counts
	if err := r.Scale(ctx, id, 4, "test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "instance 4 published", func() bool { _, ok := pub.get(id + "-4"); return ok })
	applied(t, r, id, 4)
	st = status(t, r, id)
	if inst(st, 1).State != runtime.StateStopped || st.Status != dora.DeployRunning || st.Healthy != 3 {
		t.Fatalf("after scale to 4: %+v", st)
	}
	if err := r.StopInstances(ctx, id, []int{9}); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("stop of index 9: %v", err)
	}

	// Start it again.
	if err := r.StartInstances(ctx, id, []int{1}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "instance 1 back", func() bool { _, ok := pub.get(id + "-1"); return ok })

	// Logs: grepd logs "listening" on stderr, timestamped.
	rc, err := r.Logs(ctx, id, runtime.LogQuery{Index: 2, Stream: "stderr", Tail: 1})
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := io.ReadAll(rc)
	rc.Close()
	lines := strings.Split(strings.TrimSuffix(string(logs), "\n"), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "listening") {
		t.Fatalf("logs %q", logs)
	}
	ts, _, _ := strings.Cut(lines[0], " ")
	if _, err := time.Parse(time.RFC3339, ts); err != nil {
		t.Fatalf("log line %q: timestamp: %v", lines[0], err)
	}
	rc, err = r.Logs(ctx, id, runtime.LogQuery{Index: 2, Stream: "stderr"})
	if err != nil {
		t.Fatal(err)
	}
	logs, _ = io.ReadAll(rc)
	if n := strings.Count(string(logs), "listening"); n != 2 { // started twice
		t.Fatalf("stderr holds %d starts, want 2:\n%s", n, logs)
	}
	if _, err := r.Logs(ctx, id, runtime.LogQuery{Index: 7}); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("logs of index 7: %v", err)
	}
	if _, err := r.Logs(ctx, id, runtime.LogQuery{Index: 1, Stream: "other"}); err == nil {
		t.Fatal("logs of stream other: no error")
	}

	// Scale down to 1: the highest indexes go, processes end.
	pid4 := inst(status(t, r, id), 4).PID
	if err := r.Scale(ctx, id, 1, "test"); err != nil {
		t.Fatal(err)
	}
	if proctest.Alive(pid4) {
		t.Fatal("instance 4 survived scale down")
	}
	eventually(t, "only instance 1 published", func() bool { return strings.Join(pub.ids(), ",") == id+"-1" })
	if st := status(t, r, id); len(st.Instances) != 1 {
		t.Fatalf("after scale down: %+v", st)
	}

	// Remove: nothing published, files gone, status not found.
	pid1 = inst(status(t, r, id), 1).PID
	if err := r.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if proctest.Alive(pid1) {
		t.Fatal("instance 1 survived Remove")
	}
	eventually(t, "nothing published", func() bool { return len(pub.ids()) == 0 })
	if _, err := r.Status(ctx, id); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("status after remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.cfg.Dir, id)); !os.IsNotExist(err) {
		t.Fatalf("deployment dir kept: %v", err)
	}
}

func TestCloseStopsAll(t *testing.T) {
	pub := &recorder{}
	r, err := New(Config{Dir: t.TempDir(), Publisher: pub, HealthInterval: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// No path: TCP health check. Region comes from the deployment.
	spec := grepdSpec("deploy-close", 2)
	spec.Release.HealthCheck = dora.HealthCheck{}
	spec.Deployment.Region = "z9"
	if err := r.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "2 published", func() bool { return len(pub.ids()) == 2 })
	if i, _ := pub.get("deploy-close-2"); i.Region != "z9" {
		t.Fatalf("published %+v", i)
	}
	st := status(t, r, "deploy-close")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	for _, i := range st.Instances {
		if proctest.Alive(i.PID) {
			t.Fatalf("pid %d survived Close", i.PID)
		}
	}
	if len(pub.ids()) != 0 {
		t.Fatalf("after Close published %v", pub.ids())
	}
	if err := r.Apply(ctx, spec); !errors.Is(err, ErrClosed) {
		t.Fatalf("Apply after Close: %v", err)
	}
}

func TestCrashLoopFails(t *testing.T) {
	r := newRuntime(t, nil)
	ctx := context.Background()
	spec := grepdSpec("deploy-crash", 1)
	spec.Package = &runtime.Package{Dir: t.TempDir(), Run: "echo starting; echo boom: missing config >&2; exit 3"}
	if err := r.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "FAILED", func() bool { return status(t, r, "deploy-crash").Status == dora.DeployFailed })
	st := status(t, r, "deploy-crash")
	if !strings.Contains(st.Message, "boom: missing config") || !strings.Contains(st.Message, "instance 1") {
		t.Fatalf("message %q lacks the last stderr line", st.Message)
	}
	i := inst(st, 1)
	if i.State != runtime.StateFailed || i.Restarts < 5 || i.Healthy {
		t.Fatalf("instance %+v", i)
	}
	// Stop ends the restart loop; the deployment is then STOPPED.
	if err := r.StopInstances(ctx, "deploy-crash", nil); err != nil {
		t.Fatal(err)
	}
	if st := status(t, r, "deploy-crash"); st.Status != dora.DeployStopped {
		t.Fatalf("after stop: %+v", st)
	}
}

func TestUnhealthyIsPending(t *testing.T) {
	r := newRuntime(t, nil)
	spec := grepdSpec("deploy-sick", 1)
	spec.Release.HealthCheck.Path = "/nope" // grepd answers 404
	if err := r.Apply(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a failed probe", func() bool {
		return strings.Contains(inst(status(t, r, "deploy-sick"), 1).Message, "status 404")
	})
	st := status(t, r, "deploy-sick")
	if st.Status != dora.DeployPending || st.Healthy != 0 || inst(st, 1).State != runtime.StateStarting || !strings.Contains(st.Message, "instance 1: health check") {
		t.Fatalf("status %+v", st)
	}
}

func TestApplyRejects(t *testing.T) {
	r := newRuntime(t, nil)
	ctx := context.Background()
	oci := grepdSpec("deploy-oci", 1)
	oci.Package = nil
	oci.OCIImage = "127.0.0.1:8090/1/ufopdemo:v1"
	err := r.Apply(ctx, oci)
	if !errors.Is(err, runtime.ErrUnsupported) || !strings.Contains(err.Error(), "image 127.0.0.1:8090/1/ufopdemo:v1: this platform has no container runtime") ||
		!strings.Contains(err.Error(), "apt-get install podman runc") {
		t.Fatalf("OCI without podman: %v", err)
	}
	if err := r.CanRunImages(); !errors.Is(err, runtime.ErrUnsupported) {
		t.Fatalf("CanRunImages without podman: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*runtime.Spec)
	}{
		{"bad id", func(s *runtime.Spec) { s.Deployment.ID = "../x" }},
		{"empty id", func(s *runtime.Spec) { s.Deployment.ID = "" }},
		{"nothing to run", func(s *runtime.Spec) { s.Package = nil }},
		{"no run", func(s *runtime.Spec) { s.Package = &runtime.Package{Dir: grepdDir} }},
		{"no dir", func(s *runtime.Spec) { s.Package = &runtime.Package{Dir: "/does/not/exist", Run: "x"} }},
		{"negative", func(s *runtime.Spec) { s.Deployment.Desired = -1 }},
	}
	for _, tt := range tests {
		s := grepdSpec("deploy-bad", 1)
		tt.mod(&s)
		if err := r.Apply(ctx, s); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	for name, err := range map[string]error{
		"scale":  r.Scale(ctx, "nope", 1, ""),
		"stop":   r.StopInstances(ctx, "nope", nil),
		"start":  r.StartInstances(ctx, "nope", nil),
		"remove": r.Remove(ctx, "nope"),
	} {
		if !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("%s of unknown deployment: %v", name, err)
		}
	}
}

func TestCollectedLogs(t *testing.T) {
	r := newRuntime(t, nil)
	spec := grepdSpec("deploy-files", 1)
	spec.Package.Run = "mkdir -p logs && printf 'one\\ntwo\\n' > logs/a.log && echo three > out.log && ln -s /etc/hostname logs/escape.log && exec ./grepd"
	spec.Release.LogFilePaths = []string{"logs", "*.log"}
	if err := r.Apply(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "healthy", func() bool { return status(t, r, "deploy-files").Healthy == 1 })
	lines, err := r.CollectedLogs("deploy-files", 1)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(lines, ",") != "one,two,three" {
		t.Fatalf("collected %q", lines)
	}
	if _, err := r.CollectedLogs("deploy-files", 2); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("index 2: %v", err)
	}
	spec.Release.LogFilePaths = []string{"../../"}
	if err := r.Apply(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CollectedLogs("deploy-files", 1); err == nil {
		t.Fatal("a log path leaving the working dir was accepted")
	}
}

func TestInstanceEnv(t *testing.T) {
	base := []string{"PATH=/bin", "DORA_ROOT_SK=secret", "HOST=example", "PORT=1", "HOME=/h", "TMPDIR=/t",
		"CONSUL_HTTP_TOKEN=c", "NOMAD_TOKEN=n", "AWS_SECRET_ACCESS_KEY=a", "REDIS_PASSWORD=r", "LC_ALL=C", "TZ=UTC", "USER=root"}
	nobody := &build.User{Name: "nobody", Uid: 65534, Gid: 65534}
	tests := []struct {
		name  string
		base  []string
		rel   []dora.EnvVar
		runAs *build.User
		want  []string
	}{
		{"defaults", base, nil, nil,
			[]string{"PATH=/bin", "LC_ALL=C", "TZ=UTC", "USER=root", "HOME=/w", "TMPDIR=/w/.tmp", "HOST=127.0.0.1", "PORT=7", "PORT_HTTP=7"}},
		{"run as", base, nil, nobody,
			[]string{"PATH=/bin", "LC_ALL=C", "TZ=UTC", "USER=nobody", "LOGNAME=nobody", "HOME=/w", "TMPDIR=/w/.tmp", "HOST=127.0.0.1", "PORT=7", "PORT_HTTP=7"}},
		{"no PATH", []string{"SECRET=x"}, nil, nil,
			[]string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/w", "TMPDIR=/w/.tmp", "HOST=127.0.0.1", "PORT=7", "PORT_HTTP=7"}},
		{"release env", base, []dora.EnvVar{{Key: "A", Value: "b"}, {Key: "PORT", Value: "99"}, {Key: "DORA_X", Value: "y"}, {Key: "HOST", Value: "0.0.0.0"}, {Key: "HOME", Value: "/mine"}}, nil,
			[]string{"PATH=/bin", "LC_ALL=C", "TZ=UTC", "USER=root", "HOME=/mine", "TMPDIR=/w/.tmp", "A=b", "PORT=7", "HOST=0.0.0.0", "PORT_HTTP=7"}},
	}
	for _, tt := range tests {
		got := instanceEnv(tt.base, tt.rel, 7, "/w", tt.runAs)
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestShellCommand(t *testing.T) {
	tests := map[string]string{
		"./grepd":                     "exec ./grepd",
		" ./grepd -f grepd.conf ":     "exec ./grepd -f grepd.conf",
		"exec ./x":                    "exec ./x",
		"cd bin && ./x":               "cd bin && ./x",
		"./x > out.log":               "./x > out.log",
		"FOO=1 ./x":                   "FOO=1 ./x",
		"./x $ARG":                    "./x $ARG",
		"echo boom >&2; exit 1":       "echo boom >&2; exit 1",
		"python3 -m http.server 9100": "exec python3 -m http.server 9100",
	}
	for in, want := range tests {
		if got := shellCommand(in); got != want {
			t.Errorf("shellCommand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		crashes int
		want    time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {6, 30 * time.Second}, {100, 30 * time.Second}}
	for _, tt := range tests {
		if got := backoff(time.Second, tt.crashes); got != tt.want {
			t.Errorf("backoff(1s, %d) = %v, want %v", tt.crashes, got, tt.want)
		}
	}
}

func TestStream(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	file := filepath.Join(t.TempDir(), "x.stdout")
	s := newStream(file, 40, func() time.Time { return now })
	io.WriteString(s, "first\nsec")
	io.WriteString(s, "ond\r\nthird")
	if got := s.Tail(10); strings.Join(got, "|") != "2026-01-02T03:04:05Z first|2026-01-02T03:04:05Z second" {
		t.Fatalf("tail %q", got)
	}
	if s.Last() != "third" {
		t.Fatalf("last %q", s.Last())
	}
	s.Flush()
	if got := s.Tail(1); len(got) != 1 || got[0] != "2026-01-02T03:04:05Z third" {
		t.Fatalf("after flush %q", got)
	}
	// The ring keeps at most 40 bytes of text (but always the last line).
	for i := 0; i < 20; i++ {
		fmt.Fprintf(s, "line %02d\n", i)
	}
	got := s.Tail(100)
	if len(got) != 5 || !strings.HasSuffix(got[4], "line 19") {
		t.Fatalf("bounded tail %q", got)
	}
	// A huge line is split, not kept whole.
	s2 := newStream("", 1<<20, time.Now)
	s2.Write([]byte(strings.Repeat("x", maxLineBytes*2+5) + "\n"))
	if n := len(s2.Tail(10)); n != 3 {
		t.Fatalf("long line split into %d lines, want 3", n)
	}
	// The file is rotated at 40 bytes: current + .1 stay bounded.
	s.Close()
	for _, f := range []string{file, file + ".1"} {
		fi, err := os.Stat(f)
		if err != nil || fi.Size() > 40 {
			t.Fatalf("%s: %v %v", f, fi, err)
		}
	}
}

// applied checks the count r is set to run for deployment id.
func applied(t *testing.T, r *Runtime, id string, want int) {
	t.Helper()
	if n, err := r.Applied(context.Background(), id); err != nil || n != want {
		t.Fatalf("applied count of %s = %d, %v; want %d", id, n, err, want)
	}
}

// TestAppliedUnknownNamedOnce: a deployment the runtime does not know (at
// start, before the restore) is runtime.ErrNotFound; through the
// autoscaler's ScaleTarget the message names the deployment once (it
// read "applied count of X: applied count of X: runtime: not found").
func TestAppliedUnknownNamedOnce(t *testing.T) {
	r := newRuntime(t, nil)
	if _, err := r.Applied(context.Background(), "deploy-x"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("applied count of an unknown deployment: %v, want runtime.ErrNotFound", err)
	}
	_, err := runtime.ScaleTarget{Runtime: r}.Applied(context.Background(), dora.Deployment{ID: "deploy-x"})
	if err == nil || strings.Count(err.Error(), "applied count of deploy-x") != 1 || !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("through ScaleTarget: %v", err)
	}
}
