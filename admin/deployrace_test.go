package admin

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/doraproject/dora/internal/store"
)

// beforeTxnStore runs hook once, before the first transaction that writes
// a key under prefix: a concurrent call that lands between a handler's
// reads and its write.
type beforeTxnStore struct {
	store.Store
	prefix string
	once   sync.Once
	hook   func()
}

func (s *beforeTxnStore) Txn(ctx context.Context, ops []store.Op) error {
	for _, op := range ops {
		if op.Kind == store.OpPut && len(op.Key) > len(s.prefix) && op.Key[:len(s.prefix)] == s.prefix && s.hook != nil {
			s.once.Do(s.hook)
			break
		}
	}
	return s.Store.Txn(ctx, ops)
}

// A deploy or resize racing with the ufop's DELETE wrote its deployment
// after the delete had removed the others and the ufop record: the
// deployment outlived its ufop (a record nobody lists, instances nobody
// stops) and a later ufop of the same name, another account's, inherited
// it.
func TestDeployRacingDeleteUfop(t *testing.T) {
	for _, call := range []struct {
		name, path string
		body       map[string]any
	}{
		{"deploy", "/v1/ufops/grepd/deployments", map[string]any{"version": "v1", "expect": 1, "region": "z1"}},
		{"resize", "/v1/ufops/grepd/resize", map[string]any{"num": 1, "region": "z1"}},
	} {
		t.Run(call.name, func(t *testing.T) {
			bs := &beforeTxnStore{prefix: store.DeploymentsOf("grepd")}
			e := newEnv(t, func(c *Config) {
				bs.Store = c.Store
				c.Store = bs
			})
			alice := e.user("alice", 0)
			e.deployGrepd(alice, 1)
			bs.once = sync.Once{}
			bs.hook = func() { e.must(http.StatusNoContent, alice, "DELETE", "/v1/ufops/grepd", nil, nil) }
			r := e.req(alice, "POST", call.path, call.body)
			if r.Status != http.StatusNotFound {
				t.Errorf("%s after the ufop was deleted: %d %s, want 404", call.name, r.Status, r.Body)
			}
			kvs, err := e.st.List(context.Background(), store.DeploymentsOf("grepd"))
			if err != nil || len(kvs) != 0 {
				t.Errorf("deployments of the deleted ufop: %d %v", len(kvs), err)
			}
			e.rt.mu.Lock()
			n := len(e.rt.specs)
			e.rt.mu.Unlock()
			if n != 0 {
				t.Errorf("%d deployments still run", n)
			}
		})
	}
}
