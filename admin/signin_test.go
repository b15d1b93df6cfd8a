package admin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
)

// getCounter counts the store reads of account records (aks/, accounts/).
type getCounter struct {
	store.Store
	mu sync.Mutex
	n  int
}

func (c *getCounter) Get(ctx context.Context, key string) (store.KV, error) {
	if strings.HasPrefix(key, store.PrefixAccessKeys) || strings.HasPrefix(key, store.PrefixAccounts) {
		c.mu.Lock()
		c.n++
		c.mu.Unlock()
	}
	return c.Store.Get(ctx, key)
}

func (c *getCounter) take() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = 0
	return n
}

// TestSignInSameWork: a sign-in with an unknown AK does the same work as
// one with a known AK and a wrong SK (or a disabled account's AK): as many
// reads of the account records, one SK comparison, and the same answer, so
// that neither the reply nor its time tells which AKs exist.
func TestSignInSameWork(t *testing.T) {
	gets := &getCounter{}
	e := newEnv(t, func(c *Config) { gets.Store = c.Store; c.Store = gets })
	compares := 0
	inner := e.srv.secretEqual
	e.srv.secretEqual = func(given, want string) bool { compares++; return inner(given, want) }
	off := dora.Account{ID: "4242", Name: "off", AccessKey: "disabledAccessKey0123", SecretKey: "disabledSecretKey0123456789abcdefgh", Disabled: true}
	b, _ := json.Marshal(off)
	ctx := context.Background()
	if _, err := e.st.Put(ctx, store.AccountKey(off.ID), b); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Put(ctx, store.AccessKeyKey(off.AccessKey), []byte(off.ID)); err != nil {
		t.Fatal(err)
	}
	// A key whose account record is gone.
	if _, err := e.st.Put(ctx, store.AccessKeyKey("danglingAccessKey0123"), []byte("999")); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		status, gets, compares int
		body                   string
	}
	signIn := func(ak, sk string) answer {
		t.Helper()
		gets.take()
		compares = 0
		r, err := http.PostForm(e.ts.URL+"/console/login", url.Values{"ak": {ak}, "sk": {sk}})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		return answer{status: r.StatusCode, gets: gets.take(), compares: compares, body: string(body)}
	}
	want := signIn(testRootAK, "wrongSecretKey0123456789abcdefghij")
	if want.status != http.StatusUnauthorized || want.compares != 1 || want.gets == 0 {
		t.Fatalf("a wrong SK: %+v", want)
	}
	for name, c := range map[string][2]string{
		"unknown AK":                {"unknownAccessKey01234", testRootSK},
		"unknown AK, other SK size": {"unknownAccessKey01234", "x"},
		"disabled, its own SK":      {off.AccessKey, off.SecretKey},
		"disabled, wrong SK":        {off.AccessKey, "wrongSecretKey0123456789abcdefghij"},
		"dangling AK":               {"danglingAccessKey0123", testRootSK},
	} {
		if got := signIn(c[0], c[1]); got != want {
			t.Errorf("%s: %+v, want the same as a wrong SK: %+v", name, got, want)
		}
	}
	if got := signIn(testRootAK, testRootSK); got.status != http.StatusOK {
		t.Fatalf("the right SK: %+v", got)
	}
}

// TestSessionCookieSameWork: a forged session cookie naming an unknown AK
// costs the same reads of the account records as one naming a known AK
// (its MAC is checked either way) and gets the same answer, so that
// GET /console/session does not tell which AKs exist either.
func TestSessionCookieSameWork(t *testing.T) {
	gets := &getCounter{}
	e := newEnv(t, func(c *Config) { gets.Store = c.Store; c.Store = gets })
	type answer struct {
		status, gets int
		body         string
	}
	probe := func(ak string) answer {
		t.Helper()
		payload := base64.RawURLEncoding.EncodeToString([]byte(ak + "|" + strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) + "|csrf|0"))
		forged := payload + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 32))
		req, _ := http.NewRequest(http.MethodGet, e.ts.URL+"/console/session", nil)
		req.AddCookie(&http.Cookie{Name: SessionCookie, Value: forged})
		gets.take()
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		return answer{r.StatusCode, gets.take(), string(body)}
	}
	known, unknown := probe(testRootAK), probe("unknownAccessKey01234")
	if known.status != http.StatusUnauthorized || known != unknown {
		t.Fatalf("a forged cookie of a known AK: %+v; of an unknown AK: %+v", known, unknown)
	}
}

// TestCandidateAccountIsByAK: the console's equal-work lookup accepts and
// refuses the same AKs as accounts.ByAK, which every signed request uses.
func TestCandidateAccountIsByAK(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	put := func(key string, v []byte) {
		if _, err := e.st.Put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []dora.Account{
		{ID: "4242", AccessKey: "disabledAccessKey0123", SecretKey: "s1s1s1s1s1s1s1s1", Disabled: true},
		{ID: "4343", AccessKey: "enabledAccessKey01234", SecretKey: "s2s2s2s2s2s2s2s2"},
		{ID: "4444", AccessKey: "movedAccessKeyNow0123", SecretKey: "s3s3s3s3s3s3s3s3"},
	} {
		b, _ := json.Marshal(a)
		put(store.AccountKey(a.ID), b)
		put(store.AccessKeyKey(a.AccessKey), []byte(a.ID))
	}
	put(store.AccessKeyKey("movedAccessKeyOld0123"), []byte("4444")) // its account moved to another AK
	put(store.AccessKeyKey("danglingAccessKey0123"), []byte("999"))
	for _, ak := range []string{testRootAK, "enabledAccessKey01234", "disabledAccessKey0123", "movedAccessKeyNow0123",
		"movedAccessKeyOld0123", "danglingAccessKey0123", "unknownAccessKey01234", noAccountID} {
		want, werr := e.srv.accountByAK(ctx, ak)
		got, found, err := e.srv.candidateAccount(ctx, ak)
		if err != nil || found != (werr == nil) || (found && !reflect.DeepEqual(got, want)) {
			t.Errorf("%s: candidateAccount %+v, %v, %v; accounts.ByAK %+v, %v", ak, got, found, err, want, werr)
		}
	}
}
