package api

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestDurationJSONAndValue(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{`"2s"`, 2 * time.Second, false},
		{`"1m30s"`, 90 * time.Second, false},
		{`90`, 90 * time.Second, false},
		{`"90"`, 90 * time.Second, false},
		{`1.5`, 1500 * time.Millisecond, false},
		{`""`, 0, false},
		{`null`, 0, false},
		{`"soon"`, 0, true},
	} {
		var tc2 TimeoutsConfig
		err := json.Unmarshal([]byte(`{"connect":`+tc.in+`}`), &tc2)
		if err != nil {
			t.Fatalf("%s: unmarshal: %v", tc.in, err)
		}
		got, err := tc2.Connect.Value()
		if tc.bad {
			var de *DurationError
			if !errors.As(err, &de) {
				t.Errorf("%s: want a DurationError, got %v", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	var tc TimeoutsConfig
	if err := json.Unmarshal([]byte(`{"idle":{}}`), &tc); err == nil {
		t.Error("an object as a duration must be refused")
	}
}

func TestPfopCodes(t *testing.T) {
	if PfopDesc(PfopSuccess) != "The fop was completed successfully" || PfopDesc(42) != "code 42" {
		t.Fatalf("descs: %q %q", PfopDesc(PfopSuccess), PfopDesc(42))
	}
	for code, final := range map[int]bool{PfopSuccess: true, PfopWaiting: false, PfopProcessing: false, PfopFailed: true, PfopNotifyFailed: true} {
		if PfopFinal(code) != final {
			t.Errorf("PfopFinal(%d) = %v", code, !final)
		}
	}
}

func TestKeyPathKeepsSlashes(t *testing.T) {
	if got := KeyPath("dir/a b?.txt"); got != "dir/a%20b%3F.txt" {
		t.Fatalf("KeyPath = %q", got)
	}
	if got := Seg("a/b"); got != "a%2Fb" {
		t.Fatalf("Seg = %q", got)
	}
}
