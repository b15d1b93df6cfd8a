package pfop

import (
	"strings"
	"testing"
)

// The resumable upload paths never panic, and what they accept is
// consistent: a v2 path names a bucket and, with a part, a part number in
// range; mkfile parameters decode only as pairs.
func FuzzResumablePaths(f *testing.F) {
	for _, s := range []string{
		"photos/objects/a2V5/uploads", "photos/objects/~/uploads/0123/7", "b/objects//uploads", "/objects/x/uploads",
		"9/key/a2V5/mimeType/dGV4dC9wbGFpbg==/x:foo/YmFy", "0", "-1/key", "12/fname/@@", "5/key/a2V5/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if bucket, key, hasKey, _, part, err := v2Path(s); err == nil {
			if bucket == "" || (hasKey && key == "") || part < 0 || part > MaxParts {
				t.Fatalf("v2Path(%q) accepted bucket %q key %q part %d", s, bucket, key, part)
			}
		}
		if fsize, key, hasKey, _, _, vars, err := mkfileParams(s); err == nil {
			if fsize < 0 || (!hasKey && key != "") || vars == nil {
				t.Fatalf("mkfileParams(%q) = %d %q %v", s, fsize, key, hasKey)
			}
			if n := strings.Count(s, "/"); n%2 != 0 {
				t.Fatalf("mkfileParams(%q) accepted an odd parameter list", s)
			}
		}
		_ = validSessionID(s)
	})
}
