package poolmetrics

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/doraproject/dora/pool"
	"github.com/prometheus/client_golang/prometheus"
)

func TestCollect(t *testing.T) {
	p := pool.New(pool.Options{EjectAfter: 1})
	p.Update([]pool.Instance{
		{ID: "a1", Ufop: "grepd", Version: "v1", Region: "z0", Addr: "h:1"},
		{ID: "a2", Ufop: "grepd", Version: "v1", Region: "z0", Addr: "h:2"},
		{ID: "b1", Ufop: "slowpoke", Version: "v3", Region: "z1", Addr: "h:3"},
	})
	k := pool.Key{Ufop: "grepd", Version: "v1", Region: "z0"}
	now := time.Now()
	hs := p.Hosts(k)
	hs[0].ConnectFailed(now)
	hs[1].Begin()
	hs[1].Begin()

	reg := prometheus.NewPedanticRegistry()
	c := New(p)
	c.now = func() time.Time { return now } // the ejection is in force at scrape time
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			got = append(got, fmt.Sprintf("%s{%s,%s,%s}=%v", mf.GetName(), l["ufop"], l["version"], l["region"], m.GetGauge().GetValue()))
		}
	}
	sort.Strings(got)
	want := []string{
		"dora_pool_ejected_instances{grepd,v1,z0}=1",
		"dora_pool_ejected_instances{slowpoke,v3,z1}=0",
		"dora_pool_in_flight{grepd,v1,z0}=2",
		"dora_pool_in_flight{slowpoke,v3,z1}=0",
		"dora_pool_instances{grepd,v1,z0}=2",
		"dora_pool_instances{slowpoke,v3,z1}=1",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got\n%v\nwant\n%v", got, want)
	}
}
