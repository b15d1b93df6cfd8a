package consul

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/pool"
	"github.com/prometheus/client_golang/prometheus"
)

// describe renders a set as "id@addr/version/region,..." for comparisons.
func describe(set []pool.Instance) string {
	parts := make([]string, len(set))
	for i, in := range set {
		parts[i] = in.ID + "@" + in.Addr + "/" + in.Ufop + "/" + in.Version + "/" + in.Region
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// watcher collects every set a Watch sends.
type watcher struct {
	t    *testing.T
	ch   <-chan []pool.Instance
	seen []string
}

func startWatch(t *testing.T, d *Discovery) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	ch := d.Watch(ctx)
	t.Cleanup(func() {
		cancel()
		for range ch { // returns once every query goroutine has stopped
		}
	})
	return &watcher{t: t, ch: ch}
}

// waitFor receives sets until one equals want; the deadline only guards
// against a hang.
func (w *watcher) waitFor(want string) {
	w.t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case set, ok := <-w.ch:
			if !ok {
				w.t.Fatal("watch closed")
			}
			got := describe(set)
			w.seen = append(w.seen, got)
			if got == want {
				return
			}
		case <-deadline:
			w.t.Fatalf("never got %s; sets seen: %v", want, w.seen)
		}
	}
}

func newDiscovery(t *testing.T, a *agenttest.Consul, logs *syncBuffer, reg prometheus.Registerer) *Discovery {
	return New(Config{
		Client:     clientFor(t, a),
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Metrics:    reg,
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
		WaitTime:   10 * time.Second,
	})
}

func TestWatchPassingOnly(t *testing.T) {
	a := agenttest.StartConsul(t)
	c := clientFor(t, a)
	v1 := map[string]string{"version": "v1", "region": "z0"}
	registerTTL(t, c, "ufop-grepd", "g1", 9101, nil, v1, "passing")
	registerTTL(t, c, "ufop-grepd", "g2", 9102, []string{"version=v1", "region=z0"}, nil, "critical")
	registerTTL(t, c, "redis", "r1", 6379, []string{"version=v1"}, nil, "passing") // not a ufop

	// Agent registrations reach the catalog asynchronously: wait for them,
	// so that the first set sent is known.
	poll(t, "catalog synced", func() bool {
		all, _, err := c.Health().Service("ufop-grepd", "", false, nil)
		return err == nil && len(all) == 2
	})
	d := newDiscovery(t, a, &syncBuffer{}, nil)
	w := startWatch(t, d)

	const (
		g1 = "g1@127.0.0.1:9101/grepd/v1/z0"
		g2 = "g2@127.0.0.1:9102/grepd/v1/z0"
		w1 = "w1@127.0.0.1:9201/wordcount/v2/z1"
	)
	w.waitFor("[" + g1 + "]")
	if w.seen[0] != "["+g1+"]" {
		t.Fatalf("first set %s: the first send must be complete", w.seen[0])
	}

	setTTL(t, c, "g2", "passing")
	w.waitFor("[" + g1 + "," + g2 + "]")

	setTTL(t, c, "g1", "critical")
	w.waitFor("[" + g2 + "]")

	registerTTL(t, c, "ufop-wordcount", "w1", 9201, []string{"version=v2", "region=z1"}, nil, "passing")
	w.waitFor("[" + g2 + "," + w1 + "]")

	if err := c.Agent().ServiceDeregister("w1"); err != nil {
		t.Fatal(err)
	}
	w.waitFor("[" + g2 + "]")

	setTTL(t, c, "g2", "critical")
	w.waitFor("[]") // no passing instance left: the empty set is the truth here

	for _, s := range w.seen {
		if strings.Contains(s, "r1@") {
			t.Fatalf("a service without the prefix was reported: %s", s)
		}
	}
}

func TestOutageKeepsLastKnownInstances(t *testing.T) {
	a := agenttest.StartConsul(t)
	c := clientFor(t, a)
	registerTTL(t, c, "ufop-grepd", "g1", 9101, []string{"version=v1"}, nil, "passing")

	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	d := newDiscovery(t, a, logs, reg)
	w := startWatch(t, d)
	const g1 = "[g1@127.0.0.1:9101/grepd/v1/z0]"
	w.waitFor(g1)
	if !d.Up() || gauge(t, reg, "dora_discovery_consul_up") != 1 {
		t.Fatal("discovery should be up")
	}

	a.Stop()
	// Let several retries fail, then check nothing was sent.
	poll(t, "errors counted", func() bool { return gauge(t, reg, "dora_discovery_consul_errors_total") >= 5 })
	if d.Up() || gauge(t, reg, "dora_discovery_consul_up") != 0 {
		t.Fatal("discovery should be down")
	}
	select {
	case set := <-w.ch:
		t.Fatalf("sent %s during the outage; the last known set must stay", describe(set))
	default:
	}
	if n := logs.Count("consul unreachable, serving last known instances"); n != 1 {
		t.Fatalf("outage logged %d times, want once; logs:\n%s", n, logs)
	}

	// Dev mode loses the catalog; the agent may restore its own services
	// from its data dir. Deregister g1 and register g3 so that the set to
	// wait for is known either way.
	a.Start()
	_ = c.Agent().ServiceDeregister("g1") // fails when g1 was not restored
	registerTTL(t, c, "ufop-grepd", "g3", 9103, []string{"version=v1"}, nil, "passing")
	w.waitFor("[g3@127.0.0.1:9103/grepd/v1/z0]")
	poll(t, "up again", d.Up)
	if n := logs.Count("consul reachable again"); n != 1 {
		t.Fatalf("recovery logged %d times, want once; logs:\n%s", n, logs)
	}
	if gauge(t, reg, "dora_discovery_consul_up") != 1 || gauge(t, reg, "dora_discovery_consul_instances") != 1 {
		t.Fatal("metrics not back to up with one instance")
	}
}

func TestWatchWhileConsulDownSendsNothingUntilItAnswers(t *testing.T) {
	a := agenttest.StartConsul(t)
	c := clientFor(t, a)
	a.Stop()
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	d := newDiscovery(t, a, logs, reg)
	if d.Up() {
		t.Fatal("Up before any query answered")
	}
	w := startWatch(t, d)
	poll(t, "errors counted", func() bool { return gauge(t, reg, "dora_discovery_consul_errors_total") >= 3 })
	select {
	case set := <-w.ch:
		t.Fatalf("sent %s before Consul ever answered", describe(set))
	default:
	}
	a.Start()
	registerTTL(t, c, "ufop-grepd", "g1", 9101, []string{"version=v1"}, nil, "passing")
	w.waitFor("[g1@127.0.0.1:9101/grepd/v1/z0]")
}

// gauge reads a gauge or counter without labels from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
		}
	}
	return -1
}

// poll waits until cond holds; the deadline only guards against a hang.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 60s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
