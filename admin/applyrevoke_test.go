package admin

import (
	"net/http"
	"slices"
	"testing"

	"github.com/doraproject/dora"
)

// A protected ufop made private (or public) and then protected again:
// the accounts that had applied for it while it was protected lost their
// access when it left protected, and do not get it back when it is
// protected again; they apply again like anyone else.
func TestLeavingProtectedRevokesApplications(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.user("alice", 0), e.user("bob", 0)
	e.ufop(alice, "grepd", dora.ModeProtected)
	e.must(http.StatusOK, bob, "POST", "/v1/ufops/grepd/apply", nil, nil)
	e.must(http.StatusOK, bob, "GET", "/v1/ufops/grepd", nil, nil)

	for _, away := range []string{"private", "public"} {
		who := alice
		if away == "public" {
			who = e.root
			// Only root makes a ufop public: root's own protected ufop.
			e.ufop(e.root, "rootgrep", dora.ModeProtected)
			e.must(http.StatusOK, bob, "POST", "/v1/ufops/rootgrep/apply", nil, nil)
		}
		name := map[string]string{"private": "grepd", "public": "rootgrep"}[away]
		e.must(http.StatusOK, who, "POST", "/v1/ufops/"+name+"/mode", map[string]any{"mode": away}, nil)
		var info UfopInfo
		e.must(http.StatusOK, who, "POST", "/v1/ufops/"+name+"/mode", map[string]any{"mode": "protected"}, &info)
		if !slices.Equal(info.AccessList, []string{who.ID}) {
			t.Errorf("%s made %s, then protected again: access list %v, want only its owner %s", name, away, info.AccessList, who.ID)
		}
		if r := e.req(bob, "GET", "/v1/ufops/"+name, nil); r.Status != http.StatusForbidden {
			t.Errorf("%s made %s, then protected again: bob, who applied before, gets %d: %s", name, away, r.Status, r.Body)
		}
		var acct dora.Account
		e.must(http.StatusOK, bob, "POST", "/v1/ufops/"+name+"/apply", nil, &acct)
		if !acct.HasApplied(name) {
			t.Errorf("bob applying for %s again: %+v", name, acct)
		}
		e.must(http.StatusOK, bob, "GET", "/v1/ufops/"+name, nil, nil)
	}
}
