package platform

import (
	"log/slog"
	"strings"
)

// unsharedSchemes are the backends that live in one process or on one
// host's disk: a second instance of a role on another host cannot share
// them (bolt files are locked by one process, file:// objects are one
// host's directory, memory:// is one process's, local:// runs children).
var unsharedSchemes = map[string]string{
	"bolt":   "a file locked by one process",
	"file":   "one host's directory",
	"memory": "one process's memory",
	"local":  "this process's children",
}

// backendUse is one backend a role was started with: its flag and URL.
type backendUse struct{ flag, url string }

// unshared returns "--flag=url (why)" for each backend of uses that
// cannot be shared between hosts, in the order given.
func unshared(uses ...backendUse) []string {
	var out []string
	for _, u := range uses {
		scheme, _, ok := strings.Cut(u.url, "://")
		if !ok {
			continue
		}
		if why, bad := unsharedSchemes[strings.ToLower(scheme)]; bad {
			out = append(out, "--"+u.flag+"="+redact(u.url)+" ("+why+")")
		}
	}
	return out
}

// warnUnshared logs one line when a production role runs on a backend
// that cannot be shared, so that running it on more than one host (or
// beside another role that needs the same data) cannot go unnoticed.
func warnUnshared(log *slog.Logger, role string, uses ...backendUse) {
	list := unshared(uses...)
	if len(list) == 0 {
		return
	}
	log.Warn("this "+role+" runs on embedded-only backends that cannot be shared: do not run a second "+role+" on another host with them (shared ones: consul:// store and discovery, s3:// objects, redis:// queue and load, nomad:// runtime)",
		"unshared", strings.Join(list, "; "))
}
