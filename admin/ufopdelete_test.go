package admin

import (
	"context"
	"net/http"
	"testing"

	"github.com/doraproject/dora/admin/runtime"
)

// reconcilingRuntime runs the server's Reconcile right after each Remove,
// as the leader's loop may while a DELETE of the ufop is under way.
type reconcilingRuntime struct {
	*fakeRuntime
	srv *Server
}

func (r *reconcilingRuntime) Remove(ctx context.Context, id string) error {
	err := r.fakeRuntime.Remove(ctx, id)
	if r.srv != nil {
		_ = r.srv.Reconcile(ctx)
	}
	return err
}

var _ runtime.Runtime = (*reconcilingRuntime)(nil)

// A ufop deleted while the leader reconciles: the deployment the delete
// stopped is one the runtime "lost", so the leader applied it again; the
// records then went away and nothing ever stopped those instances.
func TestDeleteUfopLeavesNoInstancesRunning(t *testing.T) {
	rr := &reconcilingRuntime{}
	e := newEnv(t, func(c *Config) {
		rr.fakeRuntime = c.Runtime.(*fakeRuntime)
		c.Runtime = rr
	})
	alice := e.user("alice", 0)
	d := e.deployGrepd(alice, 1)
	rr.srv = e.srv
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/grepd", nil, nil)
	rr.srv = nil
	if _, ok := e.rt.lastSpec(d.ID); ok {
		t.Fatalf("deployment %s of the deleted ufop still runs in the runtime", d.ID)
	}
}
