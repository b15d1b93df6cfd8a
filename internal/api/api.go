// Package api holds the wire types of the admin API (docs/api.md): the
// request and reply bodies, the pfop codes and the paths. The admin server
// (admin, admin/pfop, admin/runtime, router/origin, autoscaler) and its
// clients (admin/client, qdoractl, the web console's tests) share these
// definitions, so a field renamed on one side is renamed on the other.
//
// The package is pure types: it imports the standard library and the
// domain model (package dora, itself standard library only) and nothing
// else, so that a client linking it links no server code (see
// cli/qdoractl's TestNoServerPackages).
package api

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/doraproject/dora"
)

// ErrorBody is every error reply of the admin API: {"error": "<message>"}.
type ErrorBody struct {
	Error string `json:"error"`
}

// Region is a place deployments can run in (GET /v1/regions).
type Region struct {
	Name string `json:"name"`
	Desc string `json:"desc,omitempty"`
}

// BucketSpec is the body of POST /v1/buckets.
type BucketSpec struct {
	Name    string   `json:"name"`
	Private bool     `json:"private"`
	Domains []string `json:"domains,omitempty"`
	Mirror  string   `json:"mirror,omitempty"`
}

// Object describes a stored object (GET /v1/stat, GET /v1/list items, the
// reply of PUT /v1/objects). Field names follow Qiniu's stat reply.
type Object struct {
	Bucket   string    `json:"bucket"`
	Key      string    `json:"key"`
	Size     int64     `json:"fsize"`
	ETag     string    `json:"hash"` // Qiniu-style etag, also the HTTP ETag (quoted by the server)
	MimeType string    `json:"mimeType"`
	Modified time.Time `json:"putTime"`
}

// ObjectList is the reply of GET /v1/list/{bucket}.
type ObjectList struct {
	Items []Object `json:"items"`
}

// UfopInfo is a ufop as `qufopctl info` shows it (GET /v1/ufops/{name},
// items of GET /v1/ufops).
type UfopInfo struct {
	dora.Ufop
	// InstanceNum is the desired instance count of the active version,
	// summed over regions.
	InstanceNum int `json:"instanceNum"`
	// MaxInstanceNum is the owner's instance limit per ufop.
	MaxInstanceNum int `json:"maxInstanceNum"`
	// Flavor is the active release's flavor ("default" without one).
	Flavor string `json:"flavor"`
	// AccessList holds the owner and (for the owner's eyes) the accounts
	// that applied for the ufop.
	AccessList []string `json:"accessList"`
	// Autoscale is the scaling policy in force for the active version:
	// defaults, the release's block and the deployment's overrides merged
	// (every field set); absent without an active version.
	Autoscale *dora.AutoscalePolicy `json:"autoscale,omitempty"`
}

// Image kinds as GET /v1/images reports them.
const (
	ImageKindOCI     = "oci"     // pushed to the registry
	ImageKindPackage = "package" // a successful build of a program package
)

// Image is one image an account may name in a release (GET /v1/images).
type Image struct {
	Name    string    `json:"name"`             // "ufopdemo:v1" or "grepd.v3"
	Kind    string    `json:"kind"`             // ImageKindOCI or ImageKindPackage
	Digest  string    `json:"digest,omitempty"` // OCI manifest digest
	Created time.Time `json:"created"`
	// Ref is a pullable reference (e.g. "127.0.0.1:8090/1366779853/ufopdemo:v1");
	// empty means "<PublicURL host>/<owner>/<Name>".
	Ref string `json:"ref,omitempty"`
}

// HealthCheckConfig is dora.yaml's health_check.
type HealthCheckConfig struct {
	Path    string `json:"path,omitempty" yaml:"path,omitempty"`
	Timeout int    `json:"timeout,omitempty" yaml:"timeout,omitempty"`
}

// EnvConfig is dora.yaml's env: {global: [{key, value}]}.
type EnvConfig struct {
	Global []dora.EnvVar `json:"global,omitempty" yaml:"global,omitempty"`
}

// Duration is a step timeout as dora.yaml and the API carry it: a Go
// duration string ("2s", "1m30s") or a bare number of seconds ("90"; in JSON
// also the number 90). It stays text until Value parses it, so YAML and JSON
// decode it the same way without a YAML dependency here.
type Duration string

// UnmarshalJSON accepts "1m30s", "90" or 90.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	switch {
	case s == "null":
		return nil
	case strings.HasPrefix(s, `"`):
		u, err := strconv.Unquote(s)
		if err != nil {
			return &DurationError{Text: s, Err: err}
		}
		*d = Duration(u)
	default:
		if _, err := strconv.ParseFloat(s, 64); err != nil {
			return &DurationError{Text: s, Err: err}
		}
		*d = Duration(s)
	}
	return nil
}

// Value parses the duration: "" is 0, a bare number counts seconds.
func (d Duration) Value() (time.Duration, error) {
	s := strings.TrimSpace(string(d))
	if s == "" {
		return 0, nil
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		return time.Duration(secs * float64(time.Second)), nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, &DurationError{Text: s, Err: err}
	}
	return v, nil
}

// DurationError is a duration that is neither a Go duration nor a number.
type DurationError struct {
	Text string
	Err  error
}

func (e *DurationError) Error() string {
	return "duration " + strconv.Quote(e.Text) + `: want a Go duration such as "30s" or a number of seconds`
}

// Unwrap returns the parse error.
func (e *DurationError) Unwrap() error { return e.Err }

// TimeoutsConfig is dora.yaml's timeouts (the release's step timeouts).
type TimeoutsConfig struct {
	Connect   Duration `json:"connect,omitempty" yaml:"connect,omitempty"`
	FirstByte Duration `json:"first_byte,omitempty" yaml:"first_byte,omitempty"`
	Idle      Duration `json:"idle,omitempty" yaml:"idle,omitempty"`
}

// ReleaseConfig is dora.yaml (docs/api.md, "Images and releases"), read from YAML by qdoractl
// and sent as JSON in the body of POST /v1/releases.
type ReleaseConfig struct {
	UfopName     string             `json:"ufopname" yaml:"ufopname"`
	VerStr       string             `json:"verstr" yaml:"verstr"`
	Image        string             `json:"image" yaml:"image"`
	Desc         string             `json:"desc,omitempty" yaml:"desc"`
	Flavor       string             `json:"flavor" yaml:"flavor"`
	HealthCheck  *HealthCheckConfig `json:"health_check,omitempty" yaml:"health_check,omitempty"`
	LogFilePaths []string           `json:"log_file_paths" yaml:"log_file_paths"`
	Env          *EnvConfig         `json:"env,omitempty" yaml:"env,omitempty"`
	Protocol     string             `json:"protocol,omitempty" yaml:"protocol,omitempty"`
	Timeouts     *TimeoutsConfig    `json:"timeouts,omitempty" yaml:"timeouts,omitempty"`
	// Autoscale is a dora.AutoscalePolicy (camelCase keys, durations in
	// nanoseconds as encoding/json writes time.Duration).
	Autoscale *dora.AutoscalePolicy `json:"autoscale,omitempty" yaml:"autoscale,omitempty"`
	// BodyLimit: inputs of known size up to this many bytes reach a Dora
	// protocol program as its POST body (0 default 64 KiB, -1 never).
	BodyLimit int64 `json:"body_limit,omitempty" yaml:"body_limit,omitempty"`
	// Cache opts the release's results into the router's result cache.
	Cache *CacheConfig `json:"cache,omitempty" yaml:"cache,omitempty"`
}

// CacheConfig is dora.yaml's cache: {enabled: true, ttl: "10m"}.
type CacheConfig struct {
	Enabled bool     `json:"enabled" yaml:"enabled"`
	TTL     Duration `json:"ttl,omitempty" yaml:"ttl,omitempty"`
}

// Releases is GET /v1/ufops/{name}/releases: the mode, the releases and the
// deployments of a ufop (`qdoractl release <ufop> -d`).
type Releases struct {
	Mode        string            `json:"mode"`
	Releases    []dora.Release    `json:"releases"`
	Deployments []dora.Deployment `json:"deployments"`
}

// DeployRequest is the body of POST /v1/ufops/{name}/deployments.
type DeployRequest struct {
	Version  string  `json:"version"`
	Region   string  `json:"region,omitempty"`
	Expect   int     `json:"expect"`
	Max      int     `json:"max,omitempty"`
	Target   float64 `json:"target,omitempty"`
	Activate bool    `json:"activate,omitempty"`
}

// Instance states reported by the runtime (InstanceStatus.State).
const (
	StateStarting  = "STARTING"
	StateRunning   = "RUNNING" // process up and health check passing
	StateUnhealthy = "UNHEALTHY"
	StateStopped   = "STOPPED" // stopped by the user
	StateCrashed   = "CRASHED" // exited; waiting for a restart
	StateFailed    = "FAILED"
)

// InstanceStatus is one instance as `qdoractl state` shows it.
type InstanceStatus struct {
	Index    int       `json:"index"` // 1-based
	ID       string    `json:"id"`    // local: "<deployment>-<index>"; Nomad: alloc id
	State    string    `json:"state"`
	Healthy  bool      `json:"healthy"`
	PID      int       `json:"pid,omitempty"`
	Addr     string    `json:"addr,omitempty"`
	Restarts int       `json:"restarts"`
	Started  time.Time `json:"started,omitempty"`
	Message  string    `json:"message,omitempty"`
}

// DeploymentInfo is a deployment with its instances as the runtime reports
// them (GET /v1/ufops/{name}/deployments/{id}).
type DeploymentInfo struct {
	dora.Deployment
	Instances []InstanceStatus `json:"instances"`
}

// ScaleEvent is one scaling change of a deployment, as the autoscaler keeps
// it and GET /v1/ufops/{name}/deployments/{id}/events lists it.
type ScaleEvent struct {
	Time   time.Time `json:"time"`
	From   int       `json:"from"`
	To     int       `json:"to"`
	Reason string    `json:"reason"`
}

// Seg escapes one path segment.
func Seg(s string) string { return url.PathEscape(s) }

// KeyPath escapes an object key segment by segment, keeping its slashes.
func KeyPath(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}
