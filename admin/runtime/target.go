package runtime

import (
	"context"
	"errors"
	"fmt"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler"
)

// ScaleTarget lets the autoscaler scale through a Runtime: the local process
// runner in `dorad dev`, or Nomad. It lives beside the runtime port, not in
// the autoscaler, so that the data plane imports nothing under admin/: the
// autoscaler only knows its own two-method Target. Ready counts healthy
// instances; a Scale error wrapping ErrBusy is reported as
// autoscaler.ErrTargetBusy so that no cooldown starts.
type ScaleTarget struct {
	Runtime Runtime
}

var (
	_ autoscaler.Target        = ScaleTarget{}
	_ autoscaler.AppliedReader = ScaleTarget{}
)

// appliedCounter is a Runtime that tells the count a deployment is set to
// run, instances stopped by index included (the local runtime, Nomad).
type appliedCounter interface {
	Applied(ctx context.Context, deploymentID string) (int, error)
}

// Scale asks the runtime for count instances.
func (t ScaleTarget) Scale(ctx context.Context, d dora.Deployment, count int, reason string) error {
	if err := t.Runtime.Scale(ctx, d.ID, count, reason); err != nil {
		if errors.Is(err, ErrBusy) {
			return fmt.Errorf("scale %s to %d: %w: %w", d.ID, count, autoscaler.ErrTargetBusy, err)
		}
		return fmt.Errorf("scale %s to %d: %w", d.ID, count, err)
	}
	return nil
}

// Ready returns the runtime's count of healthy instances.
func (t ScaleTarget) Ready(ctx context.Context, d dora.Deployment) (int, error) {
	st, err := t.Runtime.Status(ctx, d.ID)
	if err != nil {
		return 0, fmt.Errorf("status of %s: %w", d.ID, err)
	}
	return st.Healthy, nil
}

// Applied returns the count the runtime is set to run for d, so that the
// autoscaler re-applies a stored count it never applied; a runtime that
// cannot tell answers d's stored count (nothing to re-apply), one that does
// not know d an error wrapping autoscaler.ErrUnknownToTarget.
func (t ScaleTarget) Applied(ctx context.Context, d dora.Deployment) (int, error) {
	ac, ok := t.Runtime.(appliedCounter)
	if !ok {
		return d.Desired, nil
	}
	n, err := ac.Applied(ctx, d.ID)
	if errors.Is(err, ErrNotFound) {
		// Not restored yet (the autoscaler starts before the runtime).
		return 0, fmt.Errorf("applied count of %s: %w: %w", d.ID, autoscaler.ErrUnknownToTarget, err)
	} else if err != nil {
		return 0, fmt.Errorf("applied count of %s: %w", d.ID, err)
	}
	return n, nil
}
