package admin

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// FuzzReleaseConfig feeds arbitrary JSON to POST /v1/releases' decoding and
// validation: no panic, and an accepted release obeys the documented limits.
func FuzzReleaseConfig(f *testing.F) {
	f.Add([]byte(`{"ufopname":"grepd","verstr":"v1","image":"x:v1","flavor":"C1M1","health_check":{"path":"/h","timeout":3}}`))
	f.Add([]byte(`{"ufopname":"a","verstr":"v1","image":"i","flavor":"f","timeouts":{"connect":"2s","idle":5},"autoscale":{"target":3}}`))
	f.Add([]byte(`{"env":{"global":[{"key":"K","value":"V"}]},"protocol":"UFOP"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var rc ReleaseConfig
		if json.Unmarshal(b, &rc) != nil {
			return
		}
		rel, err := checkRelease(rc, time.Now())
		if err != nil {
			return
		}
		if rel.Ufop == "" || !versionRE.MatchString(rel.Version) || rel.Image == "" || rel.Flavor == "" {
			t.Fatalf("accepted %+v", rel)
		}
		if rel.HealthCheck.Timeout < 0 || rel.HealthCheck.Timeout > MaxHealthTimeout ||
			(rel.HealthCheck.Path != "" && !strings.HasPrefix(rel.HealthCheck.Path, "/")) {
			t.Fatalf("accepted health check %+v", rel.HealthCheck)
		}
		if rel.Protocol != "dora" && rel.Protocol != "ufop" {
			t.Fatalf("accepted protocol %q", rel.Protocol)
		}
	})
}
