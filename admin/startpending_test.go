package admin

import (
	"context"
	"net/http"
	"testing"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/runtime"
)

// TestStartRecordsPendingAtOnce: starting a deployment its owner stopped
// records it PENDING in the same call, not at the next status check:
// routers answer requests for a STOPPED deployment at once ("stopped by
// its owner") instead of holding them for the instance about to start.
func TestStartRecordsPendingAtOnce(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	d := e.deployGrepd(alice, 1)
	e.rt.mu.Lock()
	e.rt.status[d.ID] = runtime.DeploymentStatus{Status: dora.DeployStopped, Message: "stopped by its owner"}
	e.rt.mu.Unlock()
	if err := e.srv.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.deployment("grepd", d.ID); got.Status != dora.DeployStopped {
		t.Fatalf("after the stop: %s, want STOPPED", got.Status)
	}
	// Starting some instances by index leaves the record to the status check.
	e.must(http.StatusNoContent, alice, "POST", "/v1/ufops/grepd/instances/start", map[string]any{"indexes": []int{1}}, nil)
	if got := e.deployment("grepd", d.ID); got.Status != dora.DeployStopped {
		t.Fatalf("after starting instance 1: %s, want STOPPED until the runtime says otherwise", got.Status)
	}
	e.must(http.StatusNoContent, alice, "POST", "/v1/ufops/grepd/instances/start", map[string]any{}, nil)
	if got := e.deployment("grepd", d.ID); got.Status != dora.DeployPending {
		t.Fatalf("after start: %s %q, want PENDING", got.Status, got.Message)
	}
}
