package platform

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/doraproject/dora/autoscaler/lock"
	"github.com/doraproject/dora/internal/agenttest"
)

// scrape reads one unlabelled metric from url's /metrics.
func scrape(url, name string) (float64, error) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0, fmt.Errorf("%s/metrics has no %s", url, name)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

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
	dir := reachableTempDir(t)
	start := func(name string) *Admin {
		a, err := StartAdmin(context.Background(), AdminConfig{
			Listen:  "127.0.0.1:0",
			Store:   "consul://" + consul.Addr + "/dora-admin-ha",
			Runtime: "nomad://127.0.0.1:1", // no deployment: never called
			Queue:   "bolt://" + filepath.Join(dir, name, "pfop.db"),
			Objects: "file://" + filepath.Join(dir, name, "objects"),
			DataDir: filepath.Join(dir, name),
			RootAK:  prodRootAK, RootSK: prodRootSK,
			Logger: prodLogger().With("admin", name),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	a, b := start("a"), start("b")
	leading := func(x *Admin) bool {
		v, err := scrape(x.URL, "dora_admin_leader")
		return err == nil && v == 1
	}
	passes := func(x *Admin) float64 {
		v, err := scrape(x.URL, "dora_admin_reconcile_passes_total")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	var leader, standby *Admin
	prodEventually(t, "one leader", func() error {
		la, lb := leading(a), leading(b)
		switch {
		case la && lb:
			t.Fatal("two admins lead at once")
		case la:
			leader, standby = a, b
		case lb:
			leader, standby = b, a
		default:
			return fmt.Errorf("no leader yet")
		}
		return nil
	})
	p0 := passes(leader)
	prodEventually(t, "the leader's reconcile passes", func() error {
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
	within := 2*lock.DefaultTTL + 10*time.Second
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
	prodEventually(t, "the standby takes over", func() error {
		if !leading(standby) {
			return fmt.Errorf("not leading")
		}
		if p := passes(standby); p < ps+3 {
			return fmt.Errorf("%v passes", p)
		}
		return nil
	})
}
