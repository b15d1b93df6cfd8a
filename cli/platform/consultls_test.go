package platform

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/cli/platform/platformtest"
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

// TestNomadRuntimeFollowsTLSEnvironment: with a TLS Nomad (NOMAD_CACERT,
// as the nomad CLI takes it), the nomad:// runtime speaks HTTPS with that
// CA: it always spoke plain HTTP, so a TLS Nomad (docs/production.md asks
// for one) could not be used.
func TestNomadRuntimeFollowsTLSEnvironment(t *testing.T) {
	var asked atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("[]")) // no jobs

	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOMAD_ADDR", "")
	t.Setenv("NOMAD_CACERT", ca)
	rt, err := OpenRuntime("nomad://"+strings.TrimPrefix(srv.URL, "https://"), RuntimeOptions{Logger: platformtest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Status(context.Background(), "deploy-x"); !errors.Is(err, runtime.ErrNotFound) || asked.Load() == 0 {
		t.Fatalf("status over TLS = %v (%d requests reached the server), want ErrNotFound from it", err, asked.Load())
	}
	for env, want := range map[string]string{"": "http", "https://n:4646": "https", "HTTPS://n:4646": "https", "http://n:4646": "http"} {
		if got := nomadScheme(func(k string) string {
			if k == "NOMAD_ADDR" {
				return env
			}
			return ""
		}); got != want {
			t.Errorf("NOMAD_ADDR=%q: scheme %s, want %s", env, got, want)
		}
	}
}
