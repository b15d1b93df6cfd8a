package cmd

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/internal/api"
)

func TestParseSelection(t *testing.T) {
	tests := []struct {
		index int
		rng   string
		want  []int
		bad   bool
	}{
		{0, "", nil, false},
		{2, "", []int{2}, false},
		{0, "1:3", []int{1, 2, 3}, false},
		{0, " 4 : 4 ", []int{4}, false},
		{1, "1:2", nil, true},
		{-1, "", nil, true},
		{0, "0:2", nil, true},
		{0, "3:1", nil, true},
		{0, "1-3", nil, true},
		{0, "a:b", nil, true},
		{0, "1:100000", nil, true},
	}
	for _, tt := range tests {
		got, err := parseSelection(tt.index, tt.rng)
		if (err != nil) != tt.bad || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseSelection(%d, %q) = %v, %v; want %v, bad=%v", tt.index, tt.rng, got, err, tt.want, tt.bad)
		}
	}
}

func TestStopStart(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"POST /v1/ufops/grepd/instances/stop":  reply(204, nil),
		"POST /v1/ufops/grepd/instances/start": reply(204, nil),
	})
	tests := []struct {
		args []string
		key  string
		body string
	}{
		{[]string{"stop", "grepd", "-index", "1"}, "POST /v1/ufops/grepd/instances/stop", `{"indexes":[1]}`},
		{[]string{"stop", "grepd", "-range", "1:5"}, "POST /v1/ufops/grepd/instances/stop", `{"indexes":[1,2,3,4,5]}`},
		{[]string{"stop", "grepd"}, "POST /v1/ufops/grepd/instances/stop", `{"indexes":[]}`},
		{[]string{"start", "grepd", "-index", "2", "--region", "z1"}, "POST /v1/ufops/grepd/instances/start", `{"region":"z1","indexes":[2]}`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			mustOK(t, runCLI(t, f, "", tt.args...))
			jsonEq(t, f.last(t, tt.key).Body, tt.body)
		})
	}
	if r := runCLI(t, f, "", "stop", "grepd", "-index", "1", "-range", "1:2"); r.code != ExitUsage {
		t.Fatalf("both -index and -range: %v", r)
	}
}

func TestState(t *testing.T) {
	started := time.Now().Add(-90 * time.Second)
	f := newFakeAPI(t, map[string]route{
		"GET /v1/ufops/grepd/instances": reply(200, []api.InstanceStatus{
			{Index: 1, ID: "d-1", State: api.StateRunning, Healthy: true, PID: 4242, Addr: "127.0.0.1:9101", Started: started},
			{Index: 2, ID: "d-2", State: api.StateStopped, Restarts: 3},
			{Index: 3, ID: "d-3", State: api.StateCrashed, Message: "exit 1"},
		}),
	})
	r := mustOK(t, runCLI(t, f, "", "state", "grepd"))
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "Index  Id   State") {
		t.Fatalf("state:\n%s", r.stdout)
	}
	if !strings.Contains(lines[1], "1      d-1  RUNNING  true     4242  127.0.0.1:9101  0         1m3") {
		t.Fatalf("state row 1: %q", lines[1])
	}
	r = mustOK(t, runCLI(t, f, "", "state", "grepd", "-range", "2:3", "--region", "z0"))
	if strings.Contains(r.stdout, "d-1") || !strings.Contains(r.stdout, "d-2") || !strings.Contains(r.stdout, "exit 1") {
		t.Fatalf("state -range 2:3:\n%s", r.stdout)
	}
	if q := f.last(t, "GET /v1/ufops/grepd/instances").Query; q != "region=z0" {
		t.Fatalf("query %q", q)
	}
}

func TestLogtailAndLog(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"GET /v1/ufops/grepd/instances/1/logs": reply(200, "2026-01-02T03:04:05Z hello\n"),
		"GET /v1/ufops/grepd/logs":             reply(200, "2026-01-02T03:04:05Z error: x\n"),
	})
	r := mustOK(t, runCLI(t, f, "", "logtail", "grepd", "-index", "1", "-type", "stderr", "-tail", "200"))
	if r.stdout != "2026-01-02T03:04:05Z hello\n" || f.last(t, "GET /v1/ufops/grepd/instances/1/logs").Query != "tail=200&type=stderr" {
		t.Fatalf("logtail %q query %q", r.stdout, f.last(t, "GET /v1/ufops/grepd/instances/1/logs").Query)
	}
	mustOK(t, runCLI(t, f, "", "logtail", "grepd", "-index", "1"))
	if q := f.last(t, "GET /v1/ufops/grepd/instances/1/logs").Query; q != "tail=100&type=stdout" {
		t.Fatalf("logtail defaults: %q", q)
	}
	for _, args := range [][]string{{"logtail", "grepd"}, {"logtail", "grepd", "-index", "1", "-type", "both"}} {
		if r := runCLI(t, f, "", args...); r.code != ExitUsage {
			t.Errorf("%v: %v", args, r)
		}
	}
	r = mustOK(t, runCLI(t, f, "", "log", "grepd", "v1", "--instance", "2", "--from", "2026-01-02T03:00:00Z", "--to", "2026-01-02T04:00:00Z", "-k", "error", "--region", "z0"))
	if r.stdout != "2026-01-02T03:04:05Z error: x\n" {
		t.Fatalf("log %q", r.stdout)
	}
	if q := f.last(t, "GET /v1/ufops/grepd/logs").Query; q != "from=2026-01-02T03%3A00%3A00Z&instance=2&k=error&region=z0&to=2026-01-02T04%3A00%3A00Z&version=v1" {
		t.Fatalf("log query %q", q)
	}
	if r := runCLI(t, f, "", "log", "grepd", "v1", "--from", "yesterday"); r.code != ExitUsage {
		t.Fatalf("bad --from: %v", r)
	}
}

func TestParseTimeArg(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{"", time.Time{}, false},
		{"2026-01-02T03:04:05Z", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), false},
		{"1h30m", now.Add(-90 * time.Minute), false},
		{"2026-01-02 03:04:05", time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local), false},
		{"2026-01-02", time.Date(2026, 1, 2, 0, 0, 0, 0, time.Local), false},
		{"-1h", time.Time{}, true},
		{"soon", time.Time{}, true},
	}
	for _, tt := range tests {
		got, err := parseTimeArg(tt.in, now)
		if (err != nil) != tt.bad || !got.Equal(tt.want) {
			t.Errorf("parseTimeArg(%q) = %v, %v; want %v bad=%v", tt.in, got, err, tt.want, tt.bad)
		}
	}
}

// TestExplicitSelectionNeverMeansAll: "-index 0" or an empty "-range"
// given on the command line is a usage error, not the "every instance"
// that leaving both out means: `stop grepd -index 0` stopped them all.
func TestExplicitSelectionNeverMeansAll(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"POST /v1/ufops/grepd/instances/stop":  reply(204, nil),
		"POST /v1/ufops/grepd/instances/start": reply(204, nil),
		"GET /v1/ufops/grepd/instances":        reply(200, []api.InstanceStatus{{Index: 1}, {Index: 2}}),
	})
	for _, args := range [][]string{
		{"stop", "grepd", "-index", "0"},
		{"start", "grepd", "--index=0"},
		{"state", "grepd", "-index", "0"},
		{"stop", "grepd", "-range", ""},
	} {
		if r := runCLI(t, f, "", args...); r.code != ExitUsage {
			t.Errorf("%q: %v, want exit %d", args, r, ExitUsage)
		}
	}
	f.mu.Lock()
	n := len(f.calls)
	f.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d calls reached the API: %+v", n, f.calls)
	}
}
