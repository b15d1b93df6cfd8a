package consul

import (
	"bytes"
	"sync"
	"testing"

	"github.com/doraproject/dora/internal/agenttest"
	"github.com/hashicorp/consul/api"
)

// clientFor returns an API client of the test agent.
func clientFor(t *testing.T, a *agenttest.Consul) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = a.Addr
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// registerTTL registers a service instance with a TTL check in the given state.
func registerTTL(t *testing.T, c *api.Client, name, id string, port int, tags []string, meta map[string]string, status string) {
	t.Helper()
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: name, Address: "127.0.0.1", Port: port, Tags: tags, Meta: meta,
		Check: &api.AgentServiceCheck{CheckID: "check-" + id, TTL: "1h", Status: status},
	})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

func setTTL(t *testing.T, c *api.Client, id, status string) {
	t.Helper()
	if err := c.Agent().UpdateTTL("check-"+id, "test", status); err != nil {
		t.Fatalf("update ttl %s: %v", id, err)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (logs).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Count(sub string) int {
	return bytes.Count([]byte(s.String()), []byte(sub))
}
