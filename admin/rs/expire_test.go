package rs_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
)

func TestDecide(t *testing.T) {
	put := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	obj := origin.Object{Bucket: "photos", Key: "a", ETag: "Fnew", Modified: put}
	due := put.Add(24 * time.Hour)
	for _, c := range []struct {
		name string
		m    rs.ObjectMeta
		now  time.Time
		want rs.Expiry
	}{
		{"no lifecycle", rs.ObjectMeta{Type: 1, ETag: "Fnew", Set: put}, due.Add(1000 * time.Hour), rs.NoLifecycle},
		{"not due", rs.ObjectMeta{DeleteAfterDays: 1, ETag: "Fnew", Set: put}, due.Add(-time.Nanosecond), rs.NotDue},
		{"due at the expiration", rs.ObjectMeta{DeleteAfterDays: 1, ETag: "Fnew", Set: put}, due, rs.Due},
		{"due after", rs.ObjectMeta{DeleteAfterDays: 1, ETag: "Fnew", Set: put.Add(time.Hour)}, due.Add(time.Hour), rs.Due},
		{"days count from the put, not the record", rs.ObjectMeta{DeleteAfterDays: 2, ETag: "Fnew", Set: put.Add(10 * time.Hour)}, put.Add(48 * time.Hour), rs.Due},
		{"overwritten since (other etag)", rs.ObjectMeta{DeleteAfterDays: 1, ETag: "Fold", Set: put.Add(-time.Hour)}, due.Add(1000 * time.Hour), rs.Overwritten},
		{"older record, object put before it", rs.ObjectMeta{DeleteAfterDays: 1, Set: put.Add(time.Second)}, due, rs.Due},
		{"older record, object put at its time", rs.ObjectMeta{DeleteAfterDays: 1, Set: put}, due, rs.Due},
		{"older record, object put after it", rs.ObjectMeta{DeleteAfterDays: 1, Set: put.Add(-time.Second)}, due.Add(1000 * time.Hour), rs.Overwritten},
		{"older record, not due", rs.ObjectMeta{DeleteAfterDays: 1, Set: put}, due.Add(-time.Second), rs.NotDue},
	} {
		if got := rs.Decide(c.m, obj, c.now); got != c.want {
			t.Errorf("%s: Decide = %v, want %v", c.name, got, c.want)
		}
	}
	// Expiration is what stat reports.
	if exp, ok := rs.Expiration(rs.ObjectMeta{DeleteAfterDays: 3, ETag: "Fnew"}, obj); !ok || !exp.Equal(put.Add(72*time.Hour)) {
		t.Errorf("Expiration = %v %v", exp, ok)
	}
	if _, ok := rs.Expiration(rs.ObjectMeta{DeleteAfterDays: 3, ETag: "Fold"}, obj); ok {
		t.Error("Expiration of a record set on other content")
	}
}

// TestExpirerSweep: a sweep past the due time deletes the objects whose
// deleteAfterDays fell due, object and record, and keeps those not due,
// without a lifecycle, or overwritten with other content since (whose
// stat then shows no expiration); Limit pages through the records.
func TestExpirerSweep(t *testing.T) {
	var st store.Store
	e := newEnv(t, func(c *rs.Config) { st = c.Store })
	ctx := context.Background()
	sign := signers["qiniu"]
	lifecycle := func(key string, days int) {
		t.Helper()
		if status, v := e.call(sign, alice, "POST", "/deleteAfterDays/"+entry("photos", key)+"/"+strconv.Itoa(days), ""); status != 200 {
			t.Fatalf("deleteAfterDays %s: %d %v", key, status, v)
		}
	}
	for _, k := range []string{"due", "later", "rewritten", "typed", "old-due", "old-rewritten"} {
		e.object("photos", k, "content of "+k)
	}
	e.object("backup", "due2", "x")
	lifecycle("due", 1)
	lifecycle("later", 3)
	lifecycle("rewritten", 1)
	e.object("photos", "rewritten", "other content") // after the lifecycle: not its object
	if status, v := e.call(sign, alice, "POST", "/chtype/"+entry("photos", "typed")+"/type/1", ""); status != 200 {
		t.Fatalf("chtype: %d %v", status, v)
	}
	if status, v := e.call(sign, alice, "POST", "/deleteAfterDays/"+entry("backup", "due2")+"/1", ""); status != 200 {
		t.Fatalf("deleteAfterDays: %d %v", status, v)
	}
	// Records written before the etag was kept: their Set time tells.
	oldRecord := func(key string, set time.Time) {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"deleteAfterDays": 1, "set": set})
		if _, err := st.Put(ctx, store.ObjectMetaKey("photos", key), b); err != nil {
			t.Fatal(err)
		}
	}
	oldRecord("old-due", time.Now().Add(time.Minute))
	oldRecord("old-rewritten", time.Now().Add(-time.Hour))

	if status, v := e.call(sign, alice, "POST", "/stat/"+entry("photos", "rewritten"), ""); status != 200 || field(v, "expiration") != nil {
		t.Fatalf("stat of an object overwritten after its lifecycle: %d %v, want no expiration", status, v)
	}

	x := &rs.Expirer{Store: st, Objects: e.objs}
	// Not yet due: nothing happens.
	res, err := x.Sweep(ctx, time.Now().Add(12*time.Hour), nil)
	if err != nil || res.Expired != 0 || res.More {
		t.Fatalf("sweep before due: %+v %v", res, err)
	}
	// Two days on, one record a sweep.
	x.Limit = 1
	var gone []string
	now := time.Now().Add(49 * time.Hour)
	for i := 0; ; i++ {
		res, err := x.Sweep(ctx, now, func(b, k string) { gone = append(gone, b+"/"+k) })
		if err != nil {
			t.Fatal(err)
		}
		if res.Examined > 1 {
			t.Fatalf("sweep %d examined %d records, limit 1", i, res.Examined)
		}
		if !res.More {
			break
		}
		if i > 20 {
			t.Fatal("sweeps do not end")
		}
	}
	if want := []string{"backup/due2", "photos/due", "photos/old-due"}; !slices.Equal(gone, want) {
		t.Fatalf("expired %v, want %v", gone, want)
	}
	for _, k := range []string{"backup:due2", "photos:due", "photos:old-due"} {
		b, key, _ := strings.Cut(k, ":")
		if status, v := e.call(sign, alice, "POST", "/stat/"+entry(b, key), ""); status != rs.StatusNoEntry {
			t.Errorf("stat %s after expiry: %d %v, want 612", k, status, v)
		}
		if _, err := st.Get(ctx, store.ObjectMetaKey(b, key)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("record of %s after expiry: %v", k, err)
		}
	}
	for _, k := range []string{"later", "rewritten", "typed", "old-rewritten"} {
		if _, ok := e.read("photos", k); !ok {
			t.Errorf("%s was deleted", k)
		}
	}
	// A full sweep later deletes nothing more.
	x.Limit = 0
	if res, err := x.Sweep(ctx, now, nil); err != nil || res.Expired != 0 || res.More || res.Examined != 4 {
		t.Fatalf("second sweep: %+v %v", res, err)
	}
}
