package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/cli/platform/platformtest"
)

// TestAdminCommand runs `dorad admin` on a bolt store and the local
// runtime: it prints generated root keys once, and they work.
func TestAdminCommand(t *testing.T) {
	dir := platformtest.ReachableTempDir(t)
	cfg := filepath.Join(dir, "admin.yaml")
	if err := os.WriteFile(cfg, []byte("flavors:\n  - {name: tiny, cpu: 100, memoryMB: 64}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startDorad(t, "admin", "--config", cfg, "--listen", "127.0.0.1:0", "--data-dir", dir,
		"--store", "bolt://"+filepath.Join(dir, "meta.db"),
		"--objects", "file://"+filepath.Join(dir, "objects"),
		"--regions", "z0,z1=global/dc1")
	url := r.waitURL(t)
	waitOK(t, url+"/healthz")
	if m := waitOK(t, url+"/metrics"); !strings.Contains(m, "dora_admin_requests_total") || !strings.Contains(m, "process_") {
		t.Errorf("/metrics lacks the admin's or the process's metrics")
	}
	m := regexp.MustCompile(`AK: (\S+)\n\s+SK: (\S+)`).FindStringSubmatch(r.out.String())
	if m == nil {
		t.Fatalf("no root keys printed:\n%s", r.out)
	}
	c := client.New(url, m[1], m[2])
	acct, err := c.Whoami(context.Background())
	if err != nil || !acct.Root {
		t.Fatalf("whoami = %+v, %v", acct, err)
	}
	regions, err := c.Regions(context.Background())
	if err != nil || len(regions) != 2 || regions[0].Name != "z0" || regions[1].Name != "z1" {
		t.Fatalf("regions = %+v, %v", regions, err)
	}
	flavors, err := c.Flavors(context.Background())
	if err != nil || len(flavors) != 1 || flavors[0].Name != "tiny" || flavors[0].MemoryMB != 64 {
		t.Fatalf("flavors = %+v, %v", flavors, err)
	}

	// pfop and prefop answer on the admin listener; the job waits on the
	// default bolt queue under --data-dir; a loopback notifyURL is refused.
	ctx := context.Background()
	if _, err := c.CreateBucket(ctx, client.BucketSpec{Name: "photos"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObject(ctx, "photos", "in.txt", strings.NewReader("hello"), 5, "text/plain"); err != nil {
		t.Fatal(err)
	}
	status, body := platformtest.SignedPfop(t, url, m[1], m[2], neturl.Values{"bucket": {"photos"}, "key": {"in.txt"}, "fops": {"qhash/md5"}})
	var sub struct{ PersistentID string }
	if status != http.StatusOK || json.Unmarshal(body, &sub) != nil || sub.PersistentID == "" {
		t.Fatalf("pfop = %d %s", status, body)
	}
	prefop := waitOK(t, url+"/status/get/prefop?id="+sub.PersistentID)
	if !strings.Contains(prefop, `"code":1`) || !strings.Contains(prefop, `"inputKey":"in.txt"`) {
		t.Fatalf("prefop = %s", prefop)
	}
	if _, err := os.Stat(filepath.Join(dir, "pfop.db")); err != nil {
		t.Fatalf("default queue file: %v", err)
	}
	status, body = platformtest.SignedPfop(t, url, m[1], m[2], neturl.Values{"bucket": {"photos"}, "key": {"in.txt"}, "fops": {"qhash/md5"},
		"notifyURL": {"http://127.0.0.1:1/done"}})
	if status != http.StatusBadRequest || !strings.Contains(string(body), "notifyURL") {
		t.Fatalf("pfop with a loopback notifyURL = %d %s", status, body)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("admin stopped with %v", err)
	}
}

// TestAdminCommandRunAs: as root, a data directory nobody cannot reach is
// refused with the flag to change named; --run-as self accepts it.
func TestAdminCommandRunAs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("user code runs as dorad's own user when not root")
	}
	dir := t.TempDir() // below a 0700 directory
	args := []string{"admin", "--listen", "127.0.0.1:0", "--data-dir", dir,
		"--store", "bolt://" + filepath.Join(dir, "meta.db"), "--objects", "file://" + filepath.Join(dir, "objects")}
	if err := runDorad(t, args...); err == nil || !strings.Contains(err.Error(), "nobody") || !strings.Contains(err.Error(), "run-as") {
		t.Fatalf("dorad admin on a data dir nobody cannot reach = %v", err)
	}
	// As the user sees it, with the README's way out for a laptop.
	var stdout, stderr bytes.Buffer
	if code := run(append(args, "--log-level", "error"), &stdout, &stderr); code != exitError ||
		!strings.Contains(stderr.String(), "cannot reach") || !strings.Contains(stderr.String(), `--run-as self (make run RUN_ARGS="--run-as self")`) {
		t.Fatalf("dorad admin on a data dir nobody cannot reach: exit %d, stderr %q", code, stderr.String())
	}
	r := startDorad(t, append(args, "--run-as", "self")...)
	waitOK(t, r.waitURL(t)+"/healthz")
	if err := r.stop(t); err != nil {
		t.Fatalf("admin stopped with %v", err)
	}
}

func TestAdminCommandErrors(t *testing.T) {
	dir := platformtest.ReachableTempDir(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--store", "consul://127.0.0.1:1/dora"}, "needs the root keys from DORA_ROOT_AK"},
		{[]string{"--runtime", "docker://"}, `unknown scheme "docker" (use local:// or nomad://)`},
		{[]string{"--regions", "z0=global/"}, `datacenter ""`},
		{[]string{"--root-ak", "only-the-ak-given"}, "set both DORA_ROOT_AK and DORA_ROOT_SK"},
		{[]string{"--queue", "kafka://127.0.0.1"}, `queue URL "kafka://127.0.0.1": bad backend URL: unknown scheme "kafka"`},
		{[]string{"--queue", "bolt://"}, "missing path"},
		{[]string{"--run-as", "no-such-user-here"}, `bad run-as user: "no-such-user-here"`},
	} {
		args := append([]string{"admin", "--listen", "127.0.0.1:0", "--data-dir", dir,
			"--store", "bolt://" + filepath.Join(dir, "meta.db"), "--objects", "file://" + filepath.Join(dir, "objects")}, c.args...)
		err := runDorad(t, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("dorad %v = %v, want an error with %q", c.args, err, c.want)
		}
	}
}

// TestRootKeysFromConfigFile: the root keys given in the config file, under
// either spelling the file accepts (root-ak, root_ak), are the keys dorad
// admin and dorad dev run with: none are generated or printed.
func TestRootKeysFromConfigFile(t *testing.T) {
	for _, c := range []struct{ cmd, akKey, skKey string }{
		{"admin", "root_ak", "root_sk"},
		{"admin", "root-ak", "root-sk"},
		{"dev", "root-ak", "root-sk"},
		{"dev", "root_ak", "root_sk"},
	} {
		t.Run(c.cmd+" "+c.akKey, func(t *testing.T) {
			dir := platformtest.ReachableTempDir(t)
			const ak, sk = "AKfromTheConfigFile", "SKfromTheConfigFile0123456789"
			cfg := writeFile(t, dir, "dorad.yaml", c.akKey+": "+ak+"\n"+c.skKey+": "+sk+"\n")
			args := []string{c.cmd, "--config", cfg, "--data-dir", dir, "--run-as", "self"}
			if c.cmd == "admin" {
				args = append(args, "--listen", "127.0.0.1:0", "--store", "bolt://"+filepath.Join(dir, "meta.db"),
					"--objects", "file://"+filepath.Join(dir, "objects"))
			} else {
				args = append(args, "--admin-addr", "127.0.0.1:0", "--router-addr", "127.0.0.1:0", "--container-runtime", "none")
			}
			r := startDorad(t, args...)
			var url string
			if c.cmd == "admin" {
				url = r.waitURL(t)
			} else {
				for deadline := time.Now().Add(60 * time.Second); url == ""; time.Sleep(20 * time.Millisecond) {
					if m := devURLRE.FindStringSubmatch(r.out.String()); m != nil {
						url = m[1]
					} else if time.Now().After(deadline) {
						t.Fatalf("dorad dev never said it runs:\n%s", r.out)
					}
				}
			}
			waitOK(t, url+"/healthz")
			if strings.Contains(r.out.String(), "Root keys") {
				t.Errorf("root keys generated despite %s/%s in the config file:\n%s", c.akKey, c.skKey, r.out)
			}
			acct, err := client.New(url, ak, sk).Whoami(context.Background())
			if err != nil || !acct.Root {
				t.Errorf("whoami with the config file's keys = %+v, %v", acct, err)
			}
			if err := r.stop(t); err != nil {
				t.Fatalf("stopped with %v", err)
			}
		})
	}
}
