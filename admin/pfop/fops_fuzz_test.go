package pfop

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/router/fop"
)

// FuzzPfopFops shows that the fops field of a pfop request (or an upload
// policy's persistentOps) is accepted only when the worker can run every
// pipeline in it. ParseFops never panics and refuses with ErrInvalid; what
// it accepts splits back into the field. planFops, Submit's check for a
// job on an input key, accepts only what ParseFops accepts, and each item
// it accepts runs as a query the router reads without error, holding the
// item's own steps and a saveas to the planned target (the item's saveas,
// or a default key in the input's bucket that is a valid key).
func FuzzPfopFops(f *testing.F) {
	for _, c := range []struct{ fops, key string }{
		{"qhash/md5", "a.jpg"},
		{"upper;qhash/md5|saveas/cGhvdG9zOm91dC50eHQ=", "dir/in.txt"},
		{"imageView2/2/w/200/h/200|saveas/cmVzdWx0czp0aHVtYi5qcGc=", "img/1.jpg"},
		{"saveas/cmVzdWx0czpjb3B5", "a"},
		{"grepd%2Fhello%7Cqhash%2Fmd5", "logs/2026-05-01.log"},
		{"a|b|c|d|e|f|g|h|i", "k"},
		{"p/1/qhash/md5", "k"},
		{"qhash/md5&e=1&token=a:b", "k"},
		{"qhash/md5;;upper", "k"},
		{"upper|saveas/cGhvdG9zOg==", "k"},
		{"avthumb/mp4/s/" + strings.Repeat("x", 900), strings.Repeat("k", 1000)},
	} {
		f.Add(c.fops, c.key)
	}
	f.Fuzz(func(t *testing.T, fops, key string) {
		parsed, err := ParseFops(fops)
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("ParseFops(%q): error %v does not wrap ErrInvalid", fops, err)
		}
		if err == nil && (len(parsed) == 0 || len(parsed) > MaxFops || strings.Join(parsed, ";") != fops) {
			t.Fatalf("ParseFops(%q) = %q", fops, parsed)
		}
		if dora.ValidateKey(key) != nil {
			key = "in/a.jpg"
		}
		const bucket = "photos"
		cmds, err := planFops(bucket, key, fops)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("planFops(%q): error %v does not wrap ErrInvalid", fops, err)
			}
			return
		}
		if !reflect.DeepEqual(cmds, parsed) {
			t.Fatalf("planFops(%q) = %q, ParseFops %q", fops, cmds, parsed)
		}
		for i, cmd := range cmds {
			item, err := fop.Parse(cmd)
			if err != nil {
				t.Fatalf("item %d %q accepted, but fop.Parse refuses it: %v", i, cmd, err)
			}
			p, err := planItem(bucket, key, cmd)
			if err != nil {
				t.Fatalf("item %d %q accepted, but planItem(%q) refuses it: %v", i, cmd, key, err)
			}
			run, err := fop.Parse(p.run)
			if err != nil {
				t.Fatalf("item %d %q for key %q accepted, but its run %q does not parse: %v", i, cmd, key, p.run, err)
			}
			if run.Persisted != "" || run.HasParams() || run.SaveAs == nil {
				t.Fatalf("item %d %q: run %q reads %+v", i, cmd, p.run, run)
			}
			if run.SaveAs.Bucket != p.bucket || run.SaveAs.Key != p.key {
				t.Fatalf("item %d %q: run %q saves to %s:%s, planned %s:%s", i, cmd, p.run, run.SaveAs.Bucket, run.SaveAs.Key, p.bucket, p.key)
			}
			if run.Pipeline() != p.pipeline || !reflect.DeepEqual(run.Steps, item.Steps) {
				t.Fatalf("item %d %q: run %q has steps %+v, the item %+v", i, cmd, p.run, run.Steps, item.Steps)
			}
			if item.SaveAs != nil {
				if p.bucket != item.SaveAs.Bucket || p.key != item.SaveAs.Key {
					t.Fatalf("item %d %q: planned %s:%s, the item saves to %s:%s", i, cmd, p.bucket, p.key, item.SaveAs.Bucket, item.SaveAs.Key)
				}
			} else if p.bucket != bucket || dora.ValidateKey(p.key) != nil {
				t.Fatalf("item %d %q: default target %s:%q for input %s:%q", i, cmd, p.bucket, p.key, bucket, key)
			}
		}
	})
}
