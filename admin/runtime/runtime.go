// Package runtime defines what the control plane asks of whatever runs ufop
// instances: the local process runner (admin/runtime/local) in the embedded
// platform, Nomad (admin/runtime/nomad) in production.
package runtime

import (
	"context"
	"errors"
	"io"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/api"
)

// Sentinel errors callers branch on.
var (
	// ErrNotFound: no such deployment or instance.
	ErrNotFound = errors.New("runtime: not found")
	// ErrUnsupported: the runtime cannot run this kind of image here (e.g.
	// an OCI image without a container engine).
	ErrUnsupported = errors.New("runtime: unsupported")
	// ErrBusy: the runtime is in the middle of a rollout (e.g. an active
	// Nomad deployment) and will not scale now; retry later. The
	// autoscaler treats it as a no-op that starts no cooldown.
	ErrBusy = errors.New("runtime: busy with a rollout")
)

// Spec is everything a runtime needs to run one deployment.
type Spec struct {
	Deployment dora.Deployment
	Release    dora.Release
	Owner      string // account id owning the ufop
	Flavor     dora.Flavor
	// Package is set when the release's image is a built program package:
	// where its files are and how to start it.
	Package *Package
	// OCIImage is set when the release's image is an OCI image: a pullable
	// reference in the platform's registry.
	OCIImage string
}

// Package is a built program package ready to run.
type Package struct {
	// Dir is the build's result directory on the admin host (local runtime
	// copies it into each instance's working directory).
	Dir string
	// ArtifactURL is a signed, expiring URL serving Dir as a tar.gz (for
	// runtimes on other hosts, e.g. Nomad's artifact block).
	ArtifactURL string
	// Run is the shell command from ufop.yaml, run in the working directory.
	Run string
}

// Instance states reported by Status (defined with the wire types in
// internal/api).
const (
	StateStarting  = api.StateStarting
	StateRunning   = api.StateRunning // process up and health check passing
	StateUnhealthy = api.StateUnhealthy
	StateStopped   = api.StateStopped // stopped by the user
	StateCrashed   = api.StateCrashed // exited; waiting for a restart
	StateFailed    = api.StateFailed
)

// InstanceStatus is one instance as `qdoractl state` shows it (a wire type
// of internal/api).
type InstanceStatus = api.InstanceStatus

// DeploymentStatus is the runtime's view of one deployment.
type DeploymentStatus struct {
	Status    string           `json:"status"` // dora.DeployPending | DeployRunning | DeployFailed | DeployStopped
	Message   string           `json:"message,omitempty"`
	Healthy   int              `json:"healthy"`
	Instances []InstanceStatus `json:"instances"`
}

// LogQuery selects an instance's output.
type LogQuery struct {
	Index  int    // 1-based instance index
	Stream string // "stdout" or "stderr"
	Tail   int    // last N lines; 0 means 100
	// Follow keeps the stream open after the last lines and sends new
	// lines as the instance writes them, until ctx ends or the instance
	// goes away (`qdoractl logtail -f`, the console's log pane).
	Follow bool
}

// Runtime runs deployments. Apply is idempotent: applying the same spec twice
// changes nothing; applying a spec with another Desired count scales.
type Runtime interface {
	// Apply creates or updates the deployment so Desired instances run.
	Apply(ctx context.Context, spec Spec) error
	// Scale changes the instance count of an applied deployment.
	Scale(ctx context.Context, deploymentID string, count int, reason string) error
	// Status reports the deployment and its instances.
	Status(ctx context.Context, deploymentID string) (DeploymentStatus, error)
	// StopInstances stops the given 1-based instances (all when empty);
	// a stopped instance stays stopped until StartInstances.
	StopInstances(ctx context.Context, deploymentID string, indexes []int) error
	// StartInstances starts stopped instances (all when empty).
	StartInstances(ctx context.Context, deploymentID string, indexes []int) error
	// Logs streams the last lines of an instance's output, each line
	// prefixed with its RFC 3339 timestamp; with q.Follow it goes on with
	// the lines written later.
	Logs(ctx context.Context, deploymentID string, q LogQuery) (io.ReadCloser, error)
	// Remove stops and forgets the deployment.
	Remove(ctx context.Context, deploymentID string) error
}
