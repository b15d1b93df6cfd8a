package rs_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/doraproject/dora/admin/rs"
)

// temps puts n temporaries in bucket, as an upload does, and returns
// their keys.
func (e *env) temps(bucket string, n int) []string {
	e.t.Helper()
	var keys []string
	for range n {
		k := rs.TempKey()
		e.object(bucket, k, "partial upload")
		keys = append(keys, k)
	}
	return keys
}

// listAll pages through a listing with q (bucket, prefix, delimiter,
// limit) and returns every item's key and common prefix, in order, and
// the number of pages.
func (e *env) listAll(q url.Values) (keys, prefixes []string, pages int) {
	e.t.Helper()
	marker := ""
	for {
		q.Set("marker", marker)
		status, v := e.call(signers["qiniu"], alice, "GET", "/list?"+q.Encode(), "")
		if status != 200 {
			e.t.Fatalf("list %v: %d %v", q, status, v)
		}
		pages++
		for _, it := range field(v, "items").([]any) {
			keys = append(keys, str(it, "key"))
		}
		if cp, ok := field(v, "commonPrefixes").([]any); ok {
			for _, p := range cp {
				prefixes = append(prefixes, p.(string))
			}
		}
		if marker = str(v, "marker"); marker == "" {
			return keys, prefixes, pages
		}
		if pages > 100 {
			e.t.Fatalf("list %v: the marker never ends", q)
		}
	}
}

// The temporaries of uploads in progress (.dora-upload/) are no user's
// objects: no listing shows them nor a common prefix for them, whatever
// its prefix, delimiter or page size, and pages made only of them do not
// end a listing early.
func TestListHidesUploadTemporaries(t *testing.T) {
	e := newEnv(t, nil)
	e.temps("photos", 5) // they sort first: ".d" < "a"
	for _, k := range []string{".dora-uploaded", ".dora-x/1", "a", "b/1", "b/2", "c"} {
		e.object("photos", k, "x")
	}
	for _, c := range []struct {
		q            url.Values
		keys, prefix string
		pages        int
	}{
		{url.Values{"bucket": {"photos"}}, ".dora-uploaded,.dora-x/1,a,b/1,b/2,c", "", 1},
		{url.Values{"bucket": {"photos"}, "limit": {"1"}}, ".dora-uploaded,.dora-x/1,a,b/1,b/2,c", "", 6},
		{url.Values{"bucket": {"photos"}, "limit": {"2"}, "delimiter": {"/"}}, ".dora-uploaded,a,c", ".dora-x/,b/", 3},
		{url.Values{"bucket": {"photos"}, "limit": {"1"}, "delimiter": {"/"}}, ".dora-uploaded,a,c", ".dora-x/,b/", 5},
		{url.Values{"bucket": {"photos"}, "prefix": {".dora-upload/"}}, "", "", 1},
		{url.Values{"bucket": {"photos"}, "prefix": {".dora-upload/"}, "delimiter": {"/"}}, "", "", 1},
		{url.Values{"bucket": {"photos"}, "prefix": {".dora-upload"}, "limit": {"1"}}, ".dora-uploaded", "", 1},
		{url.Values{"bucket": {"photos"}, "prefix": {".dora-upload"}, "delimiter": {"/"}}, ".dora-uploaded", "", 1},
		{url.Values{"bucket": {"photos"}, "prefix": {".dora"}, "delimiter": {"-"}}, "", ".dora-", 1},
	} {
		keys, prefixes, pages := e.listAll(c.q)
		if strings.Join(keys, ",") != c.keys || strings.Join(prefixes, ",") != c.prefix || pages != c.pages {
			t.Errorf("list %v: keys %v, prefixes %v, %d pages; want %q, %q, %d pages", c.q, keys, prefixes, pages, c.keys, c.prefix, c.pages)
		}
	}
	// A page of hidden entries only: a listing that starts after the
	// visible keys before them still finds those after.
	e2 := newEnv(t, nil)
	e2.temps("photos", 3)
	e2.object("photos", "z", "x")
	if keys, _, _ := e2.listAll(url.Values{"bucket": {"photos"}, "limit": {"1"}}); strings.Join(keys, ",") != "z" {
		t.Fatalf("list past temporaries: %v, want z", keys)
	}
}

// No rs operation reads, writes or removes a key under .dora-upload/ (or
// the prefix's own name): 400, and the temporary stays as it was.
func TestReservedKeysRefused(t *testing.T) {
	e := newEnv(t, nil)
	tmp := e.temps("photos", 1)[0]
	e.object("photos", "a", "a")
	sign := signers["qiniu"]
	for _, key := range []string{tmp, ".dora-upload", ".dora-upload/", ".dora-upload/new"} {
		for _, path := range []string{
			"/stat/" + entry("photos", key),
			"/delete/" + entry("photos", key),
			"/chgm/" + entry("photos", key) + "/mime/" + enc("text/x-squat"),
			"/chtype/" + entry("photos", key) + "/type/1",
			"/deleteAfterDays/" + entry("photos", key) + "/1",
			"/copy/" + entry("photos", key) + "/" + entry("photos", "stolen"),
			"/move/" + entry("photos", key) + "/" + entry("photos", "stolen") + "/force/true",
			"/copy/" + entry("photos", "a") + "/" + entry("photos", key) + "/force/true",
			"/move/" + entry("photos", "a") + "/" + entry("photos", key) + "/force/true",
			"/fetch/" + enc("http://example.com/x") + "/to/" + entry("photos", key),
		} {
			status, v := e.call(sign, alice, "POST", path, "")
			if status != http.StatusBadRequest || !strings.Contains(str(v, "error"), "reserved") {
				t.Errorf("%s (key %q): %d %v, want 400 reserved", path, key, status, v)
			}
			if path[:6] == "/fetch" {
				continue
			}
			// The same through batch.
			status, v = e.call(sign, alice, "POST", "/batch", "op="+url.QueryEscape(path))
			res, _ := v.([]any)
			if status != rs.StatusPartial || len(res) != 1 || field(res[0], "code") != float64(400) {
				t.Errorf("batch %s (key %q): %d %v, want 298 with 400", path, key, status, v)
			}
		}
	}
	if got, ok := e.read("photos", tmp); !ok || got != "partial upload" {
		t.Fatalf("the temporary after the refused operations: %q %v", got, ok)
	}
	if got, ok := e.read("photos", "a"); !ok || got != "a" {
		t.Fatalf("a after the refused operations: %q %v", got, ok)
	}
	for _, k := range []string{"stolen", ".dora-upload/new"} {
		if _, ok := e.read("photos", k); ok {
			t.Errorf("%s was written", k)
		}
	}
	// Nothing was written under the prefix.
	keys, err := e.objs.Keys(context.Background(), "photos", rs.UploadTempPrefix)
	if err != nil || !slices.Equal(keys, []string{tmp}) {
		t.Fatalf("temporaries: %v %v", keys, err)
	}
}
