package rs_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/origin/local"
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

func TestDecideTemp(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	age := 24 * time.Hour
	obj := func(put time.Time) origin.Object { return origin.Object{Key: ".dora-upload/x", Modified: put} }
	for _, c := range []struct {
		name           string
		put, seen, now time.Time
		want           bool
	}{
		{"never listed", t0.Add(-100 * age), time.Time{}, t0, false},
		{"put long ago, first listed just now (a write that began long ago, visible since)", t0.Add(-100 * age), t0, t0, false},
		{"put long ago, listed for less than the age", t0.Add(-100 * age), t0.Add(-age + time.Nanosecond), t0, false},
		{"put long ago, listed for the age", t0.Add(-100 * age), t0.Add(-age), t0, true},
		{"put and listed at the age", t0.Add(-age), t0.Add(-age), t0, true},
		{"listed for the age, put just under it (the store's clock ahead)", t0.Add(-age + time.Second), t0.Add(-age), t0, false},
		{"put in the future", t0.Add(time.Hour), t0.Add(-2 * age), t0, false},
		{"no put time: the sighting decides", time.Time{}, t0.Add(-age), t0, true},
	} {
		if got := rs.DecideTemp(obj(c.put), c.seen, c.now, age); got != c.want {
			t.Errorf("%s: DecideTemp = %v, want %v", c.name, got, c.want)
		}
	}
}

// agedObjects reports every object as put long ago: an object store that
// dates an object by the start of its write (S3), which for a slow upload
// is long before the temporary became visible.
type agedObjects struct {
	*local.Dir
	by time.Duration
}

func (a agedObjects) Stat(ctx context.Context, bucket, key string) (origin.Object, error) {
	o, err := a.Dir.Stat(ctx, bucket, key)
	o.Modified = o.Modified.Add(-a.by)
	return o, err
}

// TestExpirerRemovesLeftoverTemporaries: the sweep removes a temporary
// once it has been there a day (TempAge) by both the object store's put
// time and the sweeps' first sighting; a young one, and one first seen
// recently however old its put time, stay; objects beside them are never
// touched; TempLimit pages through them.
func TestExpirerRemovesLeftoverTemporaries(t *testing.T) {
	var st store.Store
	e := newEnv(t, func(c *rs.Config) { st = c.Store })
	ctx := context.Background()
	old := append(e.temps("photos", 3), e.temps("backup", 1)...)
	for _, k := range []string{".dora-uploaded", "a", "z"} {
		e.object("photos", k, "kept")
	}
	var removed []string
	x := &rs.Expirer{Store: st, Objects: e.objs, TempLimit: 1, OnTempRemoved: func(b, k string) { removed = append(removed, b+"/"+k) }}
	t0 := time.Now()
	sweepAll := func(now time.Time) (n int) {
		t.Helper()
		for i := 0; ; i++ {
			res, err := x.Sweep(ctx, now, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.TempsExamined > 1 {
				t.Fatalf("a sweep looked at %d temporaries, limit 1", res.TempsExamined)
			}
			n += res.TempsRemoved
			if !res.More {
				return n
			}
			if i > 20 {
				t.Fatal("sweeps do not end")
			}
		}
	}
	if n := sweepAll(t0); n != 0 {
		t.Fatalf("first sighting: %d removed", n)
	}
	if n := sweepAll(t0.Add(23 * time.Hour)); n != 0 {
		t.Fatalf("23 hours on: %d removed", n)
	}
	young := e.temps("photos", 1)[0] // a write that has just stored its file
	if n := sweepAll(t0.Add(24 * time.Hour)); n != 4 {
		t.Fatalf("a day on: %d removed, want 4 (%v)", n, removed)
	}
	var want []string
	for i, k := range old {
		want = append(want, map[bool]string{true: "backup/", false: "photos/"}[i == 3]+k)
	}
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	for _, k := range []string{".dora-uploaded", "a", "z", young} {
		if _, ok := e.read("photos", k); !ok {
			t.Fatalf("%s was removed", k)
		}
	}
	if n := sweepAll(t0.Add(48*time.Hour - time.Second)); n != 0 {
		t.Fatalf("the young temporary removed before its day: %d", n)
	}
	if n := sweepAll(t0.Add(48 * time.Hour)); n != 1 {
		t.Fatalf("the young temporary a day after it was first seen: %d removed", n)
	}
	if _, ok := e.read("photos", young); ok {
		t.Fatal("the young temporary is still there")
	}

	// A store that dates objects by the start of their write: a
	// temporary put "100 days ago" that has just appeared stays until it
	// has been seen for a day. So does every temporary for an Expirer
	// that has just taken over the sweeps (a new leader).
	slow := e.temps("photos", 1)[0]
	x2 := &rs.Expirer{Store: st, Objects: agedObjects{e.objs, 100 * 24 * time.Hour}}
	for _, now := range []time.Time{t0.Add(100 * time.Hour), t0.Add(123 * time.Hour)} {
		if res, err := x2.Sweep(ctx, now, nil); err != nil || res.TempsRemoved != 0 {
			t.Fatalf("sweep at %v: %+v %v", now, res, err)
		}
	}
	if _, ok := e.read("photos", slow); !ok {
		t.Fatal("a temporary seen for less than a day was removed")
	}
	if res, err := x2.Sweep(ctx, t0.Add(124*time.Hour), nil); err != nil || res.TempsRemoved != 1 {
		t.Fatalf("a day after its first sighting: %+v %v", res, err)
	}
}

// A temporary that vanished (its write finished) is forgotten; a sweep
// that fails to list goes on from there the next time.
func TestExpirerTempsStore(t *testing.T) {
	var st store.Store
	e := newEnv(t, func(c *rs.Config) { st = c.Store })
	ctx := context.Background()
	tmp := e.temps("photos", 1)[0]
	x := &rs.Expirer{Store: st, Objects: e.objs}
	t0 := time.Now()
	if _, err := x.Sweep(ctx, t0, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.objs.Delete(ctx, "photos", tmp); err != nil {
		t.Fatal(err)
	}
	if res, err := x.Sweep(ctx, t0.Add(48*time.Hour), nil); err != nil || res.TempsExamined != 0 || res.TempsRemoved != 0 {
		t.Fatalf("sweep after the temporary went: %+v %v", res, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if res, err := x.Sweep(cctx, t0, nil); !errors.Is(err, context.Canceled) || !res.More {
		t.Fatalf("canceled sweep: %+v %v", res, err)
	}
}

// VisibleObjects (the admin API's listing) leaves the temporaries out and
// still fills a page.
func TestVisibleObjects(t *testing.T) {
	e := newEnv(t, nil)
	e.temps("photos", 5)
	for _, k := range []string{".dora-uploaded", "a", "b/1"} {
		e.object("photos", k, "x")
	}
	ctx := context.Background()
	for _, c := range []struct {
		prefix string
		limit  int
		want   string
	}{
		{"", 0, ".dora-uploaded,a,b/1"},
		{"", 1, ".dora-uploaded"},
		{"", 2, ".dora-uploaded,a"},
		{"", 3, ".dora-uploaded,a,b/1"},
		{"", 1000, ".dora-uploaded,a,b/1"},
		{".dora-upload/", 10, ""},
		{".dora-upload", 1, ".dora-uploaded"},
		{"b/", 1, "b/1"},
	} {
		objs, err := rs.VisibleObjects(ctx, e.objs, "photos", c.prefix, c.limit)
		var keys []string
		for _, o := range objs {
			keys = append(keys, o.Key)
		}
		if err != nil || strings.Join(keys, ",") != c.want {
			t.Errorf("prefix %q limit %d: %v %v, want %s", c.prefix, c.limit, keys, err, c.want)
		}
	}
}

// countingLister counts the listings VisibleObjects asks for.
type countingLister struct {
	origin.Lister
	calls int
}

func (c *countingLister) List(ctx context.Context, bucket, prefix string, limit int) ([]origin.Object, error) {
	c.calls++
	return c.Lister.List(ctx, bucket, prefix, limit)
}

// VisibleObjects grew its page by limit per listing, so a page of one past
// 200 temporaries took 201 listings (on S3 each lists and stats).
func TestVisibleObjectsPassesTemporariesInFewListings(t *testing.T) {
	e := newEnv(t, nil)
	e.temps("photos", 200)
	e.object("photos", "z.txt", "x")
	cl := &countingLister{Lister: e.objs}
	objs, err := rs.VisibleObjects(context.Background(), cl, "photos", "", 1)
	if err != nil || len(objs) != 1 || objs[0].Key != "z.txt" {
		t.Fatalf("VisibleObjects: %v %v, want z.txt", objs, err)
	}
	if cl.calls > 6 {
		t.Fatalf("a page of one past 200 temporaries took %d listings", cl.calls)
	}
}

// The sweep removed every key under .dora-upload/ once a day old, also
// ones an older version let a user write there (rs copy or move, PUT
// /v1/objects): user data deleted without a trace. It removes only keys
// of TempKey's shape; the others stay (hidden) until their bucket goes.
func TestSweepRemovesOnlyTempKeys(t *testing.T) {
	var st store.Store
	e := newEnv(t, func(c *rs.Config) { st = c.Store })
	temp := e.temps("photos", 1)[0]
	users := []string{".dora-upload/holiday.jpg", ".dora-upload/" + strings.Repeat("A", 24), ".dora-upload/" + strings.Repeat("a", 25)}
	for _, k := range users {
		e.object("photos", k, "a user's")
	}
	x := &rs.Expirer{Store: st, Objects: e.objs}
	t0 := time.Now()
	for _, at := range []time.Duration{0, 48 * time.Hour, 96 * time.Hour} {
		if _, err := x.Sweep(context.Background(), t0.Add(at), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := e.read("photos", temp); ok {
		t.Fatalf("the temporary %s is still there", temp)
	}
	for _, k := range users {
		if _, ok := e.read("photos", k); !ok {
			t.Fatalf("%s, not of TempKey's shape, was removed", k)
		}
	}
	for k, want := range map[string]bool{temp: true, rs.TempKey(): true, users[0]: false, users[1]: false, users[2]: false, ".dora-upload/": false, "x" + temp[1:]: false} {
		if rs.IsTempKey(k) != want {
			t.Errorf("IsTempKey(%q) = %v, want %v", k, !want, want)
		}
	}
}
