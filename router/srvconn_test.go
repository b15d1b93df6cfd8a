package router

import (
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/pool"
)

// TestStepLongerThanReadTimeout: a step that answers after the server's
// ReadTimeout (which bounds reading a request, not serving it) still
// completes: the client's connection is not taken for gone.
func TestStepLongerThanReadTimeout(t *testing.T) {
	sp := startExample(t, "slowpoke")
	e := newEnv(t, func(c *Config) { c.ReadTimeout = 300 * time.Millisecond })
	e.ufop(dora.Ufop{Name: "slowpoke", Owner: alice.ID}, dora.ProtocolDora)
	e.pool.Update([]pool.Instance{poolInst("s0", "slowpoke", "v1", sp.addr)})
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	resp, body := e.get("photos.localhost", "/k?slowpoke/1200")
	if resp.StatusCode != 200 || string(body) != "abc" {
		t.Fatalf("step of 1.2 s with a 300 ms ReadTimeout: %d %q", resp.StatusCode, body)
	}
}
