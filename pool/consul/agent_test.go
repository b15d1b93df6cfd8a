package consul

import (
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

// syncBuffer is the shared concurrent-safe log sink.
type syncBuffer = agenttest.SyncBuffer
