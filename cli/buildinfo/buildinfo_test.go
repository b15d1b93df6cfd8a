package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	bi := func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{Main: debug.Module{Version: "v0.3.0"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}}, true
	}
	in := read("", bi)
	if in.Version != "v0.3.0" || in.Revision != "0123456789abcdef0123" || !in.Modified {
		t.Fatalf("from build info: %+v", in)
	}
	if s := in.String(); !strings.HasPrefix(s, "v0.3.0 (rev 0123456789ab-dirty, go") {
		t.Fatalf("String() = %q", s)
	}
	if in := read("v9.9.9", bi); in.Version != "v9.9.9" {
		t.Fatalf("a stamped version wins: %+v", in)
	}
	if in := read("", func() (*debug.BuildInfo, bool) { return nil, false }); in.Version != "(devel)" || in.Revision != "" {
		t.Fatalf("without build info: %+v", in)
	}
}
