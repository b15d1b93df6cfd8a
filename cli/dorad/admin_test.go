package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/doraproject/dora/admin/client"
)

// TestAdminCommand runs `dorad admin` on a bolt store and the local
// runtime: it prints generated root keys once, and they work.
func TestAdminCommand(t *testing.T) {
	dir := t.TempDir()
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
	if err := r.stop(t); err != nil {
		t.Fatalf("admin stopped with %v", err)
	}
}

func TestAdminCommandErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--store", "consul://127.0.0.1:1/dora"}, "needs the root keys from DORA_ROOT_AK"},
		{[]string{"--runtime", "docker://"}, `unknown scheme "docker" (use local:// or nomad://)`},
		{[]string{"--regions", "z0=global/"}, `datacenter ""`},
		{[]string{"--root-ak", "only-the-ak-given"}, "set both DORA_ROOT_AK and DORA_ROOT_SK"},
	} {
		args := append([]string{"admin", "--listen", "127.0.0.1:0", "--data-dir", dir,
			"--store", "bolt://" + filepath.Join(dir, "meta.db"), "--objects", "file://" + filepath.Join(dir, "objects")}, c.args...)
		err := runDorad(t, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("dorad %v = %v, want an error with %q", c.args, err, c.want)
		}
	}
}
