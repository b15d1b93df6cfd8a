package accounts_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/accounts"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/bolt/bolttest"
)

func TestByAK(t *testing.T) {
	st := bolttest.Open(t, t.TempDir())
	ctx := context.Background()
	put := func(key string, v []byte) {
		t.Helper()
		if _, err := st.Put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
	}
	acct := func(a dora.Account) {
		t.Helper()
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		put(store.AccountKey(a.ID), b)
		put(store.AccessKeyKey(a.AccessKey), []byte(a.ID))
	}
	acct(dora.Account{ID: "1", AccessKey: "ak-alice", SecretKey: "sk"})
	acct(dora.Account{ID: "2", AccessKey: "ak-bob", Disabled: true})
	acct(dora.Account{ID: "3", AccessKey: "ak-carol-new"})
	put(store.AccessKeyKey("ak-carol-old"), []byte("3")) // rotated away
	put(store.AccessKeyKey("ak-ghost"), []byte("9"))     // account gone
	put(store.AccessKeyKey("ak-broken"), []byte("4"))
	put(store.AccountKey("4"), []byte("{not json"))

	if a, err := accounts.ByAK(ctx, st, "ak-alice"); err != nil || a.ID != "1" || a.SecretKey != "sk" {
		t.Fatalf("alice = %+v, %v", a, err)
	}
	// "\xa8" and "a\x00b" cannot be store keys: no account, not a lookup
	// that failed (which answers 503, retry).
	for _, ak := range []string{"ak-bob", "ak-carol-old", "ak-ghost", "nobody", "\xa8", "a\x00b"} {
		if _, err := accounts.ByAK(ctx, st, ak); !errors.Is(err, accounts.ErrNoAccount) {
			t.Errorf("ByAK(%q) = %v, want ErrNoAccount", ak, err)
		}
	}
	if _, err := accounts.ByAK(ctx, st, "ak-broken"); err == nil || errors.Is(err, accounts.ErrNoAccount) {
		t.Errorf("a corrupt record: %v, want a decode error", err)
	}
}
