package nomad

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/runtime"
	"github.com/hashicorp/nomad/api"
)

func TestNameIndex(t *testing.T) {
	cases := map[string]int{
		"ufop-grepd-v1.ufop[0]":  0,
		"ufop-grepd-v1.ufop[12]": 12,
		"a.b[x]":                 -1,
		"no-index":               -1,
		"a.b[-1]":                -1,
		"a[b].c[3]":              3,
	}
	for name, want := range cases {
		if got := nameIndex(name); got != want {
			t.Errorf("nameIndex(%q) = %d, want %d", name, got, want)
		}
	}
}

func TestCountIn(t *testing.T) {
	cases := []struct {
		indexes         []int
		lo, hi, total   int
		want            int
		wantErrNotFound bool
	}{
		{[]int{1, 2}, 1, 3, 3, 2, false},
		{[]int{2, 2, 2}, 1, 3, 3, 1, false},
		{[]int{3}, 1, 2, 3, 0, false}, // already stopped
		{[]int{4}, 1, 3, 3, 0, true},
		{[]int{0}, 1, 3, 3, 0, true},
		{[]int{3, 4}, 3, 4, 4, 2, false},
	}
	for _, c := range cases {
		got, err := countIn(c.indexes, c.lo, c.hi, c.total, "d")
		if errors.Is(err, runtime.ErrNotFound) != c.wantErrNotFound || (err == nil && got != c.want) {
			t.Errorf("countIn(%v, %d, %d, %d) = %d, %v", c.indexes, c.lo, c.hi, c.total, got, err)
		}
	}
}

func TestStampLines(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	const s = "2026-01-02T02:04:05Z "
	cases := []struct {
		data    string
		tail    int
		partial bool
		want    string
	}{
		{"", 10, false, ""},
		{"a\nb\nc\n", 10, false, s + "a\n" + s + "b\n" + s + "c\n"},
		{"a\nb\nc", 2, false, s + "b\n" + s + "c\n"},
		{"rtial\nb\n", 10, true, s + "b\n"},
		{"only-partial", 10, true, s + "only-partial\n"},
		{"crlf\r\n", 10, false, s + "crlf\n"},
	}
	for _, c := range cases {
		if got := string(stampLines([]byte(c.data), c.tail, c.partial, now)); got != c.want {
			t.Errorf("stampLines(%q, %d, %v) = %q, want %q", c.data, c.tail, c.partial, got, c.want)
		}
	}
}

func TestLatestPerName(t *testing.T) {
	allocs := []*api.AllocationListStub{
		{ID: "old0", Name: "j.ufop[0]", CreateIndex: 10, DesiredStatus: "stop"},
		{ID: "new0", Name: "j.ufop[0]", CreateIndex: 20, DesiredStatus: "run"},
		{ID: "one", Name: "j.ufop[1]", CreateIndex: 11, DesiredStatus: "run"},
		{ID: "gone2", Name: "j.ufop[2]", CreateIndex: 12, DesiredStatus: "stop"},
	}
	ids := func(as []*api.AllocationListStub) string {
		var s []string
		for _, a := range as {
			s = append(s, a.ID)
		}
		return strings.Join(s, ",")
	}
	if got := ids(latestPerName(allocs, true)); got != "new0,one" {
		t.Errorf("wanted = %s", got)
	}
	if got := ids(latestPerName(allocs, false)); got != "new0,one,gone2" {
		t.Errorf("all = %s", got)
	}
}

func TestInstance(t *testing.T) {
	yes, no := true, false
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	running := map[string]*api.TaskState{"grepd": {State: "running", StartedAt: started}}
	crashed := map[string]*api.TaskState{"grepd": {State: "pending", Restarts: 2, Events: []*api.TaskEvent{
		{Type: api.TaskStarted, DisplayMessage: "Task started by client"},
		{Type: api.TaskTerminated, DisplayMessage: "Exit Code: 1"},
		{Type: api.TaskRestarting, DisplayMessage: "Task restarting in 5s"},
	}}}
	artifact := map[string]*api.TaskState{"grepd": {State: "dead", Failed: true, Events: []*api.TaskEvent{
		{Type: api.TaskArtifactDownloadFailed, DisplayMessage: "bad response code: 401"},
		{Type: api.TaskNotRestarting, DisplayMessage: "Error was unrecoverable", FailsTask: true},
	}}}
	cases := []struct {
		name      string
		a         api.AllocationListStub
		passing   map[string]bool
		state     string
		healthy   bool
		msgSubstr string
	}{
		{"nomad healthy", api.AllocationListStub{ClientStatus: "running", TaskStates: running,
			DeploymentStatus: &api.AllocDeploymentStatus{Healthy: &yes}}, nil, runtime.StateRunning, true, ""},
		{"nomad unhealthy", api.AllocationListStub{ClientStatus: "running", TaskStates: running,
			DeploymentStatus: &api.AllocDeploymentStatus{Healthy: &no}}, nil, runtime.StateUnhealthy, false, "health check"},
		{"nomad undecided", api.AllocationListStub{ClientStatus: "running", TaskStates: running,
			DeploymentStatus: &api.AllocDeploymentStatus{}}, nil, runtime.StateStarting, false, ""},
		{"outside a deployment", api.AllocationListStub{ClientStatus: "running", TaskStates: running}, nil, runtime.StateRunning, true, ""},
		{"consul passing", api.AllocationListStub{ID: "a1", ClientStatus: "running", TaskStates: running}, map[string]bool{"a1": true}, runtime.StateRunning, true, ""},
		{"consul critical after deploy", api.AllocationListStub{ID: "a1", ClientStatus: "running", TaskStates: running,
			DeploymentStatus: &api.AllocDeploymentStatus{Healthy: &yes}}, map[string]bool{}, runtime.StateUnhealthy, false, "health check"},
		{"restarting", api.AllocationListStub{ClientStatus: "pending", TaskStates: crashed}, nil, runtime.StateCrashed, false, "Terminated: Exit Code: 1"},
		{"artifact failed", api.AllocationListStub{ClientStatus: "failed", TaskStates: artifact}, nil, runtime.StateFailed, false, "Not Restarting"},
		{"starting", api.AllocationListStub{ClientStatus: "pending"}, nil, runtime.StateStarting, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.a.Name = "j.ufop[1]"
			in := instance(&c.a, c.passing)
			if in.Index != 2 || in.State != c.state || in.Healthy != c.healthy || !strings.Contains(in.Message, c.msgSubstr) {
				t.Fatalf("instance = %+v; want index 2 state %s healthy %v message ~%q", in, c.state, c.healthy, c.msgSubstr)
			}
			if c.a.TaskStates["grepd"] != nil && c.a.TaskStates["grepd"].State == "running" && !in.Started.Equal(started) {
				t.Errorf("started %v", in.Started)
			}
		})
	}
}

func TestDescribeMetric(t *testing.T) {
	got := describeMetric(&api.AllocationMetric{
		NodesEvaluated:     3,
		ConstraintFiltered: map[string]int{"missing drivers": 2, "${attr.kernel.name} = linux": 1},
		DimensionExhausted: map[string]int{"memory": 1},
		CoalescedFailures:  2,
	})
	want := `3 nodes evaluated; 2 more placements failed; constraint "${attr.kernel.name} = linux" filtered 1 nodes; constraint "missing drivers" filtered 2 nodes; resources exhausted: memory on 1 nodes`
	if got != want {
		t.Errorf("describeMetric =\n%s\nwant\n%s", got, want)
	}
	if got := describeMetric(nil); got != "placement failed" {
		t.Errorf("nil metric: %q", got)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	cases := []Config{
		{Driver: "docker"},
		{Regions: map[string]RegionConfig{"bad region": {}}},
		{Regions: map[string]RegionConfig{"z0": {NomadRegion: "a/b"}}},
	}
	for _, c := range cases {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	r, err := New(Config{Regions: map[string]RegionConfig{"z0": {}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.region("z9"); !errors.Is(err, runtime.ErrUnsupported) {
		t.Errorf("unconfigured region: %v", err)
	}
	if rc, err := r.region("z0"); err != nil || rc.NomadRegion != "global" {
		t.Errorf("z0: %+v %v", rc, err)
	}
	if got := r.JobID("grepd", "v2", "z1"); got != "ufop-grepd-v2-z1" {
		t.Errorf("JobID = %s", got)
	}
}
