package local

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/agenttest"
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

// TestResizeWithRegistryDown: applying a running image deployment again
// (a resize) while its registry cannot be reached keeps the instances it
// runs, from the image it already has, instead of stopping them all.
func TestResizeWithRegistryDown(t *testing.T) {
	pod, err := DetectPodman(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r := newRuntimeWith(t, Config{Dir: t.TempDir(), Podman: pod})
	srv := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/test/grepd:down"
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, agenttest.Image(t, filepath.Join(grepdDir, "grepd"), agenttest.ImageOptions{})); err != nil {
		t.Fatal(err)
	}
	const id = "deploy-regdown"
	spec := grepdSpec(id, 1)
	spec.Package = nil
	spec.OCIImage = ref
	ctx := context.Background()
	if err := r.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	eventually(t, "healthy", func() bool { return status(t, r, id).Healthy == 1 })
	pid := inst(status(t, r, id), 1).PID
	srv.Close()
	spec.Deployment.Desired = 2
	if err := r.Apply(ctx, spec); err != nil {
		t.Fatalf("resize with the registry down: %v", err)
	}
	if in := inst(status(t, r, id), 1); in.PID != pid || !in.Healthy {
		t.Fatalf("instance 1 after the resize: %+v (pid was %d)", in, pid)
	}
	eventually(t, "2 healthy", func() bool { return status(t, r, id).Healthy == 2 })
}
