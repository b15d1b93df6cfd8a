package router

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/autoscaler/load"
	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/pool"
	"github.com/doraproject/dora/router/origin/httpmirror"
)

func TestMirrorFallback(t *testing.T) {
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/remote/a.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("from the mirror\n"))
	}))
	defer src.Close()
	m := httpmirror.New(httpmirror.Config{Timeout: 5 * time.Second, MaxSize: 1 << 20, AllowPrivate: true})
	e := newEnv(t, func(c *Config) { c.Mirror = m })
	e.put(store.BucketKey("mirrored"), dora.Bucket{Name: "mirrored", Owner: alice.ID, Mirror: src.URL + "/remote/"})
	waitUntil(t, "mirrored bucket", func() bool { b, ok := e.r.meta.Snapshot().Bucket("mirrored"); return ok && b.Mirror != "" })
	e.objs.add("mirrored", "local.txt", "text/plain", []byte("local\n"))
	for _, c := range []struct {
		path, query string
		status      int
		body        string
	}{
		{"/local.txt", "", 200, "local\n"},
		{"/a.txt", "", 200, "from the mirror\n"},
		{"/a.txt", "qhash/md5", 200, md5hex("from the mirror\n")},
		{"/missing.txt", "", 404, ""},
	} {
		pq := c.path
		if c.query != "" {
			pq += "?" + c.query
		}
		resp, body := e.get("mirrored.localhost", pq)
		if resp.StatusCode != c.status || !strings.Contains(string(body), c.body) {
			t.Errorf("%s: %d %q want %d %q", pq, resp.StatusCode, body, c.status, c.body)
		}
	}
	// A bucket without a mirror never reaches it.
	if resp, _ := e.get("photos.localhost", "/a.txt"); resp.StatusCode != 404 {
		t.Errorf("bucket without mirror: %d", resp.StatusCode)
	}
}

// TestPreviousVersionServesDuringSwitch: while the active version has no
// healthy instance, the previous one serves; once it has, it takes over.
func TestPreviousVersionServesDuringSwitch(t *testing.T) {
	e := newEnv(t, nil)
	g := startExample(t, "grepd")
	e.put(store.ReleaseKey("grepd", "v1"), dora.Release{Ufop: "grepd", Version: "v1"})
	e.ufop(dora.Ufop{Name: "grepd", Owner: alice.ID, ActiveVersion: "v2", PreviousVersion: "v1"}, dora.ProtocolDora)
	e.objs.add("photos", "t.txt", "text/plain", []byte("a x\nb\n"))
	e.pool.Update([]pool.Instance{poolInst("old", "grepd", "v1", g.addr)})
	if resp, body := e.get("photos.localhost", "/t.txt?grepd/x"); resp.StatusCode != 200 || string(body) != "a x\n" {
		t.Fatalf("during the switch: %d %q", resp.StatusCode, body)
	}
	e.pool.Update([]pool.Instance{poolInst("old", "grepd", "v1", g.addr), poolInst("new", "grepd", "v2", g.addr)})
	if resp, body := e.get("photos.localhost", "/t.txt?grepd/x"); resp.StatusCode != 200 || string(body) != "a x\n" {
		t.Fatalf("after the switch: %d %q", resp.StatusCode, body)
	}
	hs := e.pool.Hosts(pool.Key{Ufop: "grepd", Version: "v2", Region: "z0"})
	waitUntil(t, "v2 load recorded", func() bool {
		for _, s := range e.load.all() {
			if s.Key.Version == "v2" && s.Completed > 0 {
				return true
			}
		}
		return false
	})
	if len(hs) != 1 {
		t.Fatalf("v2 hosts %d", len(hs))
	}
}

func TestLoadCountersTimeWeighted(t *testing.T) {
	base := time.Unix(1000, 0)
	l := newLoadCounters(base)
	k := load.Key{Ufop: "u", Version: "v1", Region: "z0"}
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	// Second [0,1000): call A runs 0-500, call B runs 250-1000+ (ends at 1500).
	a := l.begin(k, at(0))
	b := l.begin(k, at(250))
	l.end(a, at(500))
	s1 := l.snapshot(at(0), at(1000))
	// Second [1000,2000): B until 1500, C 1800-1900, one waiting refusal.
	l.end(b, at(1500))
	c := l.begin(k, at(1800))
	l.end(c, at(1900))
	l.waiting(k, at(1950))
	s2 := l.snapshot(at(1000), at(2000))
	for _, cse := range []struct {
		got       []load.Sample
		conc      float64
		completed int64
		waiting   int64
	}{
		{s1, (500 + 750) / 1000.0, 1, 0},
		{s2, (500 + 100) / 1000.0, 2, 1},
	} {
		if len(cse.got) != 1 {
			t.Fatalf("samples %v", cse.got)
		}
		s := cse.got[0]
		if math.Abs(s.Concurrency-cse.conc) > 1e-9 || s.Completed != cse.completed || s.Waiting != cse.waiting || s.Key != k {
			t.Errorf("sample %+v want concurrency %v completed %d waiting %d", s, cse.conc, cse.completed, cse.waiting)
		}
	}
	if !s1[0].Time.Equal(base) || !s2[0].Time.Equal(at(1000)) {
		t.Errorf("sample times %v %v", s1[0].Time, s2[0].Time)
	}
	// An idle key keeps reporting zeros, then is forgotten after ten minutes.
	if s := l.snapshot(at(2000), at(3000)); len(s) != 1 || s[0].Concurrency != 0 || s[0].Completed != 0 {
		t.Errorf("idle sample %+v", s)
	}
	l.snapshot(at(3000), at(700_000))
	if s := l.snapshot(at(700_000), at(701_000)); len(s) != 0 {
		t.Errorf("idle key not forgotten: %+v", s)
	}
}

func TestAccessLogAndMetrics(t *testing.T) {
	var buf syncBuffer
	e := newEnv(t, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(&buf, nil)) })
	g := startExample(t, "grepd")
	e.ufop(dora.Ufop{Name: "grepd", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("g0", "grepd", "v1", g.addr)})
	e.objs.add("photos", "a/t.txt", "text/plain", []byte("a x\nb\n"))
	resp, _ := e.get("photos.localhost", "/a/t.txt?grepd/x|qhash/md5")
	reqid := resp.Header.Get("X-Reqid")
	var line map[string]any
	waitUntil(t, "access log line", func() bool {
		for l := range strings.SplitSeq(buf.String(), "\n") {
			if strings.Contains(l, reqid) && strings.Contains(l, `"msg":"access"`) {
				return json.Unmarshal([]byte(l), &line) == nil
			}
		}
		return false
	})
	for k, v := range map[string]any{"bucket": "photos", "key": "a/t.txt", "pipeline": "grepd/x|qhash/md5", "status": float64(200)} {
		if line[k] != v {
			t.Errorf("access log %s = %v want %v (%v)", k, line[k], v, line)
		}
	}
	if line["bytes"].(float64) <= 0 || line["duration"] == nil {
		t.Errorf("access log bytes/duration: %v", line)
	}
	wants := []string{
		`dora_router_requests_total{code="200",ufop="grepd"} 1`,
		`dora_router_requests_total{code="200",ufop="qhash"} 1`,
		`dora_router_step_seconds_count{ufop="grepd"} 1`,
		`dora_router_healthy_instances{region="z0",ufop="grepd",version="v1"} 1`,
		`dora_router_inflight_calls{region="z0",ufop="grepd",version="v1"} 0`,
		`dora_router_request_duration_seconds_count`,
		`dora_router_held_requests 0`,
		`dora_router_sent_bytes_total`,
		`dora_router_read_bytes_total`,
	}
	var missing []string
	deadline := time.Now().Add(10 * time.Second) // the request is counted once its body is sent
	for {
		_, body := e.get("localhost", "/metrics")
		missing = missing[:0]
		for _, want := range wants {
			if !strings.Contains(string(body), want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, m := range missing {
		t.Errorf("metrics lack %s", m)
	}
}

// syncBuffer is the shared concurrent-safe log sink.
type syncBuffer = agenttest.SyncBuffer

// Step names an anonymous client makes up never become metric labels:
// N junk names are one "unknown" series, whatever status they got.
func TestJunkStepNamesOneSeries(t *testing.T) {
	e := newEnv(t, nil)
	e.objs.add("photos", "k", "text/plain", []byte("hello"))
	const n = 20
	for i := range n {
		if resp, _ := e.get("photos.localhost", fmt.Sprintf("/k?junkname%d/x", i)); resp.StatusCode != 404 {
			t.Fatalf("junk step: %d", resp.StatusCode)
		}
		if resp, _ := e.get("secret.localhost", fmt.Sprintf("/k?junkname%d", i)); resp.StatusCode != 401 {
			t.Fatalf("junk step without a token: %d", resp.StatusCode)
		}
	}
	e.get("photos.localhost", "/k?qhash/md5") // a checked name keeps its label
	want := map[string]float64{"unknown/404": n, "unknown/401": n, "qhash/200": 1}
	waitUntil(t, "the requests counted", func() bool {
		got := map[string]float64{}
		mfs, err := e.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "dora_router_requests_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				var ufop, code string
				for _, l := range m.GetLabel() {
					switch l.GetName() {
					case "ufop":
						ufop = l.GetValue()
					case "code":
						code = l.GetValue()
					}
				}
				got[ufop+"/"+code] = m.GetCounter().GetValue()
			}
		}
		if len(got) > len(want) {
			t.Fatalf("series %v, want only %v", got, want)
		}
		return maps.Equal(got, want)
	})
}
