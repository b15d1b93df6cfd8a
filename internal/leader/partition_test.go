package leader

import (
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/doraproject/dora/internal/agenttest"
)

// TestConsulPartitionedLeaderStepsDown: a leader cut off from its Consul
// agent (silent connections: a partition, a hung agent) whose session
// Consul then ends must stop running the task once another process takes
// the lock, rather than wait forever on a query that will never answer
// and lead alongside the new leader.
func TestConsulPartitionedLeaderStepsDown(t *testing.T) {
	agent := agenttest.StartConsul(t)
	cfg := api.DefaultConfig()
	cfg.Address = agent.Addr
	direct, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := agenttest.StartFaultProxy(t, agent.Addr)
	cfg.Address = p.Addr()
	proxied, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const key = "dora-test/locks/partition"
	a := campaign(t, proxied, key, "a")
	waitFor(t, "a to lead", a.leading.Load)
	b := campaign(t, direct, key, "b")
	t.Cleanup(p.Heal) // runs before the candidates' cleanups: frees a stuck a

	kv, _, err := direct.KV().Get(key, nil)
	if err != nil || kv == nil || kv.Session == "" || string(kv.Value) != "a" {
		t.Fatalf("lock key = %+v, %v; want a's", kv, err)
	}
	p.Partition()
	// Consul ends a's session, as it does once a's renewals stop for the
	// TTL or a's node is declared dead.
	if _, err := direct.Session().Destroy(kv.Session, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to lead", b.leading.Load)
	waitFor(t, "a to stop leading", func() bool { return !a.leading.Load() })
}
