package admin

import (
	"testing"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/rs"
)

// The data plane's definition of the temporaries' namespace (the router
// may not import admin/rs) is the one admin/rs applies.
func TestReservedKeyAgreesWithRS(t *testing.T) {
	if dora.UploadTempPrefix != rs.UploadTempPrefix {
		t.Fatalf("dora.UploadTempPrefix %q, rs.UploadTempPrefix %q", dora.UploadTempPrefix, rs.UploadTempPrefix)
	}
	for _, k := range []string{".dora-upload", ".dora-upload/", ".dora-upload/ab", ".dora-uploads", "a/.dora-upload/x", rs.TempKey(), "x"} {
		if dora.ReservedKey(k) != rs.ReservedKey(k) {
			t.Errorf("%q: dora.ReservedKey %v, rs.ReservedKey %v", k, dora.ReservedKey(k), rs.ReservedKey(k))
		}
	}
}
