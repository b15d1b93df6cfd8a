// Package nomadjobs holds Dora's Nomad job files, readable by humans and
// embedded in the binary:
//
//   - ufop.nomad.hcl.tmpl: the template of one ufop deployment (one job per
//     ufop, version and region), rendered by admin/runtime/nomad through
//     RenderUfop;
//   - dora-router.nomad.hcl (a system job: one router per client node),
//     dora-admin.nomad.hcl, dora-autoscaler.nomad.hcl (two instances, one
//     leader through a Consul lock), dora-worker.nomad.hcl: the platform
//     itself;
//   - redis.nomad.hcl: an example Redis for the load figures and the pfop
//     queue.
//
// The directory is named nomad-jobs so that operators find the files; the Go
// package name is nomadjobs.
package nomadjobs

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
	"unicode/utf8"
)

//go:embed *.tmpl *.hcl
var files embed.FS

// UfopTemplate is the file name of the ufop job template.
const UfopTemplate = "ufop.nomad.hcl.tmpl"

// PlatformJobs returns the names of the job files that run Dora itself
// (and an example Redis), in the order an operator would submit them.
func PlatformJobs() []string {
	return []string{
		"redis.nomad.hcl",
		"dora-admin.nomad.hcl",
		"dora-router.nomad.hcl",
		"dora-autoscaler.nomad.hcl",
		"dora-worker.nomad.hcl",
	}
}

// FS returns the embedded job files (read-only).
func FS() fs.FS { return files }

// ReadFile returns one embedded job file by name.
func ReadFile(name string) ([]byte, error) {
	b, err := files.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("nomad-jobs: %w", err)
	}
	return b, nil
}

// Drivers a ufop job may use.
const (
	DriverRawExec = "raw_exec" // program packages as plain processes (no isolation)
	DriverExec    = "exec"     // program packages chrooted and in cgroups (needs root)
	DriverDocker  = "docker"   // OCI images
)

// ContainerPort is the port a ufop listens on inside its container.
const ContainerPort = 9100

// Defaults of the timing fields of UfopJob.
const (
	DefaultCheckInterval    = 2 * time.Second
	DefaultMinHealthyTime   = 2 * time.Second
	DefaultHealthyDeadline  = 90 * time.Second
	DefaultProgressDeadline = 3 * time.Minute
	DefaultRestartDelay     = 5 * time.Second
)

// Limits on the values a job is rendered from.
const (
	MaxCount    = 1000
	MaxEnvVars  = 100
	MaxValueLen = 4096
)

// ErrInvalid is wrapped by every validation error of RenderUfop.
var ErrInvalid = errors.New("invalid ufop job")

// UfopJob is the data of the ufop job template.
type UfopJob struct {
	JobID        string   // see JobID
	NomadRegion  string   // Nomad region the job runs in ("global" when empty)
	Datacenters  []string // Nomad datacenters (["*"] when empty)
	Owner        string   // account id owning the ufop
	Ufop         string
	Version      string
	Region       string // the platform region (z0), in tags and meta
	DeploymentID string
	Count        int // instances to run (the deployment's desired count minus Stopped)
	Stopped      int // instances stopped by the user, recorded in the job's meta

	Driver string // DriverRawExec, DriverExec or DriverDocker
	// Image is the OCI reference (DriverDocker).
	Image string
	// RegistryUser and RegistryPassword, when set, are written as the
	// docker task's auth block: the platform's read-only pull credentials
	// for its own registry, which refuses anonymous pulls (DriverDocker
	// only; both or neither).
	RegistryUser, RegistryPassword string
	// ArtifactURL (a tar.gz) and Run (the shell command from ufop.yaml,
	// run in the unpacked directory) describe a program package.
	ArtifactURL string
	Run         string
	// Bridge puts a program package's group in its own network namespace
	// (Nomad's bridge networking, which needs the CNI plugins on the
	// clients): the program listens on port 9100 like an image, mapped to
	// a dynamic host port, so a program with a fixed port runs several
	// instances per client. Without it the program shares the client's
	// network and must listen on the port it gets in PORT.
	Bridge bool

	Env      []EnvVar
	CPU      int // MHz
	MemoryMB int

	// HealthPath is the HTTP health check path; empty means a TCP check.
	HealthPath string
	// CheckInterval is the health check interval (the release's
	// health_check.timeout); the check's own timeout is min(interval, 2s).
	CheckInterval    time.Duration
	MinHealthyTime   time.Duration
	HealthyDeadline  time.Duration
	ProgressDeadline time.Duration
	RestartDelay     time.Duration
}

// EnvVar is one environment variable of the task.
type EnvVar struct{ Key, Value string }

// JobID names the Nomad job of a deployment so that an operator recognises
// it in the Nomad UI: "ufop-<ufop>-<version>" in the default platform
// region, "ufop-<ufop>-<version>-<region>" in any other.
func JobID(ufop, version, region, defaultRegion string) string {
	id := "ufop-" + ufop + "-" + version
	if region != "" && region != defaultRegion {
		id += "-" + region
	}
	return id
}

// ServiceName is the Consul service of a ufop's instances: "ufop-<ufop>".
func ServiceName(ufop string) string { return "ufop-" + ufop }

var (
	// nameRE: job ids, ufop names, versions, regions: safe in a Nomad job
	// id, a Consul tag and an HCL string without escaping.
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	envRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	reserve = []string{"PORT", "PORT_HTTP", "HOST"}
)

// ValidName reports whether s may be used as a ufop name, version or
// region in a job (letters, digits, ".", "_", "-"; at most 63 bytes).
func ValidName(s string) bool { return nameRE.MatchString(s) }

// validate checks j and fills defaults.
func (j *UfopJob) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, f := range []struct{ name, v string }{
		{"job id", j.JobID}, {"ufop", j.Ufop}, {"version", j.Version}, {"region", j.Region},
	} {
		if !nameRE.MatchString(f.v) {
			bad("%s %q must be 1 to 63 letters, digits, '.', '_' or '-'", f.name, f.v)
		}
	}
	if j.NomadRegion == "" {
		j.NomadRegion = "global"
	}
	if len(j.Datacenters) == 0 {
		j.Datacenters = []string{"*"}
	}
	for _, s := range append([]string{j.Owner, j.DeploymentID, j.NomadRegion, j.Image, j.ArtifactURL, j.Run, j.HealthPath}, j.Datacenters...) {
		if !utf8.ValidString(s) || len(s) > MaxValueLen {
			bad("value %.40q is not UTF-8 or longer than %d bytes", s, MaxValueLen)
		}
	}
	if j.Count < 0 || j.Count > MaxCount {
		bad("count %d out of 0..%d", j.Count, MaxCount)
	}
	if j.Stopped < 0 || j.Stopped > MaxCount {
		bad("stopped %d out of 0..%d", j.Stopped, MaxCount)
	}
	if j.CPU <= 0 || j.MemoryMB <= 0 {
		bad("resources cpu=%d memory=%d must be positive", j.CPU, j.MemoryMB)
	}
	switch j.Driver {
	case DriverDocker:
		if j.Image == "" {
			bad("the docker driver needs an image")
		}
		if (j.RegistryUser == "") != (j.RegistryPassword == "") {
			bad("registry auth needs both a user and a password")
		}
		for _, s := range []string{j.RegistryUser, j.RegistryPassword} {
			if !utf8.ValidString(s) || len(s) > MaxValueLen {
				bad("registry auth value not UTF-8 or longer than %d bytes", MaxValueLen)
			}
		}
	case DriverRawExec, DriverExec:
		if !strings.HasPrefix(j.ArtifactURL, "http://") && !strings.HasPrefix(j.ArtifactURL, "https://") {
			bad("driver %s needs an http(s) artifact URL, got %.60q", j.Driver, j.ArtifactURL)
		}
		if strings.TrimSpace(j.Run) == "" {
			bad("driver %s needs a run command", j.Driver)
		}
	default:
		bad("driver %q must be raw_exec, exec or docker", j.Driver)
	}
	if j.Bridge && j.Driver == DriverDocker {
		bad("bridge networking is for program packages; the docker driver publishes the container's port itself")
	}
	if j.HealthPath != "" && (!strings.HasPrefix(j.HealthPath, "/") || strings.ContainsAny(j.HealthPath, " \t\r\n")) {
		bad("health check path %q must start with / and hold no spaces", j.HealthPath)
	}
	if len(j.Env) > MaxEnvVars {
		bad("%d environment variables, at most %d", len(j.Env), MaxEnvVars)
	}
	seen := map[string]bool{}
	for _, e := range j.Env {
		switch {
		case !envRE.MatchString(e.Key):
			bad("environment variable name %q must be letters, digits and _", e.Key)
		case slices.Contains(reserve, e.Key):
			bad("environment variable %s is set by the platform", e.Key)
		case seen[e.Key]:
			bad("environment variable %s given twice", e.Key)
		case !utf8.ValidString(e.Value) || len(e.Value) > MaxValueLen:
			bad("environment variable %s: value not UTF-8 or longer than %d bytes", e.Key, MaxValueLen)
		}
		seen[e.Key] = true
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&j.CheckInterval, DefaultCheckInterval)
	def(&j.MinHealthyTime, DefaultMinHealthyTime)
	def(&j.HealthyDeadline, DefaultHealthyDeadline)
	def(&j.ProgressDeadline, DefaultProgressDeadline)
	def(&j.RestartDelay, DefaultRestartDelay)
	if j.CheckInterval < time.Second || j.CheckInterval > 10*time.Minute {
		bad("health check interval %v out of 1s..10m", j.CheckInterval)
	}
	if j.ProgressDeadline <= j.HealthyDeadline {
		bad("progress deadline %v must exceed the healthy deadline %v", j.ProgressDeadline, j.HealthyDeadline)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return nil
}

// ufopData is what the template sees: the job plus derived values.
type ufopData struct {
	UfopJob
	Docker        bool
	Service       string
	Command       string
	CheckInterval string
	CheckTimeout  string

	MinHealthyTime, HealthyDeadline, ProgressDeadline, RestartDelay string
}

// ufopTmpl is parsed once from the embedded file and never modified.
var ufopTmpl = template.Must(template.New(UfopTemplate).
	Funcs(template.FuncMap{"q": Quote}).
	Option("missingkey=error").
	ParseFS(files, UfopTemplate))

// RenderUfop validates j (filling defaults) and renders the ufop job in
// HCL, ready for Nomad's /v1/jobs/parse or `nomad job run`.
func RenderUfop(j UfopJob) (string, error) {
	if err := j.validate(); err != nil {
		return "", err
	}
	d := ufopData{
		UfopJob:          j,
		Docker:           j.Driver == DriverDocker,
		Service:          ServiceName(j.Ufop),
		Command:          ShellCommand(j.Run),
		CheckInterval:    dur(j.CheckInterval),
		CheckTimeout:     dur(min(j.CheckInterval, 2*time.Second)),
		MinHealthyTime:   dur(j.MinHealthyTime),
		HealthyDeadline:  dur(j.HealthyDeadline),
		ProgressDeadline: dur(j.ProgressDeadline),
		RestartDelay:     dur(j.RestartDelay),
	}
	var b bytes.Buffer
	if err := ufopTmpl.Execute(&b, d); err != nil {
		return "", fmt.Errorf("render %s: %w", j.JobID, err)
	}
	return b.String(), nil
}

// ShellCommand is the `sh -c` script of a program package's task: enter
// the unpacked package and run the ufop.yaml command. A simple command
// (no shell operators) is exec'ed so that Nomad's signals reach the
// program itself rather than a shell.
func ShellCommand(run string) string {
	run = strings.TrimSpace(run)
	prefix := ""
	if !strings.ContainsAny(run, ";&|<>()`\n\r") && !strings.HasPrefix(run, "exec ") {
		prefix = "exec "
	}
	return `cd "$NOMAD_TASK_DIR/app" && ` + prefix + run
}

// dur formats a duration as Nomad reads it ("2s", "1m30s", "250ms").
func dur(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
}

// Quote returns s as an HCL string literal: quotes and backslashes escaped,
// control characters as \uXXXX, and "${" / "%{" doubled so that HCL does
// not interpolate them (Nomad's own runtime interpolation of ${...} still
// applies to the resulting value). Invalid UTF-8 becomes U+FFFD.
func Quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == '"':
			b.WriteString(`\"`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case (r == '$' || r == '%') && i+1 < len(s) && s[i+1] == '{':
			b.WriteRune(r)
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
