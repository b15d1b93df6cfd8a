package admin

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/doraproject/dora"
)

// The console's charts are kept by ufop name: once alice deleted grepd
// and bob registered a ufop of that name, bob saw the last hour of
// alice's traffic (requests, errors, latency, instances).
func TestStatsOfAReusedUfopNameStartAtItsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dora_router_requests_total"}, []string{"ufop", "code"})
	reg.MustRegister(reqs)
	var mu sync.Mutex
	clock := time.Now().Add(-12 * time.Minute)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	set := func(t time.Time) { mu.Lock(); defer mu.Unlock(); clock = t }
	e := newEnv(t, func(c *Config) { c.StatsGatherer, c.Now = reg, now })
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	start := now().Add(time.Minute)
	for i := 0; i < 3; i++ {
		reqs.WithLabelValues("grepd", "200").Add(100)
		if err := e.srv.stats.Sample(start.Add(time.Duration(i) * time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	var got statsReply
	e.must(http.StatusOK, alice, "GET", "/v1/stats?ufop=grepd", nil, &got)
	if len(got.Ufops["grepd"]) != 3 {
		t.Fatalf("alice's own stats: %+v", got)
	}
	e.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/grepd", nil, nil)
	set(start.Add(10 * time.Minute))
	e.ufop(bob, "grepd", dora.ModePrivate)
	got = statsReply{}
	e.must(http.StatusOK, bob, "GET", "/v1/stats?ufop=grepd", nil, &got)
	if pts := got.Ufops["grepd"]; len(pts) != 0 {
		t.Fatalf("bob sees %d points of alice's grepd: %+v", len(pts), pts)
	}
}
