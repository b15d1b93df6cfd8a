package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler"
)

type scaleCall struct {
	id     string
	count  int
	reason string
}

func dep(id string) dora.Deployment {
	return dora.Deployment{ID: id, Ufop: "grepd", Version: "v1", Expect: 1, Max: 5, Desired: 1, Status: dora.DeployRunning}
}

// fakeRuntime implements Runtime with function fields.
type fakeRuntime struct {
	Runtime
	scale  func(id string, count int, reason string) error
	status func(id string) (DeploymentStatus, error)
}

func (f fakeRuntime) Scale(_ context.Context, id string, count int, reason string) error {
	return f.scale(id, count, reason)
}
func (f fakeRuntime) Status(_ context.Context, id string) (DeploymentStatus, error) {
	return f.status(id)
}

func TestScaleTarget(t *testing.T) {
	ctx := context.Background()
	d := dep("deploy-a")
	var got scaleCall
	busy := fmt.Errorf("nomad: deployment in progress: %w", ErrBusy)
	rt := fakeRuntime{
		scale: func(id string, count int, reason string) error {
			got = scaleCall{id, count, reason}
			if count == 4 {
				return busy
			}
			if count == 5 {
				return ErrNotFound
			}
			return nil
		},
		status: func(id string) (DeploymentStatus, error) {
			if id != "deploy-a" {
				return DeploymentStatus{}, ErrNotFound
			}
			return DeploymentStatus{Healthy: 2, Instances: make([]InstanceStatus, 3)}, nil
		},
	}
	tg := ScaleTarget{Runtime: rt}
	if err := tg.Scale(ctx, d, 3, autoscaler.ReasonScaleUp); err != nil || got != (scaleCall{"deploy-a", 3, autoscaler.ReasonScaleUp}) {
		t.Errorf("Scale: %v %+v", err, got)
	}
	if err := tg.Scale(ctx, d, 4, autoscaler.ReasonScaleUp); !errors.Is(err, autoscaler.ErrTargetBusy) || !errors.Is(err, busy) {
		t.Errorf("busy Scale = %v", err)
	}
	if err := tg.Scale(ctx, d, 5, autoscaler.ReasonScaleUp); !errors.Is(err, ErrNotFound) || errors.Is(err, autoscaler.ErrTargetBusy) {
		t.Errorf("failed Scale = %v", err)
	}
	if n, err := tg.Ready(ctx, d); err != nil || n != 2 {
		t.Errorf("Ready = %d, %v", n, err)
	}
	if _, err := tg.Ready(ctx, dep("deploy-x")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Ready of a missing deployment = %v", err)
	}
}

// appliedRuntime is a fakeRuntime that tells its applied counts.
type appliedRuntime struct {
	fakeRuntime
	applied map[string]int
}

func (f appliedRuntime) Applied(_ context.Context, id string) (int, error) {
	n, ok := f.applied[id]
	if !ok {
		return 0, ErrNotFound
	}
	return n, nil
}

// failingApplied is a fakeRuntime that cannot tell its applied counts.
type failingApplied struct{ fakeRuntime }

func (failingApplied) Applied(context.Context, string) (int, error) {
	return 0, errors.New("nomad unreachable")
}

// TestScaleTargetApplied: the target answers the count the runtime is
// set to run, its error wrapped; a runtime that cannot tell answers the
// stored count.
func TestScaleTargetApplied(t *testing.T) {
	ctx := context.Background()
	d := dep("deploy-a")
	d.Desired = 3
	tg := ScaleTarget{Runtime: appliedRuntime{applied: map[string]int{"deploy-a": 2}}}
	if n, err := tg.Applied(ctx, d); err != nil || n != 2 {
		t.Fatalf("applied = %d, %v; want 2", n, err)
	}
	// An unknown one (not restored yet at start) is ErrUnknownToTarget, for
	// the autoscaler not to warn, named once.
	if _, err := tg.Applied(ctx, dep("deploy-b")); !errors.Is(err, ErrNotFound) || !errors.Is(err, autoscaler.ErrUnknownToTarget) ||
		strings.Count(err.Error(), "deploy-b") != 1 {
		t.Fatalf("unknown deployment: %v, want ErrNotFound and autoscaler.ErrUnknownToTarget", err)
	}
	other := ScaleTarget{Runtime: failingApplied{}}
	if _, err := other.Applied(ctx, d); err == nil || errors.Is(err, autoscaler.ErrUnknownToTarget) {
		t.Fatalf("a failing runtime: %v, want its error only", err)
	}
	if n, err := (ScaleTarget{Runtime: fakeRuntime{}}).Applied(ctx, d); err != nil || n != 3 {
		t.Fatalf("a runtime that cannot tell: %d, %v; want the stored 3", n, err)
	}
}
