package nomadjobs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/agenttest"
)

func TestQuote(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{`a"b\c`, `"a\"b\\c"`},
		{"line\nnext\ttab\r", `"line\nnext\ttab\r"`},
		{"${NOMAD_PORT_http}", `"$${NOMAD_PORT_http}"`},
		{"%{ if x }", `"%%{ if x }"`},
		{"$$${x}", `"$$$${x}"`},
		{"cost $5 and 50%", `"cost $5 and 50%"`},
		{"bell\x07", `"bell\u0007"`},
		{"héllo 世界", `"héllo 世界"`},
		{"bad\xffutf8", "\"bad\uFFFDutf8\""},
	}
	for _, c := range cases {
		if got := Quote(c.in); got != c.want {
			t.Errorf("Quote(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestJobID(t *testing.T) {
	cases := []struct{ ufop, version, region, def, want string }{
		{"grepd", "v1", "z0", "z0", "ufop-grepd-v1"},
		{"grepd", "v1", "", "z0", "ufop-grepd-v1"},
		{"grepd", "v2", "z1", "z0", "ufop-grepd-v2-z1"},
		{"my_ufop", "1.0", "eu", "z0", "ufop-my_ufop-1.0-eu"},
	}
	for _, c := range cases {
		if got := JobID(c.ufop, c.version, c.region, c.def); got != c.want {
			t.Errorf("JobID(%q,%q,%q,%q) = %q, want %q", c.ufop, c.version, c.region, c.def, got, c.want)
		}
	}
}

func TestShellCommand(t *testing.T) {
	cases := []struct{ run, want string }{
		{"./grepd", `cd "$NOMAD_TASK_DIR/app" && exec ./grepd`},
		{"  ./grepd -f grepd.conf ", `cd "$NOMAD_TASK_DIR/app" && exec ./grepd -f grepd.conf`},
		{"./a && ./b", `cd "$NOMAD_TASK_DIR/app" && ./a && ./b`},
		{"exec ./x", `cd "$NOMAD_TASK_DIR/app" && exec ./x`},
	}
	for _, c := range cases {
		if got := ShellCommand(c.run); got != c.want {
			t.Errorf("ShellCommand(%q) = %q, want %q", c.run, got, c.want)
		}
	}
}

// rawExecJob is a valid program-package job.
func rawExecJob() UfopJob {
	return UfopJob{
		JobID: "ufop-grepd-v1", Owner: "1366779853", Ufop: "grepd", Version: "v1", Region: "z0",
		DeploymentID: "deploy-1234", Count: 2, Driver: DriverRawExec,
		ArtifactURL: "http://127.0.0.1:8090/v1/artifacts/grepd/1.tar.gz?e=1700000000&token=AK:sig=",
		Run:         "./grepd", CPU: 500, MemoryMB: 256, HealthPath: "/health", CheckInterval: 3 * time.Second,
		Env: []EnvVar{{"GREETING", "hello ${NOMAD_ALLOC_ID} \"quoted\""}},
	}
}

func TestRenderUfopRejects(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*UfopJob)
		want   string
	}{
		{"bad version", func(j *UfopJob) { j.Version = "v 1" }, "version"},
		{"quote in ufop", func(j *UfopJob) { j.Ufop = `a"b` }, "ufop"},
		{"negative count", func(j *UfopJob) { j.Count = -1 }, "count"},
		{"huge count", func(j *UfopJob) { j.Count = MaxCount + 1 }, "count"},
		{"no cpu", func(j *UfopJob) { j.CPU = 0 }, "resources"},
		{"unknown driver", func(j *UfopJob) { j.Driver = "qemu" }, "driver"},
		{"docker without image", func(j *UfopJob) { j.Driver = DriverDocker }, "image"},
		{"package without url", func(j *UfopJob) { j.ArtifactURL = "" }, "artifact"},
		{"file url", func(j *UfopJob) { j.ArtifactURL = "file:///etc/passwd" }, "artifact"},
		{"no run", func(j *UfopJob) { j.Run = " " }, "run command"},
		{"bad env name", func(j *UfopJob) { j.Env = []EnvVar{{"A-B", "x"}} }, "environment variable name"},
		{"reserved env", func(j *UfopJob) { j.Env = []EnvVar{{"PORT", "1"}} }, "set by the platform"},
		{"duplicate env", func(j *UfopJob) { j.Env = []EnvVar{{"A", "1"}, {"A", "2"}} }, "twice"},
		{"bad path", func(j *UfopJob) { j.HealthPath = "health" }, "path"},
		{"short interval", func(j *UfopJob) { j.CheckInterval = time.Millisecond }, "interval"},
		{"bad utf8", func(j *UfopJob) { j.Run = "\xff" }, "UTF-8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := rawExecJob()
			c.mutate(&j)
			_, err := RenderUfop(j)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, c.want)
			}
		})
	}
}

func TestRenderUfopContents(t *testing.T) {
	out, err := RenderUfop(rawExecJob())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`job "ufop-grepd-v1" {`,
		`region      = "global"`,
		`datacenters = ["*"]`,
		`deployment = "deploy-1234"`,
		`count = 2`,
		`name     = "ufop-grepd"`,
		`tags     = ["version=v1", "region=z0", "ufop=grepd"]`,
		`type     = "http"`,
		`path     = "/health"`,
		`interval = "3s"`,
		`timeout  = "2s"`,
		`driver = "raw_exec"`,
		`destination = "local/app"`,
		`args    = ["-c", "cd \"$NOMAD_TASK_DIR/app\" && exec ./grepd"]`,
		`PORT      = "${NOMAD_PORT_http}"`,
		`GREETING = "hello $${NOMAD_ALLOC_ID} \"quoted\""`,
		`cpu    = 500`,
		`memory = 256`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("rendered job lacks %s\n%s", want, out)
		}
	}
	j := rawExecJob()
	j.Driver, j.Image, j.HealthPath = DriverDocker, "registry.local/ufopdemo:v1", ""
	out, err = RenderUfop(j)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`driver = "docker"`, `image = "registry.local/ufopdemo:v1"`, `to = 9100`, `type     = "tcp"`} {
		if !strings.Contains(out, want) {
			t.Errorf("docker job lacks %s\n%s", want, out)
		}
	}
	for _, unwanted := range []string{"artifact", `type     = "http"`, "HOST", "auth"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("docker job holds %s\n%s", unwanted, out)
		}
	}
	// The registry's pull credentials become the task's auth block.
	j.RegistryUser, j.RegistryPassword = "dora-pull", `p"w${x}`
	if out, err = RenderUfop(j); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"auth {", `username = "dora-pull"`, `password = "p\"w$${x}"`} {
		if !strings.Contains(out, want) {
			t.Errorf("docker job with registry auth lacks %s\n%s", want, out)
		}
	}
	j.RegistryPassword = ""
	if _, err := RenderUfop(j); !errors.Is(err, ErrInvalid) {
		t.Errorf("registry user without password: %v, want ErrInvalid", err)
	}
	j.RegistryPassword, j.Bridge = "x", true
	if _, err := RenderUfop(j); !errors.Is(err, ErrInvalid) {
		t.Errorf("docker with bridge: %v, want ErrInvalid", err)
	}

	// A package in its own network namespace listens on 9100.
	j = rawExecJob()
	j.Bridge = true
	if out, err = RenderUfop(j); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`mode = "bridge"`, `to = 9100`, `HOST      = "0.0.0.0"`, `PORT      = "${NOMAD_PORT_http}"`} {
		if !strings.Contains(out, want) {
			t.Errorf("bridge job lacks %s\n%s", want, out)
		}
	}
}

// nomadBinary finds the nomad CLI as internal/agenttest does.
func nomadBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("DORA_NOMAD"); p != "" {
		return p
	}
	if home, err := os.UserHomeDir(); err == nil {
		p := filepath.Join(home, ".cache", "dora-deps", "bin", "nomad")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("nomad")
	if err != nil {
		t.Fatalf("nomad binary not found: %v", err)
	}
	return p
}

// TestJobsValidateWithNomad runs `nomad job validate` (the real binary,
// against a real dev agent) on every platform job and on rendered ufop jobs.
func TestJobsValidateWithNomad(t *testing.T) {
	n := agenttest.StartNomad(t, nil)
	bin := nomadBinary(t)
	dir := t.TempDir()
	run := func(t *testing.T, name string, content []byte) ([]byte, error) {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "job", "validate", "-address", n.URL(), path)
		cmd.Env = append(os.Environ(), "NOMAD_ADDR="+n.URL())
		return cmd.CombinedOutput()
	}
	validate := func(t *testing.T, name string, content []byte) {
		t.Helper()
		if out, err := run(t, name, content); err != nil {
			t.Fatalf("nomad job validate %s: %v\n%s\n---- job ----\n%s", name, err, out, content)
		}
	}
	t.Run("a broken job fails", func(t *testing.T) {
		good, err := RenderUfop(rawExecJob())
		if err != nil {
			t.Fatal(err)
		}
		broken := strings.Replace(good, `driver = "raw_exec"`, `driver = ""`, 1)
		if out, err := run(t, "broken.nomad.hcl", []byte(broken)); err == nil {
			t.Fatalf("nomad job validate accepted a task without a driver:\n%s", out)
		}
	})
	for _, name := range PlatformJobs() {
		t.Run(name, func(t *testing.T) {
			b, err := ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			validate(t, name, b)
		})
	}
	variants := map[string]func(*UfopJob){
		"raw_exec-http": func(*UfopJob) {},
		"exec-tcp-z1": func(j *UfopJob) {
			j.Driver, j.HealthPath, j.Region, j.JobID = DriverExec, "", "z1", "ufop-grepd-v1-z1"
			j.NomadRegion, j.Datacenters = "global", []string{"dc1", "dc2"}
			j.Run = "./grepd -f grepd.conf && echo done"
		},
		"docker": func(j *UfopJob) {
			j.Driver, j.Image = DriverDocker, "127.0.0.1:8090/1366779853/ufopdemo:v1"
			j.RegistryUser, j.RegistryPassword = "dora-pull", "secret"
		},
		"zero-count":      func(j *UfopJob) { j.Count, j.Stopped = 0, 2 },
		"raw_exec-bridge": func(j *UfopJob) { j.Bridge = true },
	}
	for name, mutate := range variants {
		t.Run("ufop-"+name, func(t *testing.T) {
			j := rawExecJob()
			mutate(&j)
			out, err := RenderUfop(j)
			if err != nil {
				t.Fatal(err)
			}
			validate(t, "ufop-"+name+".nomad.hcl", []byte(out))
		})
	}
}
