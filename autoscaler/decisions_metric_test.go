package autoscaler

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/doraproject/dora"
)

// TestDecisionsMetric: every evaluation is counted by direction and
// reason in dora_autoscaler_decisions_total, changes or not.
func TestDecisionsMetric(t *testing.T) {
	h := newHarness(t)
	d := dep("deploy-a", 1, 5, 2, dora.DeployRunning)
	h.put(depKey(d), d)
	h.concurrency(d, 30)
	h.tick()
	want := `dora_autoscaler_decisions_total{direction="up",reason="` + ReasonScaleUp + `"} 1`
	got, err := testutil.GatherAndCount(h.reg, "dora_autoscaler_decisions_total")
	if err != nil || got == 0 {
		t.Fatalf("no decisions series: %d %v", got, err)
	}
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader("# HELP dora_autoscaler_decisions_total Scaling evaluations, by direction (up, down, hold) and the reason of the decision.\n# TYPE dora_autoscaler_decisions_total counter\n"+want+"\n"), "dora_autoscaler_decisions_total"); err != nil {
		t.Fatal(err)
	}
}
