package platform

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/cli/platform/platformtest"
	"github.com/doraproject/dora/internal/agenttest"
)

// TestAdminsElectOneLeader runs two admins on one Consul store: exactly
// one leads and only its reconcile passes count; when the leader's Consul
// session dies (as when its process is killed and the TTL runs out) a
// leader is back within the failover bound, and when the leader closes the
// other one takes over.
func TestAdminsElectOneLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Consul")
	}
	consul := agenttest.StartConsul(t)
	cc, err := ConsulClient("consul://" + consul.Addr)
	if err != nil {
		t.Fatal(err)
	}
	dir := platformtest.ReachableTempDir(t)
	start := func(name string) *Admin {
		a, err := StartAdmin(context.Background(), AdminConfig{
			Listen:  "127.0.0.1:0",
			Store:   "consul://" + consul.Addr + "/dora-admin-ha",
			Runtime: "nomad://127.0.0.1:1", // no deployment: never called
			Queue:   "bolt://" + filepath.Join(dir, name, "pfop.db"),
			Objects: "file://" + filepath.Join(dir, name, "objects"),
			DataDir: filepath.Join(dir, name),
			RootAK:  prodRootAK, RootSK: prodRootSK,
			Logger: platformtest.Logger().With("admin", name),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	a, b := start("a"), start("b")
	leading := func(x *Admin) bool {
		v, err := platformtest.Metric(http.DefaultClient, x.URL, "dora_admin_leader")
		return err == nil && v == 1
	}
	passes := func(x *Admin) float64 {
		v, err := platformtest.Metric(http.DefaultClient, x.URL, "dora_admin_reconcile_passes_total")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	leader, standby := platformtest.OneLeads(t, prodWait, "one admin leads", a, b, func(x *Admin) (bool, error) { return leading(x), nil })
	p0 := passes(leader)
	platformtest.Eventually(t, prodWait, "the leader's reconcile passes", func() error {
		if p := passes(leader); p < p0+3 {
			return fmt.Errorf("%v passes", p)
		}
		return nil
	})
	if p := passes(standby); p != 0 || leading(standby) {
		t.Fatalf("the standby ran %v reconcile passes", p)
	}

	// The leader's session dies: a leader is back (either admin may win the
	// new term) within the TTL, Consul's stretch of it, and the lock delay.
	key := "dora-admin-ha/" + AdminLockKey
	kv, _, err := cc.KV().Get(key, nil)
	if err != nil || kv == nil || kv.Session == "" {
		t.Fatalf("lock key %s = %+v, %v", key, kv, err)
	}
	if _, err := cc.Session().Destroy(kv.Session, nil); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	// A hang bound, not a timing assertion: the new term normally comes
	// within the TTL, Consul's stretch of it and the lock delay (about
	// 2*lock.DefaultTTL), which a loaded machine stretches further.
	within := prodWait
	for {
		kv2, _, err := cc.KV().Get(key, nil)
		if err == nil && kv2 != nil && kv2.Session != "" && kv2.Session != kv.Session && leading(a) != leading(b) {
			break
		}
		if time.Since(t0) > within {
			t.Fatalf("no new leader within %v of the session's death", within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if leading(b) {
		leader, standby = b, a
	} else {
		leader, standby = a, b
	}

	// The leader closes: the standby takes over and counts passes.
	ps := passes(standby)
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	platformtest.Eventually(t, prodWait, "the standby takes over", func() error {
		if !leading(standby) {
			return fmt.Errorf("not leading")
		}
		if p := passes(standby); p < ps+3 {
			return fmt.Errorf("%v passes", p)
		}
		return nil
	})
}

// TestAdminStartsWhileItsStoreIsDown: an admin whose Consul store cannot
// be reached at start serves (it exited: "root account in consul://...:
// connection refused", where the other roles wait for their backends) and
// makes sure of the root account once Consul is back: the root keys then
// work.
func TestAdminStartsWhileItsStoreIsDown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Consul")
	}
	consul := agenttest.StartConsul(t)
	consul.Stop()
	dir := platformtest.ReachableTempDir(t)
	a, err := StartAdmin(context.Background(), AdminConfig{
		Listen:  "127.0.0.1:0",
		Store:   "consul://" + consul.Addr + "/dora-down",
		Runtime: "nomad://127.0.0.1:1", // no deployment: never called
		Queue:   "bolt://" + filepath.Join(dir, "pfop.db"),
		Objects: "file://" + filepath.Join(dir, "objects"),
		DataDir: dir,
		RootAK:  prodRootAK, RootSK: prodRootSK,
		Logger: platformtest.Logger(),
	})
	if err != nil {
		t.Fatalf("an admin whose store is down did not start: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	resp, err := http.Get(a.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	consul.Start()
	c := client.New(a.URL, prodRootAK, prodRootSK)
	platformtest.Eventually(t, prodWait, "the root keys work once Consul is back", func() error {
		acct, err := c.Whoami(context.Background())
		if err == nil && !acct.Root {
			return fmt.Errorf("whoami: %+v, not root", acct)
		}
		return err
	})
}
