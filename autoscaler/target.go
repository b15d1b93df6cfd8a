package autoscaler

import (
	"context"
	"fmt"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
)

// RuntimeTarget scales through a runtime.Runtime: the local process runner
// in `dorad dev`, or the Nomad runtime. Ready counts healthy instances.
type RuntimeTarget struct {
	Runtime runtime.Runtime
	// Busy, when set, tells which Scale errors mean "cannot scale right
	// now" (e.g. an active Nomad deployment); they are reported as
	// ErrTargetBusy so that no cooldown starts.
	Busy func(error) bool
}

var _ Target = RuntimeTarget{}

// Scale asks the runtime for count instances.
func (t RuntimeTarget) Scale(ctx context.Context, d dora.Deployment, count int, reason string) error {
	if err := t.Runtime.Scale(ctx, d.ID, count, reason); err != nil {
		if t.Busy != nil && t.Busy(err) {
			return fmt.Errorf("scale %s to %d: %w: %w", d.ID, count, ErrTargetBusy, err)
		}
		return fmt.Errorf("scale %s to %d: %w", d.ID, count, err)
	}
	return nil
}

// Ready returns the runtime's count of healthy instances.
func (t RuntimeTarget) Ready(ctx context.Context, d dora.Deployment) (int, error) {
	st, err := t.Runtime.Status(ctx, d.ID)
	if err != nil {
		return 0, fmt.Errorf("status of %s: %w", d.ID, err)
	}
	return st.Healthy, nil
}
