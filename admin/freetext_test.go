package admin

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
)

// Account names and the descriptions of ufops and releases are shown as
// they are written (qdoractl tables, the console): a control character
// (a terminal escape, a NUL, a newline forging a table row) or a
// bidirectional override (text shown in another order than it reads)
// is refused, 400 naming the field, the character and where it is;
// nothing is recorded.
func TestFreeTextRefusesControlCharacters(t *testing.T) {
	e := newEnv(t)
	alice := e.user("alice", 0)
	e.ufop(alice, "grepd", dora.ModePrivate)
	e.push(alice, "grepd:v1")
	ctx := context.Background()

	bad := []rune{0x00, 0x07, '\t', '\n', '\r', 0x1b, 0x1f, 0x7f, 0x85, 0x9b, 0x061c, 0x200e, 0x200f,
		0x2028, 0x2029, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069}
	for i, c := range bad {
		text := "ab" + string(c) + "cd"
		want := fmt.Sprintf("U+%04X at byte 2", c)
		check := func(what, field string, r resp) {
			t.Helper()
			if r.Status != http.StatusBadRequest || !strings.HasPrefix(r.errMsg(), field+": ") || !strings.Contains(r.errMsg(), want) {
				t.Errorf("%s holding U+%04X: %d %s, want 400 %q naming %q", what, c, r.Status, r.Body, field+": ", want)
			}
		}
		check("account name", "name", e.req(e.root, "POST", "/v1/accounts", map[string]any{"name": text}))
		ufop := fmt.Sprintf("badufop%d", i)
		check("ufop desc", "desc", e.req(alice, "POST", "/v1/ufops", map[string]any{"name": ufop, "desc": text}))
		if _, err := e.st.Get(ctx, store.UfopKey(ufop)); err == nil {
			t.Errorf("ufop %s with U+%04X in its desc recorded", ufop, c)
		}
		check("release desc", "desc", e.req(alice, "POST", "/v1/releases", map[string]any{
			"ufopname": "grepd", "verstr": "v1", "image": "grepd:v1", "flavor": "C1M1", "desc": text,
		}))
	}
	accts, _, err := store.List[dora.Account](ctx, e.st, store.PrefixAccounts)
	if err != nil {
		t.Fatal(err)
	}
	if len(accts) != 2 { // root and alice
		t.Errorf("%d accounts recorded, want root's and alice's", len(accts))
	}
	if kvs, err := e.st.List(ctx, store.ReleasesOf("grepd")); err != nil || len(kvs) != 0 {
		t.Errorf("releases recorded: %d %v", len(kvs), err)
	}

	// Printable text of any script, spaces included, passes.
	good := "Grep 过滤器 — ünïcode, emoji 👍🏽 and\u3000wide space"
	var a dora.Account
	e.must(http.StatusCreated, e.root, "POST", "/v1/accounts", map[string]any{"name": "张三 O'Brien"}, &a)
	e.must(http.StatusCreated, alice, "POST", "/v1/ufops", map[string]any{"name": "goodufop", "desc": good}, nil)
	var rel dora.Release
	e.must(http.StatusCreated, alice, "POST", "/v1/releases", map[string]any{
		"ufopname": "grepd", "verstr": "v1", "image": "grepd:v1", "flavor": "C1M1", "desc": good,
	}, &rel)
	if a.Name != "张三 O'Brien" || rel.Desc != good || e.ufopRecord("goodufop").Desc != good {
		t.Errorf("printable text changed: account %q, release %q, ufop %q", a.Name, rel.Desc, e.ufopRecord("goodufop").Desc)
	}
}
