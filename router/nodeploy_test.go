package router

import (
	"context"
	"strings"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/meta"
)

// noDeploymentEnv is a router with one ufop "sleeper" whose active version
// v1 has no deployment, holding requests for up to ten minutes.
func noDeploymentEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	e := newEnv(t, func(c *Config) {
		c.HoldTimeout = 10 * time.Minute
		if mod != nil {
			mod(c)
		}
	})
	e.ufop(dora.Ufop{Name: "sleeper", Owner: alice.ID}, dora.ProtocolDora)
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	return e
}

// answered is the answer to a request expected long before the hold bound
// (ten minutes): a minute is a guard against a hang, not a timing asserted.
func answered(t *testing.T, res <-chan result) result {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(time.Minute):
		t.Fatal("no answer after a minute: the request was held")
		return result{}
	}
}

// TestNoDeploymentAnswersAtOnce: a request for an active version that has
// no deployment in the router's region (`qdoractl ufopver -c` before any
// resize or deploy), or only one its owner stopped (`qdoractl stop`), is
// not held for an instance that nothing will start: 503 at once saying so
// and what to run, without Retry-After (only the owner changes it). Each
// case is a step after an input step, so the step number is checked too.
func TestNoDeploymentAnswersAtOnce(t *testing.T) {
	cases := []struct {
		name string
		deps []dora.Deployment
		says []string
	}{
		{"none", nil, []string{"no deployment of sleeper v1 in z0", "qdoractl resize sleeper -num 1", "qdoractl deploy sleeper v1"}},
		{"only replaced", []dora.Deployment{{ID: "d0", Status: dora.DeployReplaced}}, []string{"no deployment of sleeper v1 in z0"}},
		{"stopped", []dora.Deployment{{ID: "d1", Status: dora.DeployStopped, Message: "all instances stopped"}},
			[]string{"sleeper v1 in z0 was stopped by its owner (all instances stopped)", "qdoractl start sleeper"}},
		{"stopped and failed", []dora.Deployment{
			{ID: "d1", Status: dora.DeployFailed, Message: "crashed"},
			{ID: "d2", Status: dora.DeployStopped},
		}, []string{"was stopped by its owner", "qdoractl start sleeper"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := noDeploymentEnv(t, nil)
			for _, d := range c.deps {
				d.Ufop, d.Version, d.Region = "sleeper", "v1", "z0"
				e.put(store.DeploymentKey(d.Ufop, d.ID), d)
			}
			if len(c.deps) > 0 {
				waitUntil(t, "deployments in the snapshot", func() bool {
					st, _ := e.r.meta.Snapshot().Deployments("sleeper", "v1", "z0")
					return st != meta.NoDeployment || c.deps[0].Status == dora.DeployReplaced
				})
			}
			r := answered(t, e.getAsync("/k?qhash/md5|sleeper/x"))
			if r.status != 503 || r.retry != "" {
				t.Fatalf("answer %+v, want 503 without Retry-After", r)
			}
			msg := jsonError(t, []byte(r.body))
			for _, s := range c.says {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not say %q", msg, s)
				}
			}
			if n := e.r.Held(); n != 0 {
				t.Fatalf("held = %d after the answer", n)
			}
		})
	}
}

// TestHoldStoppedWhileHeld: a request held for an instance of a deployment
// scaled to zero is answered as soon as the router sees its owner stop it.
func TestHoldStoppedWhileHeld(t *testing.T) {
	e := holdEnv(t, 10*time.Minute, 10)
	res := e.getAsync("/k?sleeper/x")
	waitUntil(t, "request held", func() bool { return e.r.Held() == 1 })
	e.put(store.DeploymentKey("sleeper", "d1"), dora.Deployment{ID: "d1", Ufop: "sleeper", Version: "v1", Region: "z0", Status: dora.DeployStopped})
	r := answered(t, res)
	if r.status != 503 || r.retry != "" || !strings.Contains(r.body, "qdoractl start sleeper") {
		t.Fatalf("held request: %+v", r)
	}
}

// laggingStore delays the deployments' watch: its first listing goes
// through, the later ones only once release is closed (a watch slower
// than the admin's write and the request that follows it).
type laggingStore struct {
	store.Store
	release chan struct{}
}

func (s *laggingStore) Watch(ctx context.Context, prefix string) (<-chan []store.KV, error) {
	in, err := s.Store.Watch(ctx, prefix)
	if err != nil || prefix != store.PrefixDeployments {
		return in, err
	}
	out := make(chan []store.KV)
	go func() {
		defer close(out)
		first := true
		for kvs := range in {
			if !first {
				select {
				case <-s.release:
				case <-ctx.Done():
					return
				}
			}
			first = false
			select {
			case out <- kvs:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// TestHoldDeploymentNotYetWatched: a deployment made just before a request
// (`qdoractl resize`, then the request at once) that the router's watch has
// not brought yet does not get the request refused: the router reads the
// store before refusing, holds the request, and serves it when the
// instance comes.
func TestHoldDeploymentNotYetWatched(t *testing.T) {
	lag := &laggingStore{release: make(chan struct{})}
	defer close(lag.release)
	e := noDeploymentEnv(t, func(c *Config) {
		lag.Store = c.Store
		c.Store = lag
	})
	e.put(store.DeploymentKey("sleeper", "d1"), dora.Deployment{ID: "d1", Ufop: "sleeper", Version: "v1", Region: "z0",
		Expect: 1, Max: 5, Desired: 1, Status: dora.DeployPending})
	res := e.getAsync("/k?sleeper/x")
	waitUntil(t, "request held", func() bool { return e.r.Held() == 1 })
	if st, _ := e.r.meta.Snapshot().Deployments("sleeper", "v1", "z0"); st != meta.NoDeployment {
		t.Fatalf("the snapshot has the deployment (state %d): the watch did not lag", st)
	}
	e.pool.Update([]pool.Instance{poolInst("s0", "sleeper", "v1", capsInstance(t))})
	if r := answered(t, res); r.status != 200 || r.body != "ABC" {
		t.Fatalf("held request: %+v", r)
	}
}

// TestNoActiveVersion: a ufop with no active version is answered 503
// without Retry-After (only its owner activating one changes that), naming
// the command.
func TestNoActiveVersion(t *testing.T) {
	e := newEnv(t, nil)
	u := dora.Ufop{Name: "idle", Owner: alice.ID}
	e.put(store.UfopKey(u.Name), u)
	waitUntil(t, "ufop in the snapshot", func() bool {
		_, ok := e.r.meta.Snapshot().Ufop(u.Name)
		return ok
	})
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	resp, body := e.get("photos.localhost", "/k?idle/x")
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "" {
		t.Fatalf("status %d Retry-After %q (%s)", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if msg := jsonError(t, body); !strings.Contains(msg, "has no active version") || !strings.Contains(msg, "qdoractl ufopver idle -c") {
		t.Fatalf("error %q", msg)
	}
}
