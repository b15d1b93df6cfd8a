package pool

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

var (
	keyA = Key{Ufop: "grepd", Version: "v1", Region: "z0"}
	keyB = Key{Ufop: "grepd", Version: "v2", Region: "z0"}
	t0   = time.Unix(1_700_000_000, 0)
)

func inst(k Key, id, addr string) Instance {
	return Instance{ID: id, Ufop: k.Ufop, Version: k.Version, Region: k.Region, Addr: addr}
}

// hostsByID returns the pool's hosts of k indexed by instance ID.
func hostsByID(p *Pool, k Key) map[string]*Host {
	m := map[string]*Host{}
	for _, h := range p.Hosts(k) {
		m[h.Instance().ID] = h
	}
	return m
}

func threeHosts(t *testing.T) (*Pool, map[string]*Host) {
	t.Helper()
	p := New(Options{})
	p.Update([]Instance{inst(keyA, "a", "127.0.0.1:1"), inst(keyA, "b", "127.0.0.1:2"), inst(keyA, "c", "127.0.0.1:3")})
	return p, hostsByID(p, keyA)
}

func ejectNow(h *Host, now time.Time) {
	for i := 0; i < h.opts.EjectAfter; i++ {
		h.ConnectFailed(now)
	}
}

func TestPick(t *testing.T) {
	tests := []struct {
		name  string
		setup func(hs map[string]*Host) // load, eject
		avoid string
		key   Key
		want  []string // every pick is one of these, and each appears; empty: always nil
	}{
		{name: "unknown key", key: keyB},
		{name: "all eligible", key: keyA, want: []string{"a", "b", "c"}},
		{name: "most loaded never wins", key: keyA, setup: func(hs map[string]*Host) {
			hs["c"].Begin()
		}, want: []string{"a", "b"}},
		{name: "avoid", key: keyA, avoid: "b", want: []string{"a", "c"}},
		{name: "ejected skipped", key: keyA, setup: func(hs map[string]*Host) {
			ejectNow(hs["a"], t0)
		}, want: []string{"b", "c"}},
		{name: "ejected and avoid leave one", key: keyA, avoid: "c", setup: func(hs map[string]*Host) {
			ejectNow(hs["a"], t0)
		}, want: []string{"b"}},
		{name: "all ejected gives nil", key: keyA, setup: func(hs map[string]*Host) {
			for _, h := range hs {
				ejectNow(h, t0)
			}
		}},
		{name: "avoid the only eligible gives nil", key: keyA, avoid: "b", setup: func(hs map[string]*Host) {
			ejectNow(hs["a"], t0)
			ejectNow(hs["c"], t0)
		}},
		{name: "slow path still prefers less loaded", key: keyA, avoid: "a", setup: func(hs map[string]*Host) {
			hs["b"].Begin()
			hs["b"].Begin()
		}, want: []string{"c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, hs := threeHosts(t)
			if tt.setup != nil {
				tt.setup(hs)
			}
			got := map[string]int{}
			for range 300 {
				h := p.Pick(tt.key, hs[tt.avoid], t0)
				if h == nil {
					got[""]++
					continue
				}
				got[h.Instance().ID]++
			}
			if len(tt.want) == 0 {
				if got[""] != 300 {
					t.Fatalf("want nil every time, got %v", got)
				}
				return
			}
			for id := range got {
				if !slices.Contains(tt.want, id) {
					t.Fatalf("picked %q; want only %v (all picks %v)", id, tt.want, got)
				}
			}
			// 300 draws: each allowed host appears (probability of
			// missing one is below 1e-30 for two or three hosts).
			for _, id := range tt.want {
				if got[id] == 0 && len(tt.want) > 1 {
					t.Fatalf("host %q never picked: %v", id, got)
				}
			}
		})
	}
}

func TestPickSingleHost(t *testing.T) {
	p := New(Options{})
	p.Update([]Instance{inst(keyA, "a", "127.0.0.1:1")})
	h := p.Pick(keyA, nil, t0)
	if h == nil || h.Instance().ID != "a" {
		t.Fatalf("Pick = %v, want a", h)
	}
	if got := p.Pick(keyA, h, t0); got != nil {
		t.Fatalf("Pick avoiding the only host = %v, want nil", got.Instance())
	}
	ejectNow(h, t0)
	if got := p.Pick(keyA, nil, t0); got != nil {
		t.Fatal("Pick of an ejected single host should be nil")
	}
	if got := p.Pick(keyA, nil, t0.Add(time.Second)); got != h {
		t.Fatal("host should be back once its ejection ended")
	}
}

func TestPickTwoHostsIsDeterministicOnLoad(t *testing.T) {
	p := New(Options{})
	p.Update([]Instance{inst(keyA, "a", "127.0.0.1:1"), inst(keyA, "b", "127.0.0.1:2")})
	hs := hostsByID(p, keyA)
	hs["a"].Begin()
	for range 100 {
		if h := p.Pick(keyA, nil, t0); h != hs["b"] {
			t.Fatalf("with two hosts the less loaded must win, got %s", h.Instance().ID)
		}
	}
	hs["b"].Begin()
	hs["b"].Begin()
	if h := p.Pick(keyA, nil, t0); h != hs["a"] {
		t.Fatalf("got %s, want a", h.Instance().ID)
	}
}

func TestUpdateKeepsHostState(t *testing.T) {
	p := New(Options{})
	a := inst(keyA, "a", "127.0.0.1:1")
	b := inst(keyA, "b", "127.0.0.1:2")
	p.Update([]Instance{a, b})
	before := hostsByID(p, keyA)
	before["a"].Begin()
	before["a"].Begin()
	ejectNow(before["b"], t0)

	// A refresh with the same instances plus one more, in another order.
	c := inst(keyA, "c", "127.0.0.1:3")
	p.Update([]Instance{c, b, a})
	after := hostsByID(p, keyA)
	if after["a"] != before["a"] || after["b"] != before["b"] {
		t.Fatal("hosts with an unchanged instance must be carried over")
	}
	if got := after["a"].InFlight(); got != 2 {
		t.Fatalf("in-flight after update = %d, want 2", got)
	}
	if !after["b"].Ejected(t0) {
		t.Fatal("ejection must survive an update")
	}

	// Same ID, new address: a fresh host.
	moved := inst(keyA, "a", "127.0.0.1:9")
	p.Update([]Instance{moved, b})
	if h := hostsByID(p, keyA)["a"]; h == before["a"] || h.InFlight() != 0 || h.Instance().Addr != "127.0.0.1:9" {
		t.Fatal("an instance whose address changed must get a fresh host")
	}
	// The old host still works for requests in flight.
	before["a"].End()
	before["a"].End()
	if before["a"].InFlight() != 0 {
		t.Fatal("End on a dropped host must still count")
	}
}

func TestUpdateInput(t *testing.T) {
	tests := []struct {
		name string
		in   []Instance
		want map[Key][]string // addresses per key
	}{
		{name: "empty", in: nil, want: map[Key][]string{}},
		{name: "no address dropped", in: []Instance{inst(keyA, "a", ""), inst(keyA, "b", "h:2")},
			want: map[Key][]string{keyA: {"h:2"}}},
		{name: "duplicate id keeps first", in: []Instance{inst(keyA, "a", "h:1"), inst(keyA, "a", "h:2")},
			want: map[Key][]string{keyA: {"h:1"}}},
		{name: "empty id uses address", in: []Instance{inst(keyA, "", "h:1"), inst(keyA, "", "h:2"), inst(keyA, "", "h:1")},
			want: map[Key][]string{keyA: {"h:1", "h:2"}}},
		{name: "split by key", in: []Instance{inst(keyB, "b", "h:2"), inst(keyA, "a", "h:1")},
			want: map[Key][]string{keyA: {"h:1"}, keyB: {"h:2"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(Options{})
			p.Update([]Instance{inst(keyA, "old", "h:0")}) // replaced entirely
			p.Update(tt.in)
			got := map[Key][]string{}
			for _, k := range p.Keys() {
				for _, h := range p.Hosts(k) {
					got[k] = append(got[k], h.Instance().Addr)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestKeysHealthySnapshotStats(t *testing.T) {
	p := New(Options{})
	keyC := Key{Ufop: "alpha", Version: "v1", Region: "z1"}
	p.Update([]Instance{inst(keyB, "b1", "h:3"), inst(keyA, "a1", "h:1"), inst(keyA, "a2", "h:2"), inst(keyC, "c1", "h:4")})
	if got, want := p.Keys(), []Key{keyC, keyA, keyB}; !slices.Equal(got, want) {
		t.Fatalf("Keys = %v, want %v", got, want)
	}
	hs := hostsByID(p, keyA)
	ejectNow(hs["a1"], t0)
	hs["a2"].Begin()
	if got := p.HealthyAt(keyA, t0); got != 1 {
		t.Fatalf("Healthy(a) = %d, want 1 (one ejected)", got)
	}
	if got := p.HealthyAt(keyA, t0.Add(time.Hour)); got != 2 {
		t.Fatalf("Healthy(a) after the ejection = %d, want 2", got)
	}
	if got := p.Healthy(Key{Ufop: "nope"}); got != 0 {
		t.Fatalf("Healthy(unknown) = %d", got)
	}
	if got := p.Snapshot(); got[keyA] != 2 || got[keyB] != 1 || got[keyC] != 1 || len(got) != 3 {
		t.Fatalf("Snapshot = %v", got)
	}
	st := p.Stats(t0)
	if len(st) != 3 || st[1] != (KeyStats{Key: keyA, Instances: 2, Ejected: 1, InFlight: 1}) {
		t.Fatalf("Stats = %+v", st)
	}
	keys := p.Keys()
	keys[0] = Key{}
	if p.Keys()[0] != keyC {
		t.Fatal("Keys must return a copy")
	}
}

func TestEjection(t *testing.T) {
	type step struct {
		at      time.Duration // since t0
		fail    bool          // ConnectFailed, else Succeeded
		ejected bool          // Ejected(at) after the step
		until   time.Duration // expected EjectedUntil - t0, when ejected
	}
	opts := Options{EjectAfter: 3, BaseEjection: time.Second, MaxEjection: 5 * time.Second}
	s := time.Second
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "two failures do not eject", steps: []step{{at: 0, fail: true}, {at: 0, fail: true}}},
		{name: "third failure ejects for base", steps: []step{
			{fail: true}, {fail: true}, {fail: true, ejected: true, until: s},
		}},
		{name: "success resets the count", steps: []step{
			{fail: true}, {fail: true}, {}, {fail: true}, {fail: true},
		}},
		{name: "failures while ejected ignored", steps: []step{
			{fail: true}, {fail: true}, {fail: true, ejected: true, until: s},
			{at: s / 2, fail: true, ejected: true, until: s},
			{at: s / 2, fail: true, ejected: true, until: s},
			{at: s / 2, fail: true, ejected: true, until: s},
		}},
		{name: "probation: one failure re-ejects, doubling to the cap", steps: []step{
			{fail: true}, {fail: true}, {fail: true, ejected: true, until: s},
			{at: 1 * s, fail: true, ejected: true, until: 3 * s},  // 2s
			{at: 3 * s, fail: true, ejected: true, until: 7 * s},  // 4s
			{at: 7 * s, fail: true, ejected: true, until: 12 * s}, // 8s capped to 5s
			{at: 12 * s, fail: true, ejected: true, until: 17 * s},
		}},
		{name: "success after an ejection resets the backoff", steps: []step{
			{fail: true}, {fail: true}, {fail: true, ejected: true, until: s},
			{at: s}, // a request got through
			{at: s, fail: true}, {at: s, fail: true},
			{at: s, fail: true, ejected: true, until: 2 * s},
		}},
		{name: "success does not cut an ejection short", steps: []step{
			{fail: true}, {fail: true}, {fail: true, ejected: true, until: s},
			{at: s / 2, ejected: true, until: s},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(opts)
			p.Update([]Instance{inst(keyA, "a", "h:1")})
			h := p.Hosts(keyA)[0]
			for i, st := range tt.steps {
				now := t0.Add(st.at)
				if st.fail {
					h.ConnectFailed(now)
				} else {
					h.Succeeded()
				}
				if got := h.Ejected(now); got != st.ejected {
					t.Fatalf("step %d: ejected = %v, want %v", i, got, st.ejected)
				}
				if st.ejected {
					if got := h.EjectedUntil().Sub(t0); got != st.until {
						t.Fatalf("step %d: ejected until t0+%v, want t0+%v", i, got, st.until)
					}
				}
			}
		})
	}
}

func TestEjectionLength(t *testing.T) {
	tests := []struct {
		base, max time.Duration
		n         int
		want      time.Duration
	}{
		{time.Second, 30 * time.Second, 0, time.Second},
		{time.Second, 30 * time.Second, 1, 2 * time.Second},
		{time.Second, 30 * time.Second, 4, 16 * time.Second},
		{time.Second, 30 * time.Second, 5, 30 * time.Second},
		{time.Second, 30 * time.Second, 1 << 30, 30 * time.Second}, // no overflow, no long loop
		{time.Second, time.Second, 3, time.Second},
	}
	for _, tt := range tests {
		if got := ejection(tt.base, tt.max, tt.n); got != tt.want {
			t.Errorf("ejection(%v, %v, %d) = %v, want %v", tt.base, tt.max, tt.n, got, tt.want)
		}
	}
}

func TestOptionsDefaults(t *testing.T) {
	got := New(Options{}).Options()
	want := Options{EjectAfter: 3, BaseEjection: time.Second, MaxEjection: 30 * time.Second}
	if got != want {
		t.Fatalf("defaults = %+v, want %+v", got, want)
	}
	if got := New(Options{BaseEjection: time.Minute}).Options().MaxEjection; got != time.Minute {
		t.Fatalf("MaxEjection below BaseEjection should be raised to it, got %v", got)
	}
}

func TestPickAllocatesNothing(t *testing.T) {
	p := New(Options{})
	var in []Instance
	for i := range 8 {
		in = append(in, inst(keyA, fmt.Sprint(i), fmt.Sprintf("h:%d", i)))
	}
	p.Update(in)
	hs := p.Hosts(keyA)
	ejectNow(hs[3], t0)
	for _, tc := range []struct {
		name  string
		avoid *Host
	}{{"no avoid", nil}, {"avoid", hs[0]}} {
		if n := testing.AllocsPerRun(1000, func() {
			h := p.Pick(keyA, tc.avoid, t0)
			h.Begin()
			h.End()
			h.Succeeded()
		}); n != 0 {
			t.Errorf("%s: Pick allocates %v times per call", tc.name, n)
		}
	}
	if n := testing.AllocsPerRun(1000, func() { p.Pick(keyB, nil, t0) }); n != 0 {
		t.Errorf("Pick of an unknown key allocates %v times", n)
	}
}

type chanDiscovery chan []Instance

func (c chanDiscovery) Watch(ctx context.Context) <-chan []Instance { return c }

func TestRun(t *testing.T) {
	p := New(Options{})
	d := make(chanDiscovery)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx, d); close(done) }()
	d <- []Instance{inst(keyA, "a", "h:1")}
	d <- []Instance{inst(keyA, "a", "h:1"), inst(keyB, "b", "h:2")} // the first was applied before this one is taken
	d <- []Instance{inst(keyB, "b", "h:2")}
	cancel()
	<-done
	if got := p.Keys(); !slices.Equal(got, []Key{keyB}) {
		t.Fatalf("Keys after Run = %v, want [%v]", got, keyB)
	}

	// A closed channel ends Run too.
	d2 := make(chanDiscovery)
	close(d2)
	p.Run(context.Background(), d2)
}

// TestConcurrentUse runs pickers against updates; run with -race. Every
// Begin is matched by an End, so all counters must be back to zero.
func TestConcurrentUse(t *testing.T) {
	p := New(Options{EjectAfter: 2, BaseEjection: time.Millisecond, MaxEjection: 4 * time.Millisecond})
	sets := [][]Instance{
		{inst(keyA, "a", "h:1"), inst(keyA, "b", "h:2"), inst(keyA, "c", "h:3")},
		{inst(keyA, "a", "h:1"), inst(keyA, "c", "h:3"), inst(keyB, "d", "h:4")},
		{inst(keyA, "b", "h:2"), inst(keyA, "e", "h:5")},
	}
	p.Update(sets[0])
	var seen sync.Map // every host ever picked
	stop := make(chan struct{})
	updated := make(chan struct{})
	go func() { // updater: runs until the pickers are done
		defer close(updated)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p.Update(sets[i%len(sets)])
			_ = p.Stats(time.Now())
			_ = p.Keys()
		}
	}()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			var last *Host
			for i := range 5000 {
				now := time.Now()
				h := p.Pick(keyA, last, now)
				if h == nil {
					continue
				}
				seen.Store(h, true)
				h.Begin()
				if (i+w)%7 == 0 {
					h.ConnectFailed(now)
				} else {
					h.Succeeded()
				}
				_ = p.Healthy(keyA)
				h.End()
				last = h
			}
		})
	}
	wg.Wait()
	close(stop)
	<-updated
	n := 0
	seen.Range(func(k, _ any) bool {
		n++
		if f := k.(*Host).InFlight(); f != 0 {
			t.Errorf("host %s in flight = %d after all requests ended", k.(*Host).Instance().ID, f)
		}
		return true
	})
	if n == 0 {
		t.Fatal("no host was ever picked")
	}
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{1, 3, 10, 100} {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			p := New(Options{})
			var in []Instance
			for i := range n {
				in = append(in, inst(keyA, fmt.Sprint(i), fmt.Sprintf("h:%d", i)))
			}
			p.Update(in)
			now := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					h := p.Pick(keyA, nil, now)
					h.Begin()
					h.End()
				}
			})
		})
	}
	b.Run("hosts=10/one-ejected-avoid", func(b *testing.B) {
		p := New(Options{})
		var in []Instance
		for i := range 10 {
			in = append(in, inst(keyA, fmt.Sprint(i), fmt.Sprintf("h:%d", i)))
		}
		p.Update(in)
		now := time.Now()
		hs := p.Hosts(keyA)
		ejectNow(hs[1], now)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			p.Pick(keyA, hs[0], now)
		}
	})
}

// TestChanged: the channel taken before an Update is closed by it, and a
// fresh one is open until the next.
func TestChanged(t *testing.T) {
	p := New(Options{})
	ch := p.Changed()
	select {
	case <-ch:
		t.Fatal("closed before any Update")
	default:
	}
	p.Update([]Instance{{ID: "a", Ufop: "u", Version: "v1", Region: "z0", Addr: "127.0.0.1:1"}})
	select {
	case <-ch:
	default:
		t.Fatal("not closed by Update")
	}
	next := p.Changed()
	select {
	case <-next:
		t.Fatal("the next channel is already closed")
	default:
	}
	p.Update(nil)
	<-next
}
