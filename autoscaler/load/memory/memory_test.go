package memory_test

import (
	"context"
	"testing"
	"time"

	"github.com/doraproject/dora/autoscaler/load"
	"github.com/doraproject/dora/autoscaler/load/loadtest"
	"github.com/doraproject/dora/autoscaler/load/memory"
)

func TestContract(t *testing.T) {
	loadtest.Run(t, func(t *testing.T, retention time.Duration) load.Store {
		return memory.New(retention)
	})
}

// Old seconds are freed, not just hidden, once newer samples arrive.
func TestPruneFreesMemory(t *testing.T) {
	s := memory.New(10 * time.Second)
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 1000 {
		k := load.Key{Ufop: "u", Version: "1", Region: "z0"}
		if i%2 == 1 {
			k.Version = "2"
		}
		if err := s.Record(ctx, []load.Sample{{Key: k, Time: t0.Add(time.Duration(i) * time.Second), Concurrency: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Seconds(); n > 10 {
		t.Fatalf("%d seconds kept, want at most 10", n)
	}
}

// The process clock stepped back (an NTP correction after it ran ahead):
// the seconds recorded from then on are kept and averaged, not dropped as
// past retention relative to the seconds recorded while it ran ahead.
func TestClockSteppedBackKeepsRecording(t *testing.T) {
	s := memory.New(10 * time.Minute)
	ctx := context.Background()
	k := load.Key{Ufop: "u", Version: "1", Region: "z0"}
	t0 := time.Unix(1_700_000_000, 0)
	if err := s.Record(ctx, []load.Sample{{Key: k, Time: t0.Add(time.Hour), Concurrency: 50}}); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if err := s.Record(ctx, []load.Sample{{Key: k, Time: t0.Add(time.Duration(i) * time.Second), Concurrency: 6}}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := s.Averages(ctx, k, t0.Add(6*time.Second), time.Minute, 6*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if a.PanicSeconds != 6 || a.Panic != 6 {
		t.Fatalf("Averages = %+v, want the 6 seconds recorded after the clock stepped back", a)
	}
}
