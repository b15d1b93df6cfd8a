// Package buildinfo says which build of dorad or qdoractl is running, for
// their `version` commands. The Makefile stamps the version at link time:
//
//	go build -ldflags "-X github.com/doraproject/dora/cli/buildinfo.version=v1.2.3"
//
// Without it (go build, go install, go run) the version comes from the
// module and VCS information the Go toolchain embeds (runtime/debug).
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set with -ldflags -X at link time; it is the one package
// variable here because the linker can only stamp variables.
var version string

// Info describes a build.
type Info struct {
	Version   string `json:"version"`
	Revision  string `json:"revision,omitempty"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Read returns the running binary's build information.
func Read() Info {
	return read(version, debug.ReadBuildInfo)
}

// read is Read with its inputs passed in (tests).
func read(stamped string, bi func() (*debug.BuildInfo, bool)) Info {
	in := Info{Version: stamped, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if b, ok := bi(); ok {
		if in.Version == "" && b.Main.Version != "" {
			in.Version = b.Main.Version
		}
		for _, s := range b.Settings {
			switch s.Key {
			case "vcs.revision":
				in.Revision = s.Value
			case "vcs.modified":
				in.Modified = s.Value == "true"
			}
		}
	}
	if in.Version == "" {
		in.Version = "(devel)"
	}
	return in
}

// String renders the info on one line: "v1.2.3 (rev 0123abcd, go1.26.8 linux/amd64)".
func (in Info) String() string {
	rev := ""
	if in.Revision != "" {
		r := in.Revision
		if len(r) > 12 {
			r = r[:12]
		}
		if in.Modified {
			r += "-dirty"
		}
		rev = "rev " + r + ", "
	}
	return fmt.Sprintf("%s (%s%s %s)", in.Version, rev, in.GoVersion, in.Platform)
}
