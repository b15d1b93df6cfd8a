package platform

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/hashicorp/consul/api"

	"github.com/doraproject/dora/admin"
	"github.com/doraproject/dora/autoscaler/lock"
	"github.com/doraproject/dora/internal/leader"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/consulkv"
)

// AdminLockKey is the store-relative key of the admins' leader lock (the
// background work that must run once: reconcile, build recovery); like
// LockKey it lives under the Consul store's prefix.
const AdminLockKey = "locks/admin"

// adminElector is the admin's leader election: a Consul lock on
// <store prefix>AdminLockKey when the store is Consul (client non-nil),
// else leader.Always (an embedded store has one process).
func adminElector(st store.Store, client *api.Client, self string, log *slog.Logger) admin.Elector {
	if client == nil {
		return leader.Always{}
	}
	key := AdminLockKey
	if ck, ok := st.(*consulkv.Store); ok {
		key = ck.Prefix() + AdminLockKey
	}
	host, _ := os.Hostname()
	return leader.Consul{Client: client, Key: key, Options: lock.Options{
		Value:       []byte(fmt.Sprintf("%s pid %d %s", host, os.Getpid(), self)),
		SessionName: "dora admin " + key,
		Logger:      log,
	}}
}
