package router

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/meta"
)

// holdEnv is a router with one ufop "sleeper" (v1) whose deployment "d1"
// in z0 was scaled to zero: no instance.
func holdEnv(t *testing.T, timeout time.Duration, maxHeld int) *env {
	t.Helper()
	e := newEnv(t, func(c *Config) {
		c.HoldTimeout = timeout
		c.MaxHeld = maxHeld
	})
	e.ufop(dora.Ufop{Name: "sleeper", Owner: alice.ID}, dora.ProtocolDora)
	e.scaledToZero("d1", "sleeper", "v1")
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	return e
}

// scaledToZero records deployment id of ufop's version in z0 as the admin
// records one with floor 0 that the autoscaler scaled to zero (RUNNING, no
// instance), and waits until the router's snapshot has it.
func (e *env) scaledToZero(id, ufop, version string) {
	e.t.Helper()
	e.deployment(dora.Deployment{ID: id, Ufop: ufop, Version: version, Region: "z0", Max: 2,
		Status: dora.DeployRunning, Message: "scaled to zero: the next request starts an instance"})
}

// deployment records d and waits until the router's snapshot sums up its
// key's deployments as d's status alone would.
func (e *env) deployment(d dora.Deployment) {
	e.t.Helper()
	e.put(store.DeploymentKey(d.Ufop, d.ID), d)
	want := meta.NewSnapshot(meta.Data{Deployments: []dora.Deployment{d}})
	waitUntil(e.t, "deployment "+d.ID+" in the snapshot", func() bool {
		gs, gm := e.r.meta.Snapshot().Deployments(d.Ufop, d.Version, d.Region)
		ws, wm := want.Deployments(d.Ufop, d.Version, d.Region)
		return gs == ws && gm == wm
	})
}

type result struct {
	status int
	retry  string
	body   string
}

// getAsync GETs in the background; the result arrives on the channel.
func (e *env) getAsync(pathQuery string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		resp, body := e.get("photos.localhost", pathQuery)
		ch <- result{resp.StatusCode, resp.Header.Get("Retry-After"), string(body)}
	}()
	return ch
}

func capsInstance(t *testing.T) string {
	return fakeInstance(t, func(w http.ResponseWriter, r *http.Request, in io.Reader) {
		b, _ := io.ReadAll(in)
		w.Write([]byte(strings.ToUpper(string(b))))
	})
}

var sleeperKey = pool.Key{Ufop: "sleeper", Version: "v1", Region: "z0"}

// TestHoldUntilInstance: a request for a ufop without an instance waits,
// is reported as Waiting demand, and goes through once an instance is in
// the pool.
func TestHoldUntilInstance(t *testing.T) {
	e := holdEnv(t, time.Minute, 10)
	res := e.getAsync("/k?sleeper/x")
	waitUntil(t, "request held", func() bool { return e.r.Held() == 1 })
	if _, body := e.get("localhost", "/metrics"); !strings.Contains(string(body), "\ndora_router_held_requests 1\n") {
		t.Errorf("metrics do not show the held request:\n%s", body)
	}
	waitUntil(t, "waiting demand recorded", func() bool {
		for _, s := range e.load.all() {
			if s.Key.Ufop == "sleeper" && s.Waiting >= 1 && s.Concurrency > 0 {
				return true
			}
		}
		return false
	})
	select {
	case r := <-res:
		t.Fatalf("answered while no instance exists: %+v", r)
	default:
	}
	e.pool.Update([]pool.Instance{poolInst("s0", "sleeper", "v1", capsInstance(t))})
	r := <-res
	if r.status != 200 || r.body != "ABC" {
		t.Fatalf("after the instance came: %+v", r)
	}
	if n := e.r.Held(); n != 0 {
		t.Fatalf("held = %d after the answer", n)
	}
}

// TestHoldEndsInVain: a request held for an instance (with a ten-minute
// hold bound) is answered as soon as waiting cannot bring one: the 503
// naming the failure once the version's deployment is FAILED, the 404
// once the ufop is deleted.
func TestHoldEndsInVain(t *testing.T) {
	cases := []struct {
		name   string
		change func(t *testing.T, e *env)
		status int
		says   string
	}{
		{"deployment FAILED", func(_ *testing.T, e *env) {
			e.put(store.DeploymentKey("sleeper", "d1"), dora.Deployment{
				ID: "d1", Ufop: "sleeper", Version: "v1", Region: sleeperKey.Region,
				Status: dora.DeployFailed, Message: "image has no entrypoint",
			})
		}, 503, "deployment FAILED: image has no entrypoint"},
		{"ufop deleted", func(t *testing.T, e *env) {
			if err := e.st.Delete(t.Context(), store.UfopKey("sleeper")); err != nil {
				t.Fatal(err)
			}
		}, 404, `no such ufop \"sleeper\"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := holdEnv(t, 10*time.Minute, 10)
			res := e.getAsync("/k?sleeper/x")
			waitUntil(t, "request held", func() bool { return e.r.Held() == 1 })
			c.change(t, e)
			select {
			case r := <-res:
				if r.status != c.status || (c.status == 503) != (r.retry != "") || !strings.Contains(r.body, c.says) {
					t.Fatalf("held request: %+v, want %d saying %s", r, c.status, c.says)
				}
			case <-time.After(time.Minute):
				t.Fatal("the held request was not answered")
			}
			if n := e.r.Held(); n != 0 {
				t.Fatalf("held = %d after the answer", n)
			}
		})
	}
}

// TestHoldFollowsVersion: a request held for an instance of the active
// version (a ten-minute hold bound) goes to the version a request would
// take now as soon as the ufop's versions move: a new active version that
// has an instance, in either input mode (the POST body, url=), or the
// previous version healthy again while the active one still has none.
func TestHoldFollowsVersion(t *testing.T) {
	cases := []struct {
		name   string
		before func(t *testing.T, e *env) // before the request
		move   func(t *testing.T, e *env)
	}{
		{"new active version, body", nil, func(t *testing.T, e *env) {
			e.pool.Update([]pool.Instance{poolInst("s2", "sleeper", "v2", capsInstance(t))})
			e.ufopRelease(dora.Ufop{Name: "sleeper", Owner: alice.ID, ActiveVersion: "v2", PreviousVersion: "v1"}, dora.Release{Protocol: dora.ProtocolDora})
		}},
		{"new active version, url=", nil, func(t *testing.T, e *env) {
			e.pool.Update([]pool.Instance{poolInst("s2", "sleeper", "v2", capsInstance(t))})
			e.ufopRelease(dora.Ufop{Name: "sleeper", Owner: alice.ID, ActiveVersion: "v2", PreviousVersion: "v1"}, dora.Release{Protocol: dora.ProtocolDora, BodyLimit: -1})
		}},
		{"previous version healthy", func(t *testing.T, e *env) {
			// v2 is active, and neither it nor v1 has an instance: the
			// request waits for v2.
			e.scaledToZero("d2", "sleeper", "v2")
			e.ufopRelease(dora.Ufop{Name: "sleeper", Owner: alice.ID, ActiveVersion: "v2", PreviousVersion: "v1"}, dora.Release{Protocol: dora.ProtocolDora})
		}, func(t *testing.T, e *env) {
			e.pool.Update([]pool.Instance{poolInst("s1", "sleeper", "v1", capsInstance(t))})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := holdEnv(t, 10*time.Minute, 10)
			if c.before != nil {
				c.before(t, e)
			}
			res := e.getAsync("/k?sleeper/x")
			waitUntil(t, "request held", func() bool { return e.r.Held() == 1 })
			c.move(t, e)
			select {
			case r := <-res:
				if r.status != 200 || r.body != "ABC" {
					t.Fatalf("held request: %+v", r)
				}
			case <-time.After(time.Minute):
				t.Fatal("the held request was not answered")
			}
			if n := e.r.Held(); n != 0 {
				t.Fatalf("held = %d after the answer", n)
			}
		})
	}
}

// TestHoldBounds: past HoldTimeout, 503 with Retry-After; beyond MaxHeld,
// 503 at once; a negative HoldTimeout disables holding.
func TestHoldBounds(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		e := holdEnv(t, 300*time.Millisecond, 10)
		r := <-e.getAsync("/k?sleeper/x")
		if r.status != 503 || r.retry == "" {
			t.Fatalf("after the hold bound: %+v", r)
		}
		if msg := jsonError(t, []byte(r.body)); !strings.Contains(msg, "sleeper") {
			t.Fatalf("error %q does not name the ufop", msg)
		}
		if e.r.Held() != 0 {
			t.Fatalf("held = %d", e.r.Held())
		}
	})
	t.Run("queue full", func(t *testing.T) {
		e := holdEnv(t, time.Minute, 1)
		first := e.getAsync("/k?sleeper/x")
		waitUntil(t, "first request held", func() bool { return e.r.Held() == 1 })
		r := <-e.getAsync("/k?qhash/md5|sleeper/y")
		if r.status != 503 || r.retry == "" || !strings.Contains(r.body, "already wait") {
			t.Fatalf("beyond MaxHeld: %+v", r)
		}
		e.pool.Update([]pool.Instance{poolInst("s0", "sleeper", "v1", capsInstance(t))})
		if r := <-first; r.status != 200 || r.body != "ABC" {
			t.Fatalf("held request: %+v", r)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		e := holdEnv(t, -1, 10)
		r := <-e.getAsync("/k?sleeper/x")
		if r.status != 503 || r.retry == "" {
			t.Fatalf("without holding: %+v", r)
		}
	})
}

// TestHoldClientGone: a client that hangs up releases its slot long before
// the hold bound.
func TestHoldClientGone(t *testing.T) {
	e := holdEnv(t, 10*time.Minute, 10)
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET /k?sleeper/x HTTP/1.1\r\nHost: photos.localhost\r\n\r\n")
	waitUntil(t, "request held", func() bool { return e.r.Held() == 1 })
	c.Close()
	waitUntil(t, "slot released", func() bool { return e.r.Held() == 0 })

	// A client that stays gets its answer on the same connection, and a
	// pipelined second request is not mistaken for a hang-up.
	c2, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprintf(c2, "GET /k?sleeper/x HTTP/1.1\r\nHost: photos.localhost\r\n\r\nGET /k HTTP/1.1\r\nHost: photos.localhost\r\n\r\n")
	waitUntil(t, "request held", func() bool { return e.r.Held() == 1 })
	time.Sleep(3 * watchPoll) // let the watch peek at the pipelined bytes a few times
	if e.r.Held() != 1 {
		t.Fatal("a pipelined request released the hold")
	}
	e.pool.Update([]pool.Instance{poolInst("s0", "sleeper", "v1", capsInstance(t))})
	br := bufio.NewReader(c2)
	for i, want := range []string{"ABC", "abc"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != want {
			t.Fatalf("response %d: %d %q, want %q", i, resp.StatusCode, body, want)
		}
	}
}
