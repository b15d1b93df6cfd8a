package cmd

import (
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
)

func TestDeployCommands(t *testing.T) {
	const id = "deploy-aeff0dc6-b5de-11e6-88be-6c92bf2f06d8"
	created := time.Date(2016, 11, 29, 2, 51, 10, 0, time.UTC)
	d := dora.Deployment{ID: id, Ufop: "doraufoptest", Version: "v1", Region: "z0", Expect: 2, Max: 5, Status: "RUNNING", Created: created}
	f := newFakeAPI(t, map[string]route{
		"POST /v1/ufops/doraufoptest/deployments":                  reply(202, d),
		"GET /v1/ufops/doraufoptest/deployments/" + id:             reply(200, client.DeploymentInfo{Deployment: withPolicy(d)}),
		"GET /v1/ufops/doraufoptest/deployments":                   reply(200, []dora.Deployment{d}),
		"GET /v1/ufops/doraufoptest/deployments/" + id + "/events": reply(200, []client.ScaleEvent{{Time: created, From: 2, To: 4, Reason: "panic: load 35"}}),
		"POST /v1/ufops/doraufoptest/resize":                       reply(200, d),
	})
	r := mustOK(t, runCLI(t, f, "", "deploy", "doraufoptest", "v1", "--region", "z0", "--expect", "2"))
	want := "Deploy success\nPlease run `qdoractl deploy doraufoptest --id " + id + "` to view you deploy\n" +
		"Please run `qdoractl release doraufoptest v1 -d` to view you release\n"
	if r.stdout != want {
		t.Fatalf("deploy:\n%s\nwant:\n%s", r.stdout, want)
	}
	jsonEq(t, f.last(t, "POST /v1/ufops/doraufoptest/deployments").Body, `{"version":"v1","region":"z0","expect":2}`)

	mustOK(t, runCLI(t, f, "", "deploy", "doraufoptest", "v1", "-r", "z0", "-e", "1", "--max", "4", "--target", "7.5", "--activate"))
	jsonEq(t, f.last(t, "POST /v1/ufops/doraufoptest/deployments").Body, `{"version":"v1","region":"z0","expect":1,"max":4,"target":7.5,"activate":true}`)

	for _, args := range [][]string{{"deploy", "doraufoptest", "--id", id}, {"deploy", "doraufoptest", "-i", id}, {"deploy", "doraufoptest", "--all"}} {
		r = mustOK(t, runCLI(t, f, "", args...))
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		want := 2
		if args[2] != "--all" {
			// One deployment: its counts and the policy in force too.
			want = 4
			if lines[2] != "Instances: 0 desired, floor 2, ceiling 5" ||
				lines[3] != "Autoscale: target 2 in flight per instance, stable window 6s, panic window 1s (threshold 2), "+
					"scale up ×10 / down ÷2 per step, cooldown up 0s / down 1s, every 200ms" {
				t.Fatalf("%v:\n%s", args, r.stdout)
			}
		}
		if len(lines) != want || !strings.HasPrefix(lines[0], "Version  Expect  Region  Created              Id") {
			t.Fatalf("%v:\n%s", args, r.stdout)
		}
		if !strings.Contains(lines[1], "v1       2       z0      "+created.Local().Format("2006-01-02 15:04:05")+"  "+id+"  RUNNING") {
			t.Fatalf("%v:\n%s", args, r.stdout)
		}
	}
	r = mustOK(t, runCLI(t, f, "", "deploy", "doraufoptest", "--events", "--id", id))
	if !strings.Contains(r.stdout, "2     4   panic: load 35") {
		t.Fatalf("events:\n%s", r.stdout)
	}

	usage := [][]string{
		{"deploy", "doraufoptest", "v1", "--region", "z0"},            // no --expect
		{"deploy", "doraufoptest"},                                    // nothing to do
		{"deploy", "doraufoptest", "--events"},                        // no --id
		{"deploy", "doraufoptest", "v1", "-e", "1", "--id", "x"},      // mixed
		{"deploy", "doraufoptest", "v1", "-e", "1", "--max", "-2"},    // negative
		{"resize", "doraufoptest"},                                    // no -num
		{"deploy", "doraufoptest", "v1", "--expect", "two"},           // not a number
		{"resize", "doraufoptest", "-num", "-1"},                      // negative
		{"deploy", "doraufoptest", "v1", "v2", "v3", "--expect", "1"}, // too many args
	}
	for _, args := range usage {
		if r := runCLI(t, f, "", args...); r.code != ExitUsage {
			t.Errorf("%v: want usage error, got %v", args, r)
		}
	}

	r = mustOK(t, runCLI(t, f, "", "resize", "doraufoptest", "-num", "3", "--region", "z0"))
	jsonEq(t, f.last(t, "POST /v1/ufops/doraufoptest/resize").Body, `{"num":3,"region":"z0"}`)
	// The seeds give resize no output: not deploy's "to view you deploy".
	if !strings.Contains(r.stdout, "Resize success") || !strings.Contains(r.stdout, "` to view the deployment\n") || strings.Contains(r.stdout, "view you") {
		t.Fatalf("resize: %q", r.stdout)
	}
}

// withPolicy returns d with a policy in force as the admin answers it.
func withPolicy(d dora.Deployment) dora.Deployment {
	d.Autoscale = &dora.AutoscalePolicy{Target: 2, StableWindow: 6 * time.Second, PanicWindow: time.Second, PanicThreshold: 2,
		MaxScaleUpRate: 10, MaxScaleDownRate: 2, ScaleDownCooldown: time.Second, EvaluationInterval: 200 * time.Millisecond}
	return d
}

// TestDeployHelpDefaults: the help states the ceiling the admin picks
// when --max is not given (docs/api.md), not a fixed 5.
func TestDeployHelpDefaults(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"deploy", "--help"}, []string{"--max int", "default: 5, or your per-ufop instance limit if less, but at least --expect"}},
		{[]string{"resize", "--help"}, []string{"raising its ceiling to n", "at least n (as deploy without --max)", "the ceiling rises to it if lower"}},
	} {
		r := mustOK(t, runCLI(t, nil, "", c.args...))
		out := strings.Join(strings.Fields(r.stdout), " ")
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v lacks %q:\n%s", c.args, w, r.stdout)
			}
		}
		if strings.Contains(out, "(default 5)") {
			t.Errorf("%v still says (default 5):\n%s", c.args, r.stdout)
		}
	}
}
