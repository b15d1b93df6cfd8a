package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/cli/platform/platformtest"
)

func runMain(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestDoradVersion(t *testing.T) {
	code, out, _ := runMain(t, "version")
	if code != exitOK || !strings.HasPrefix(out, "dorad ") || !strings.Contains(out, "go1.") {
		t.Fatalf("version: exit %d, %q", code, out)
	}
}

func TestDoradUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{{"nosuch"}, {"dev", "--nosuch"}, {"dev", "extra-arg"}, {"routr"}} {
		if code, _, errb := runMain(t, args...); code != exitUsage || !strings.Contains(errb, "dorad:") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errb)
		}
	}
}

// TestDoradRefusesUnknownConfigKeys: a typo in the config file names the
// key and stops dorad before anything starts (exit 2), instead of running
// on defaults; keys of other roles' flags and flavors are accepted.
func TestDoradRefusesUnknownConfigKeys(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("data_dri: /tmp/x\nadmin-addr: 127.0.0.1:0\nlog:\n  level: debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errb := runMain(t, "dev", "--config", bad, "--data-dir", filepath.Join(dir, "d"))
	if code != exitUsage || !strings.Contains(errb, "data_dri") || !strings.Contains(errb, "log") {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
	if _, err := os.Stat(filepath.Join(dir, "d")); !os.IsNotExist(err) {
		t.Fatalf("dorad started (data dir made) despite the bad config: %v", err)
	}
	if err := checkConfigKeys(newRootCommand(), writeFile(t, dir, "good.yaml", "data-dir: /tmp/x\nlisten: 127.0.0.1:0\nflavors:\n  - {name: tiny, cpu: 100, memoryMB: 64}\nroot_ak: a\n")); err != nil {
		t.Fatalf("known keys refused: %v", err)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDevCtrlCExitsZero starts `dorad dev` and interrupts it (the command's
// context ends, as signal.NotifyContext does on Ctrl-C) several times: it
// must stop without an error every time — no "use of closed network
// connection" from a listener closed during shutdown.
var devURLRE = regexp.MustCompile(`admin API: (http://\S+)`)

func TestDevCtrlCExitsZero(t *testing.T) {
	for i := 0; i < 3; i++ {
		dir := platformtest.ReachableTempDir(t)
		r := startDorad(t, "dev", "--data-dir", dir, "--admin-addr", "127.0.0.1:0", "--router-addr", "127.0.0.1:0", "--run-as", "self")
		var url string
		for deadline := time.Now().Add(60 * time.Second); url == ""; time.Sleep(20 * time.Millisecond) {
			if m := devURLRE.FindStringSubmatch(r.out.String()); m != nil {
				url = m[1]
			} else if time.Now().After(deadline) {
				t.Fatalf("dorad dev never said it runs:\n%s", r.out)
			}
		}
		waitOK(t, url+"/healthz")
		if err := r.stop(t); err != nil {
			t.Fatalf("round %d: Ctrl-C of dorad dev: %v (exit %d)\n%s", i, err, exitCode(err), r.out)
		}
	}
}

// TestDevRefusesZeroAutoscaleInterval: --autoscale-interval 0 or negative
// was replaced by the default 2 s without a word; it is refused.
func TestDevRefusesZeroAutoscaleInterval(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"0", "-1s"} {
		err := runDorad(t, "dev", "--data-dir", dir, "--admin-addr", "127.0.0.1:0", "--router-addr", "127.0.0.1:0",
			"--run-as", "self", "--container-runtime", "none", "--autoscale-interval", d)
		if err == nil || !strings.Contains(err.Error(), "--autoscale-interval") {
			t.Errorf("dorad dev --autoscale-interval %s = %v, want an error naming the flag", d, err)
		}
	}
}

// TestDevFlavorsFromConfigFile: the flavors list of the config file, which
// dorad dev accepts, was ignored by it (the defaults were offered); dorad
// dev now offers the listed flavors, as dorad admin does.
func TestDevFlavorsFromConfigFile(t *testing.T) {
	dir := platformtest.ReachableTempDir(t)
	cfg := writeFile(t, dir, "dev.yaml", "flavors:\n  - {name: tiny, cpu: 100, memoryMB: 64}\n")
	r := startDorad(t, "dev", "--config", cfg, "--data-dir", dir, "--admin-addr", "127.0.0.1:0", "--router-addr", "127.0.0.1:0",
		"--run-as", "self", "--container-runtime", "none")
	var url string
	for deadline := time.Now().Add(60 * time.Second); url == ""; time.Sleep(20 * time.Millisecond) {
		if m := devURLRE.FindStringSubmatch(r.out.String()); m != nil {
			url = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("dorad dev never said it runs:\n%s", r.out)
		}
	}
	waitOK(t, url+"/healthz")
	m := regexp.MustCompile(`AK: (\S+)\n\s+SK: (\S+)`).FindStringSubmatch(r.out.String())
	if m == nil {
		t.Fatalf("no root keys printed:\n%s", r.out)
	}
	flavors, err := client.New(url, m[1], m[2]).Flavors(context.Background())
	if err != nil || len(flavors) != 1 || flavors[0].Name != "tiny" {
		t.Fatalf("flavors = %+v, %v; want the config file's tiny", flavors, err)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("stopped with %v", err)
	}
}

// TestDevEmptyDataDirNamedInKeysMessage: with an empty data-dir (the
// platform's ./.dora), the root keys message named "/root.credentials"
// as where they are kept; it names the file the keys are in.
func TestDevEmptyDataDirNamedInKeysMessage(t *testing.T) {
	dir := platformtest.ReachableTempDir(t)
	t.Chdir(dir)
	cfg := writeFile(t, dir, "dev.yaml", "data-dir: \"\"\n")
	r := startDorad(t, "dev", "--config", cfg, "--admin-addr", "127.0.0.1:0", "--router-addr", "127.0.0.1:0",
		"--run-as", "self", "--container-runtime", "none")
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(r.out.String(), "SK:"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no root keys printed:\n%s", r.out)
		}
	}
	if !strings.Contains(r.out.String(), "kept in ./.dora/root.credentials") {
		t.Fatalf("the keys message names another file than ./.dora/root.credentials:\n%s", r.out)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("stopped with %v", err)
	}
}
