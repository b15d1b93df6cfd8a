package platform

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConsulClientsFollowTLSEnvironment: with a TLS Consul
// (CONSUL_HTTP_SSL=true, CONSUL_CACERT), the Consul client of the
// discovery, the leader locks and Nomad's health checks (ConsulClient)
// speaks HTTPS as the consul:// store does: it forced plain HTTP, so on a
// TLS-only agent the store worked while the locks and the discovery
// failed.
func TestConsulClientsFollowTLSEnvironment(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`"127.0.0.1:8300"`))
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CONSUL_HTTP_SSL", "true")
	t.Setenv("CONSUL_CACERT", ca)
	host := strings.TrimPrefix(srv.URL, "https://")
	c, err := ConsulClient("consul://" + host)
	if err != nil {
		t.Fatal(err)
	}
	if leader, err := c.Status().LeaderWithQueryOptions(nil); err != nil || leader == "" {
		t.Fatalf("leader over the TLS environment = %q, %v", leader, err)
	}
}
