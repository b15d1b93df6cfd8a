package local

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/doraproject/dora/admin/build"
	"github.com/doraproject/dora/admin/runtime"
	"github.com/doraproject/dora/internal/procsweep/proctest"
)

// nobodyUser is the run-as user of these tests; switching to it needs root.
func nobodyUser(t *testing.T) *build.User {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("running instances as another user needs root")
	}
	u, err := build.LookupUser("65534")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// procUid is the real uid of a running process.
func procUid(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Uid:"); ok {
			return strings.Fields(rest)[0]
		}
	}
	t.Fatalf("no Uid line in /proc/%d/status", pid)
	return ""
}

// TestInstanceSandbox: the platform's secrets in its environment never
// reach an instance; with RunAs the instance runs as that user, owns its
// working dir and cannot read the platform's 0600 files (root.credentials
// beside the instances dir), list the instances' directories or read other
// deployments' logs. (Other deployments' working dirs belong to the same
// run-as user: see docs/security.md.)
func TestInstanceSandbox(t *testing.T) {
	secrets := map[string]string{
		"CONSUL_HTTP_TOKEN": "consul-token-s3cret", "NOMAD_TOKEN": "nomad-token-s3cret",
		"AWS_SECRET_ACCESS_KEY": "aws-s3cret", "REDIS_PASSWORD": "redis-s3cret", "DORA_ROOT_SK": "dora-root-s3cret",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	const secret = "root-secret-key-0123456789"
	for _, mode := range []string{"self", "nobody"} {
		t.Run(mode, func(t *testing.T) {
			var runAs *build.User
			data := t.TempDir()
			if mode == "nobody" {
				runAs = nobodyUser(t)
				data = proctest.ReachableDir(t)
			}
			creds := filepath.Join(data, "root.credentials")
			if err := os.WriteFile(creds, []byte(secret+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			pub := &recorder{}
			r := newRuntimeWith(t, Config{Dir: filepath.Join(data, "instances"), Publisher: pub, RunAs: runAs})
			// A neighbour deployment whose files nobody must not list.
			if err := r.Apply(context.Background(), grepdSpec("deploy-other", 1)); err != nil {
				t.Fatal(err)
			}
			spec := grepdSpec("deploy-sandbox", 1)
			spec.Package.Run = "echo uid=$(id -u) groups=$(id -G); env; " +
				"cat " + creds + " || echo abs-refused; " +
				"cat ../../../root.credentials || echo rel-refused; " +
				"ls .. || echo ls-refused; " +
				"cat ../../deploy-other/logs/1.stdout || echo logs-refused; " +
				"touch \"$TMPDIR/x\" && test \"$HOME\" = \"$PWD\" && echo home-ok; echo mine > own.log; exec ./grepd"
			spec.Release.LogFilePaths = []string{"*.log"}
			if err := r.Apply(context.Background(), spec); err != nil {
				t.Fatal(err)
			}
			eventually(t, "healthy", func() bool { return status(t, r, "deploy-sandbox").Healthy == 1 })
			var out strings.Builder
			for _, stream := range []string{"stdout", "stderr"} {
				rc, err := r.Logs(context.Background(), "deploy-sandbox", runtime.LogQuery{Index: 1, Stream: stream, Tail: 1000})
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(&out, rc)
				rc.Close()
			}
			log := out.String()
			for k, v := range secrets {
				if strings.Contains(log, v) || strings.Contains(log, k+"=") {
					t.Errorf("%s reached the instance:\n%s", k, log)
				}
			}
			if !strings.Contains(log, "home-ok") {
				t.Errorf("HOME/TMPDIR not the private working dir:\n%s", log)
			}
			if runAs == nil {
				return
			}
			// A platform file hard-linked into the working dir (possible
			// where fs.protected_hardlinks is 0) is not collected.
			if err := os.Link(creds, filepath.Join(data, "instances", "deploy-sandbox", "1", "stolen.log")); err != nil {
				t.Fatal(err)
			}
			if lines, err := r.CollectedLogs("deploy-sandbox", 1); err != nil || strings.Join(lines, ",") != "mine" {
				t.Fatalf("collected %q, %v; want only the instance's own log", lines, err)
			}
			for _, want := range []string{"uid=65534 groups=65534\n", "abs-refused", "rel-refused", "ls-refused", "logs-refused"} {
				if !strings.Contains(log, want) {
					t.Errorf("instance output lacks %q:\n%s", want, log)
				}
			}
			if strings.Contains(log, secret) {
				t.Fatalf("the instance read root.credentials:\n%s", log)
			}
			st := status(t, r, "deploy-sandbox")
			if uid := procUid(t, st.Instances[0].PID); uid != "65534" {
				t.Fatalf("instance runs as uid %s", uid)
			}
			fi, err := os.Stat(filepath.Join(data, "instances", "deploy-sandbox", "1"))
			if err != nil || fi.Sys().(*syscall.Stat_t).Uid != 65534 || fi.Mode().Perm() != 0o700 {
				t.Fatalf("working dir %v %v: want 0700 owned by nobody", fi.Mode(), err)
			}
			// Published by the runtime's publisher loop just after the
			// status says healthy.
			eventually(t, "published", func() bool { _, ok := pub.get("deploy-sandbox-1"); return ok })
			i, _ := pub.get("deploy-sandbox-1")
			grepdAnswersYes(t, i.Addr)
		})
	}
}

// TestSpareCopyRunAs: with RunAs, the copy made ahead for a deployment at
// zero is the platform's and closed to the run-as user until a start
// renames it into place; then the working dir and everything in it belong
// to the run-as user, as a copy made at the start would, and the instance
// runs from it as that user.
func TestSpareCopyRunAs(t *testing.T) {
	runAs := nobodyUser(t)
	ctx := context.Background()
	data := proctest.ReachableDir(t)
	pub := &recorder{}
	r := newRuntimeWith(t, Config{Dir: filepath.Join(data, "instances"), Publisher: pub, RunAs: runAs})
	const id = "deploy-spare-runas"
	if err := r.Apply(ctx, grepdSpec(id, 0)); err != nil {
		t.Fatal(err)
	}
	var spare string
	eventually(t, "a copy made ahead", func() bool { spare = spareDir(r, id); return spare != "" })
	fi, err := os.Stat(spare)
	if err != nil || fi.Sys().(*syscall.Stat_t).Uid != uint32(os.Geteuid()) || fi.Mode().Perm() != 0o700 {
		t.Fatalf("copy made ahead %v %v: want 0700 owned by the platform", fi.Mode(), err)
	}
	if err := r.Scale(ctx, id, 1, "test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "published", func() bool { _, ok := pub.get(id + "-1"); return ok })
	if _, err := os.Stat(spare); err == nil {
		t.Fatalf("the copy made ahead is still there after the start")
	}
	wd := filepath.Join(data, "instances", id, "1")
	err = filepath.WalkDir(wd, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 65534 {
			t.Errorf("%s owned by uid %d, want nobody", p, uid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(wd); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("working dir %v %v: want 0700", fi, err)
	}
	st := status(t, r, id)
	if uid := procUid(t, st.Instances[0].PID); uid != "65534" {
		t.Fatalf("instance runs as uid %s", uid)
	}
	i, _ := pub.get(id + "-1")
	grepdAnswersYes(t, i.Addr)
}

// grepdAnswersYes asks the grepd instance at addr for the lines holding
// "yes" and fails unless it answers exactly them.
func grepdAnswersYes(t *testing.T, addr string) {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/handler?cmd=grepd/yes", "text/plain", strings.NewReader("yes\nno\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "yes\n" {
		t.Fatalf("grepd answered %q", got)
	}
}
