package admin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"sort"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/accounts"
	"github.com/doraproject/dora/internal/store"
)

// casRetries bounds read-modify-write loops that lose CAS races.
const casRetries = 8

// errNoAccount: the AK is unknown or its account is disabled.
var errNoAccount = accounts.ErrNoAccount

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the dora types are marshalled here; they always encode.
		panic(fmt.Sprintf("admin: marshal %T: %v", v, err))
	}
	return b
}

// accountByAK resolves aks/<ak> → accounts/<id>; errNoAccount when the AK
// is unknown or the account disabled.
func (s *Server) accountByAK(ctx context.Context, ak string) (dora.Account, error) {
	return accounts.ByAK(ctx, s.st, ak)
}

// lookupSK is the auth.KeyLookup of the API: enabled accounts only.
func (s *Server) lookupSK(ctx context.Context, ak string) (string, error) {
	acct, err := s.accountByAK(ctx, ak)
	if err != nil {
		return "", err
	}
	return acct.SecretKey, nil
}

// lookupRootSK accepts only the root account's keys (artifact tokens).
func (s *Server) lookupRootSK(ctx context.Context, ak string) (string, error) {
	acct, err := s.accountByAK(ctx, ak)
	if err != nil {
		return "", err
	}
	if !acct.Root {
		return "", errors.New("artifact tokens must be made with the root keys")
	}
	return acct.SecretKey, nil
}

const urlSafe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// randomKey returns n random URL-safe characters.
func randomKey(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = urlSafe[int(b[i])%len(urlSafe)] // 256 % 64 == 0: uniform
	}
	return string(b)
}

// randomAccountID returns a 10-digit decimal id without a leading zero.
func randomAccountID() string {
	n, err := rand.Int(rand.Reader, big.NewInt(9_000_000_000))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return fmt.Sprint(1_000_000_000 + n.Int64())
}

func publicAccount(a dora.Account) dora.Account {
	a.SecretKey = ""
	return a
}

// validKeyChars reports whether s is made of URL-safe characters only.
func validKeyChars(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ErrBadCredentials is returned by BasicAuthenticator's function for an
// unknown AK, a wrong SK or a disabled account.
var ErrBadCredentials = errors.New("bad credentials")

// BasicAuthenticator returns a check of HTTP Basic credentials (user = AK,
// password = SK) against the store, for the OCI registry under /v2/: the
// enabled account they belong to, or an error wrapping ErrBadCredentials.
func BasicAuthenticator(st store.Store) func(ctx context.Context, user, password string) (dora.Account, error) {
	return func(ctx context.Context, user, password string) (dora.Account, error) {
		if user == "" || password == "" || !validKeyChars(user) {
			return dora.Account{}, fmt.Errorf("access key %q: %w", user, ErrBadCredentials)
		}
		acct, err := accounts.ByAK(ctx, st, user)
		if errors.Is(err, accounts.ErrNoAccount) {
			return dora.Account{}, fmt.Errorf("access key %q: %w", user, ErrBadCredentials)
		}
		if err != nil {
			return dora.Account{}, err
		}
		if subtle.ConstantTimeCompare([]byte(acct.SecretKey), []byte(password)) != 1 {
			return dora.Account{}, fmt.Errorf("access key %q: %w", user, ErrBadCredentials)
		}
		return acct, nil
	}
}

// EnsureRoot makes sure exactly one enabled root account exists, with these
// keys, and returns it. On the first start it creates it. When the keys
// change: a new SK is set on the account of the AK; a new AK that belongs
// to no account moves to the existing root account (its old AK stops
// working; its buckets and ufops stay its own); a new AK of an existing
// account makes that account the root. Any other root account is then
// demoted and disabled, so the old root keys stop working.
func EnsureRoot(ctx context.Context, st store.Store, ak, sk string) (dora.Account, error) {
	if len(ak) < 16 || len(ak) > 64 || !validKeyChars(ak) {
		return dora.Account{}, errors.New("ensure root: the root AK must be 16 to 64 characters of A-Z a-z 0-9 - _")
	}
	if len(sk) < 16 || len(sk) > 128 {
		return dora.Account{}, errors.New("ensure root: the root SK must be 16 to 128 characters")
	}
	for i := 0; i < casRetries; i++ {
		acct, err := ensureRootOnce(ctx, st, ak, sk)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return dora.Account{}, fmt.Errorf("ensure root: %w", err)
		}
		if err := demoteOtherRoots(ctx, st, acct.ID); err != nil {
			return dora.Account{}, fmt.Errorf("ensure root: %w", err)
		}
		return acct, nil
	}
	return dora.Account{}, fmt.Errorf("ensure root: %w", store.ErrConflict)
}

// ensureRootOnce is one attempt of EnsureRoot before the demotions; a lost
// race returns store.ErrConflict.
func ensureRootOnce(ctx context.Context, st store.Store, ak, sk string) (dora.Account, error) {
	kv, err := st.Get(ctx, store.AccessKeyKey(ak))
	if errors.Is(err, store.ErrNotFound) {
		return moveRootTo(ctx, st, ak, sk)
	}
	if err != nil {
		return dora.Account{}, err
	}
	key := store.AccountKey(string(kv.Value))
	acct, ver, err := store.Get[dora.Account](ctx, st, key)
	if err != nil {
		return dora.Account{}, err
	}
	if acct.Root && !acct.Disabled && acct.SecretKey == sk && acct.AccessKey == ak {
		return acct, nil
	}
	acct.Root, acct.Disabled, acct.SecretKey, acct.AccessKey = true, false, sk, ak
	if _, err := st.CAS(ctx, key, mustJSON(acct), ver); err != nil {
		return dora.Account{}, fmt.Errorf("update: %w", err)
	}
	return acct, nil
}

// moveRootTo gives an AK no account holds to the existing root account (the
// oldest, when there are several), or creates the root account.
func moveRootTo(ctx context.Context, st store.Store, ak, sk string) (dora.Account, error) {
	accts, kvs, err := store.List[dora.Account](ctx, st, store.PrefixAccounts)
	if err != nil {
		return dora.Account{}, err
	}
	old := -1
	for i, a := range accts {
		if a.Root && (old < 0 || a.Created.Before(accts[old].Created)) {
			old = i
		}
	}
	if old < 0 {
		acct := dora.Account{
			ID: randomAccountID(), Name: "root", AccessKey: ak, SecretKey: sk,
			Root: true, InstanceLimit: 100, Created: nowUTC(),
		}
		err := st.Txn(ctx, []store.Op{
			{Kind: store.OpPut, Key: store.AccountKey(acct.ID), Value: mustJSON(acct), CreateOnly: true},
			{Kind: store.OpPut, Key: store.AccessKeyKey(ak), Value: []byte(acct.ID), CreateOnly: true},
		})
		if err != nil {
			return dora.Account{}, fmt.Errorf("create: %w", err)
		}
		return acct, nil
	}
	acct := accts[old]
	ops := []store.Op{{Kind: store.OpPut, Key: store.AccessKeyKey(ak), Value: []byte(acct.ID), CreateOnly: true}}
	// Free the old AK when it still names this account.
	if okv, err := st.Get(ctx, store.AccessKeyKey(acct.AccessKey)); err == nil && string(okv.Value) == acct.ID {
		ops = append(ops, store.Op{Kind: store.OpDelete, Key: okv.Key, Version: okv.Version})
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return dora.Account{}, err
	}
	acct.AccessKey, acct.SecretKey, acct.Disabled = ak, sk, false
	ops = append(ops, store.Op{Kind: store.OpPut, Key: kvs[old].Key, Value: mustJSON(acct), Version: kvs[old].Version})
	if err := st.Txn(ctx, ops); err != nil {
		return dora.Account{}, fmt.Errorf("move the root to a new access key: %w", err)
	}
	return acct, nil
}

// demoteOtherRoots makes every root account but id an ordinary, disabled
// one: its keys are not the configured root keys any more.
func demoteOtherRoots(ctx context.Context, st store.Store, id string) error {
	for i := 0; i < casRetries; i++ {
		accts, kvs, err := store.List[dora.Account](ctx, st, store.PrefixAccounts)
		if err != nil {
			return err
		}
		conflict := false
		for j, a := range accts {
			if !a.Root || a.ID == id {
				continue
			}
			a.Root, a.Disabled = false, true
			if _, err := st.CAS(ctx, kvs[j].Key, mustJSON(a), kvs[j].Version); errors.Is(err, store.ErrConflict) {
				conflict = true
			} else if err != nil {
				return fmt.Errorf("demote former root %s: %w", a.ID, err)
			}
		}
		if !conflict {
			return nil
		}
	}
	return fmt.Errorf("demote former roots: %w", store.ErrConflict)
}

// ---- identity and accounts ----

func (s *Server) whoami(w http.ResponseWriter, r *http.Request, c *call) error {
	writeJSON(w, http.StatusOK, publicAccount(c.acct))
	return nil
}

// MaxInstanceLimit caps an account's instance limit.
const MaxInstanceLimit = 1000

func (s *Server) createAccount(w http.ResponseWriter, r *http.Request, c *call) error {
	var req struct {
		Name          string `json:"name"`
		InstanceLimit int    `json:"instanceLimit"`
	}
	if err := c.decode(r, &req); err != nil {
		return err
	}
	if len(req.Name) > 64 {
		return errf(http.StatusBadRequest, "name: at most 64 bytes")
	}
	if msg := badText(req.Name); msg != "" {
		return errf(http.StatusBadRequest, "name: %s", msg)
	}
	if req.InstanceLimit < 0 || req.InstanceLimit > MaxInstanceLimit {
		return errf(http.StatusBadRequest, "instanceLimit: must be 0 to %d", MaxInstanceLimit)
	}
	for i := 0; i < casRetries; i++ {
		acct := dora.Account{
			ID: randomAccountID(), Name: req.Name,
			AccessKey: randomKey(32), SecretKey: randomKey(40),
			InstanceLimit: req.InstanceLimit, Created: s.nowUTC(),
		}
		if acct.InstanceLimit == 0 {
			acct.InstanceLimit = dora.DefaultInstanceLimit
		}
		err := s.st.Txn(r.Context(), []store.Op{
			{Kind: store.OpPut, Key: store.AccountKey(acct.ID), Value: mustJSON(acct), CreateOnly: true},
			{Kind: store.OpPut, Key: store.AccessKeyKey(acct.AccessKey), Value: []byte(acct.ID), CreateOnly: true},
		})
		if errors.Is(err, store.ErrConflict) {
			continue // id collision: draw again
		}
		if err != nil {
			return fmt.Errorf("create account: %w", err)
		}
		writeJSON(w, http.StatusCreated, acct)
		return nil
	}
	return fmt.Errorf("create account: %w", store.ErrConflict)
}

func (s *Server) listAccounts(w http.ResponseWriter, r *http.Request, c *call) error {
	accts, _, err := store.List[dora.Account](r.Context(), s.st, store.PrefixAccounts)
	if err != nil {
		return err
	}
	for i := range accts {
		accts[i] = publicAccount(accts[i])
	}
	sort.Slice(accts, func(i, j int) bool { return accts[i].Created.Before(accts[j].Created) })
	writeJSON(w, http.StatusOK, accts)
	return nil
}

func (s *Server) disableAccount(w http.ResponseWriter, r *http.Request, c *call) error {
	id := r.PathValue("id")
	acct, err := s.updateAccount(r.Context(), id, func(a *dora.Account) error {
		if a.Root {
			return errf(http.StatusBadRequest, "the root account cannot be disabled")
		}
		a.Disabled = true
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, publicAccount(acct))
	return nil
}

// updateAccount applies fn to accounts/<id> with CAS retries; 404 when the
// account does not exist.
func (s *Server) updateAccount(ctx context.Context, id string, fn func(*dora.Account) error) (dora.Account, error) {
	for i := 0; i < casRetries; i++ {
		acct, ver, err := store.Get[dora.Account](ctx, s.st, store.AccountKey(id))
		if errors.Is(err, store.ErrNotFound) {
			return dora.Account{}, errf(http.StatusNotFound, "account %q not found", id)
		}
		if err != nil {
			return dora.Account{}, err
		}
		if err := fn(&acct); err != nil {
			return dora.Account{}, err
		}
		if _, err := s.st.CAS(ctx, store.AccountKey(id), mustJSON(acct), ver); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return dora.Account{}, fmt.Errorf("update account %s: %w", id, err)
		}
		return acct, nil
	}
	return dora.Account{}, fmt.Errorf("update account %s: %w", id, store.ErrConflict)
}

func (s *Server) listRegions(w http.ResponseWriter, r *http.Request, c *call) error {
	writeJSON(w, http.StatusOK, s.regions)
	return nil
}

func (s *Server) listFlavors(w http.ResponseWriter, r *http.Request, c *call) error {
	writeJSON(w, http.StatusOK, s.flavors)
	return nil
}

func nowUTC() time.Time { return time.Now().UTC() }

func (s *Server) nowUTC() time.Time { return s.now().UTC() }

// newOwnerID is a random id of this admin process (dora.Build.Owner).
func newOwnerID() string { return randomKey(16) }
