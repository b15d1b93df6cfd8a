package runtime

import (
	"context"
	"errors"
	"fmt"
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
