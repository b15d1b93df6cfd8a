package consul

import (
	"testing"
	"time"

	"github.com/doraproject/dora/pool"
	"github.com/hashicorp/consul/api"
)

func TestNextIndex(t *testing.T) {
	tests := []struct {
		name          string
		old, new, out uint64
	}{
		{"first answer", 0, 42, 42},
		{"moved on", 42, 50, 50},
		{"unchanged (wait timed out)", 42, 42, 42},
		{"went backwards resets", 50, 7, 0},
		{"zero becomes one", 0, 0, 1},
		{"zero after non-zero is backwards", 9, 0, 0},
	}
	for _, tt := range tests {
		if got := nextIndex(tt.old, tt.new); got != tt.out {
			t.Errorf("%s: nextIndex(%d, %d) = %d, want %d", tt.name, tt.old, tt.new, got, tt.out)
		}
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 250*time.Millisecond, 10*time.Second
	tests := []struct {
		attempt  int
		r        float64
		min, max time.Duration // inclusive bounds of the result
	}{
		{0, 0, 125 * time.Millisecond, 125 * time.Millisecond},
		{0, 0.999, 125 * time.Millisecond, 250 * time.Millisecond},
		{1, 0, 250 * time.Millisecond, 250 * time.Millisecond},
		{3, 0.5, 1500 * time.Millisecond, 1500 * time.Millisecond}, // 2s: 1s + 0.5*1s
		{6, 0, 5 * time.Second, 5 * time.Second},                   // capped at 10s
		{6, 0.999, 5 * time.Second, 10 * time.Second},
		{1 << 30, 0.999, 5 * time.Second, 10 * time.Second}, // no overflow
	}
	for _, tt := range tests {
		got := backoff(tt.attempt, lo, hi, tt.r)
		if got < tt.min || got > tt.max {
			t.Errorf("backoff(%d, r=%v) = %v, want in [%v, %v]", tt.attempt, tt.r, got, tt.min, tt.max)
		}
	}
}

func entry(id, nodeName, nodeAddr, addr string, port int, tags []string, meta map[string]string) *api.ServiceEntry {
	return &api.ServiceEntry{
		Node:    &api.Node{Node: nodeName, Address: nodeAddr},
		Service: &api.AgentService{ID: id, Service: "ufop-grepd", Address: addr, Port: port, Tags: tags, Meta: meta},
	}
}

func TestInstancesFrom(t *testing.T) {
	tests := []struct {
		name    string
		entries []*api.ServiceEntry
		want    []pool.Instance
	}{
		{
			name:    "meta",
			entries: []*api.ServiceEntry{entry("a1", "n1", "10.0.0.1", "127.0.0.1", 9100, nil, map[string]string{"ufop": "grepd", "version": "v2", "region": "z1"})},
			want:    []pool.Instance{{ID: "a1", Ufop: "grepd", Version: "v2", Region: "z1", Addr: "127.0.0.1:9100"}},
		},
		{
			name:    "tags as fallback, node address, default region and ufop from the name",
			entries: []*api.ServiceEntry{entry("a1", "n1", "10.0.0.1", "", 9100, []string{"other", "version=v1"}, nil)},
			want:    []pool.Instance{{ID: "a1", Ufop: "grepd", Version: "v1", Region: "z0", Addr: "10.0.0.1:9100"}},
		},
		{
			name: "meta wins over tags; empty meta falls back",
			entries: []*api.ServiceEntry{entry("a1", "n1", "", "h", 1, []string{"version=v1", "region=z9", "ufop=zzz"},
				map[string]string{"version": "v3", "region": " "})},
			want: []pool.Instance{{ID: "a1", Ufop: "zzz", Version: "v3", Region: "z9", Addr: "h:1"}},
		},
		{
			name:    "ipv6",
			entries: []*api.ServiceEntry{entry("a1", "n1", "", "::1", 80, []string{"version=v1"}, nil)},
			want:    []pool.Instance{{ID: "a1", Ufop: "grepd", Version: "v1", Region: "z0", Addr: "[::1]:80"}},
		},
		{
			name: "unusable entries skipped",
			entries: []*api.ServiceEntry{
				nil,
				{Node: &api.Node{Node: "n"}},
				entry("noversion", "n1", "", "h", 1, []string{"version="}, nil),
				entry("noport", "n1", "", "h", 0, []string{"version=v1"}, nil),
				entry("badport", "n1", "", "h", 70000, []string{"version=v1"}, nil),
				entry("noaddr", "n1", "", "", 1, []string{"version=v1"}, nil),
			},
			want: []pool.Instance{},
		},
		{
			name: "same ID on two nodes, sorted, empty ID uses the address",
			entries: []*api.ServiceEntry{
				entry("x", "n2", "", "h2", 1, []string{"version=v1"}, nil),
				entry("x", "n1", "", "h1", 1, []string{"version=v1"}, nil),
				entry("", "n1", "", "h3", 1, []string{"version=v1"}, nil),
			},
			want: []pool.Instance{
				{ID: "h3:1", Ufop: "grepd", Version: "v1", Region: "z0", Addr: "h3:1"},
				{ID: "n1/x", Ufop: "grepd", Version: "v1", Region: "z0", Addr: "h1:1"},
				{ID: "x", Ufop: "grepd", Version: "v1", Region: "z0", Addr: "h2:1"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := instancesFrom("ufop-grepd", "ufop-", "z0", tt.entries)
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("instance %d: got %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestMerge(t *testing.T) {
	got := merge(map[string][]pool.Instance{
		"ufop-b": {{ID: "b1"}, {ID: "b2"}},
		"ufop-a": {{ID: "a1"}},
		"ufop-c": {},
	})
	if len(got) != 3 || got[0].ID != "a1" || got[1].ID != "b1" || got[2].ID != "b2" {
		t.Fatalf("merge = %+v", got)
	}
	if got := merge(nil); got == nil || len(got) != 0 {
		t.Fatalf("merge(nil) = %#v, want an empty non-nil set", got)
	}
}
