package local

import (
	"context"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/runtime"
)

// TestStartRestartsAFailedContainer: a container instance given up on
// (its health check never passed) stays FAILED "until started again":
// StartInstances must start it again, not leave it FAILED.
func TestStartRestartsAFailedContainer(t *testing.T) {
	pod, err := DetectPodman(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r := newRuntimeWith(t, Config{Dir: t.TempDir(), Podman: pod, HealthyDeadline: 2 * time.Second})
	const id = "deploy-failstart"
	spec := grepdSpec(id, 1)
	spec.Package = nil
	spec.OCIImage = pushGrepdImage(t)
	spec.Release.HealthCheck.Path = "/never-healthy"
	ctx := context.Background()
	if err := r.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "FAILED", func() bool { return inst(status(t, r, id), 1).State == runtime.StateFailed })
	if err := r.StartInstances(ctx, id, []int{1}); err != nil {
		t.Fatal(err)
	}
	if in := inst(status(t, r, id), 1); in.State == runtime.StateFailed {
		t.Fatalf("after StartInstances the instance is still %s: %s", in.State, in.Message)
	}
	eventually(t, "a container running again", func() bool { return inst(status(t, r, id), 1).PID != 0 })
}
