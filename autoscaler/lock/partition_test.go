package lock

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/doraproject/dora/internal/agenttest"
)

// TestPartitionedLeaderStepsDown: an autoscaler cut off from its Consul
// agent (silent connections: a partition, a hung agent) whose session
// Consul then ends must stop leading once another takes the lock, rather
// than wait forever on the lock's watch and scale alongside the new
// leader; and, still cut off, its Run must return when its context ends
// rather than hang releasing the lock or campaigning on a silent
// connection.
func TestPartitionedLeaderStepsDown(t *testing.T) {
	agent := agenttest.StartConsul(t)
	direct := client(t, agent)
	p := agenttest.StartFaultProxy(t, agent.Addr)
	cfg := api.DefaultConfig()
	cfg.Address = p.Addr()
	proxied, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const key = "dora/autoscaler/partition"
	b := &board{}
	opts := Options{LockDelay: 100 * time.Millisecond}
	a := start(t, proxied, key, "a", b, opts)
	waitFor(t, failover, "a to lead", a.leading.Load)
	// c on its own board: a's would see the overlap this test is about.
	c := start(t, direct, key, "c", &board{}, opts)
	t.Cleanup(p.Heal) // runs before the contenders' cleanups: frees a stuck a

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
	waitFor(t, failover, "c to lead", c.leading.Load)
	waitFor(t, failover, "a to stop leading", func() bool { return !a.leading.Load() })

	a.cancel()
	waitReturn(t, a.done, "a's Run, cut off")
	a.done <- nil // for its cleanup
}

func TestJudge(t *testing.T) {
	t0 := time.Unix(1000, 0)
	budget := 5 * time.Second
	failed := errors.New("read timed out")
	cases := []struct {
		name             string
		now, start, conf time.Time
		holder           string
		err              error
		wantConf         time.Time
		want             verdict
	}{
		{"ours", t0.Add(2 * time.Second), t0.Add(time.Second), t0, "s1", nil, t0.Add(time.Second), held},
		{"another session", t0.Add(time.Second), t0, t0, "s2", nil, t0, taken},
		{"no holder", t0.Add(time.Second), t0, t0, "", nil, t0, taken},
		{"error within the budget", t0.Add(4 * time.Second), t0, t0, "", failed, t0, held},
		{"error past the budget", t0.Add(5 * time.Second), t0, t0, "", failed, t0, unconfirmed},
	}
	for _, c := range cases {
		conf, v := judge(c.now, c.start, c.conf, budget, "s1", c.holder, c.err)
		if !conf.Equal(c.wantConf) || v != c.want {
			t.Errorf("%s: judge = %v, %v; want %v, %v", c.name, conf, v, c.wantConf, c.want)
		}
	}
}
