package platform

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/doraproject/dora/admin/build"
)

// resolveRunAs turns a run-as setting (DevConfig.RunAs, AdminConfig.RunAs)
// into the user user code runs as (nil: the platform's own), logging a
// warning whenever that is the platform's: "" is nobody when the platform
// runs as root, else its own user; RunAsSelf is its own user; anything
// else is a user name, uid or uid:gid, which needs root.
func resolveRunAs(spec string, log *slog.Logger) (*build.User, error) {
	euid := os.Geteuid()
	const risk = "user code (build_script lines, ufop instances) runs with the platform's privileges: " +
		"it can read root.credentials, meta.db (every account's secret key), every account's objects " +
		"and the platform's environment (its tokens)"
	switch spec {
	case "":
		if euid != 0 {
			log.Warn(risk+"; fine on a developer's laptop, run dorad as root to run user code as nobody (docs/security.md)",
				"uid", euid)
			return nil, nil
		}
		u, err := build.LookupUser("nobody")
		if err != nil {
			u = &build.User{Name: "nobody", Uid: 65534, Gid: 65534}
		}
		return u, nil
	case RunAsSelf:
		log.Error("RUN-AS SELF: "+risk+"; only for trusted code (docs/security.md)", "uid", euid)
		return nil, nil
	}
	u, err := build.LookupUser(spec)
	if err != nil {
		return nil, fmt.Errorf("run as: %w", err)
	}
	if int(u.Uid) == euid {
		log.Error("RUN-AS "+spec+" is the platform's own user: "+risk, "uid", euid)
		return nil, nil
	}
	if euid != 0 {
		return nil, fmt.Errorf("run as %s: dorad must run as root to start user code as another user (or set run-as to %q)", u, RunAsSelf)
	}
	return u, nil
}
