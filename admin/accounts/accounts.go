// Package accounts resolves access keys to accounts in the metadata store
// (aks/<ak> → account id, accounts/<id> → dora.Account). The admin API,
// the pfop handler and the registry's basic auth share it, so that they
// agree on which keys are valid.
package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
)

// ErrNoAccount: the AK is unknown, or its account is disabled or no longer
// holds it.
var ErrNoAccount = errors.New("unknown or disabled access key")

// ErrLookup: the store did not answer the access-key lookup (an outage).
// A signature that could not be checked for this reason is a 503 (retry),
// not a 401 (which tells the client its keys are wrong).
var ErrLookup = errors.New("access key lookup failed")

// ByAK returns the enabled account whose access key is ak; an error
// wrapping ErrNoAccount when there is none, a store error wrapping
// ErrLookup when the store did not answer.
func ByAK(ctx context.Context, st store.Store, ak string) (dora.Account, error) {
	kv, err := st.Get(ctx, store.AccessKeyKey(ak))
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) {
		// An AK that cannot even be a store key (a byte no key may
		// hold) names no account: not an outage.
		return dora.Account{}, ErrNoAccount
	}
	if err != nil {
		return dora.Account{}, fmt.Errorf("%w: %w", ErrLookup, err)
	}
	key := store.AccountKey(string(kv.Value))
	akv, err := st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return dora.Account{}, ErrNoAccount
	}
	if err != nil {
		return dora.Account{}, fmt.Errorf("%w: get %s: %w", ErrLookup, key, err)
	}
	var a dora.Account
	if err := json.Unmarshal(akv.Value, &a); err != nil {
		return dora.Account{}, fmt.Errorf("decode %s: %w", key, err)
	}
	if a.Disabled || a.AccessKey != ak {
		return dora.Account{}, ErrNoAccount
	}
	return a, nil
}
