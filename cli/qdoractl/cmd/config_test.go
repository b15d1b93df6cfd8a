package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/doraproject/dora"
)

// loginEnv is a HOME with no keys in the environment and a fake API
// that knows the test's keys; it returns the config file's path.
func loginEnv(t *testing.T) (*fakeAPI, string) {
	t.Helper()
	f := newFakeAPI(t, map[string]route{
		"GET /v1/whoami": reply(200, dora.Account{ID: "7", AccessKey: testAK}),
		"GET /v1/ufops":  reply(200, []any{}),
	})
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("QDORACTL_CONFIG", "")
	t.Setenv("DORA_AK", "")
	t.Setenv("DORA_SK", "")
	t.Setenv("DORA_API", "")
	return f, filepath.Join(home, ".qdoractl", "config.yaml")
}

// TestLoginReplacesCorruptConfig: a config file that is not YAML fails
// the commands that read it, but not login, which writes a new one and
// says that it replaced the old; login refused to run ("read ...: While
// parsing config"), leaving a hand edit to fix it.
func TestLoginReplacesCorruptConfig(t *testing.T) {
	f, cfgPath := loginEnv(t)
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o700); err != nil {
		t.Fatal(err)
	}
	corrupt := "endpoint: [http://old\nak: x\n\tsk: :\n"
	if err := os.WriteFile(cfgPath, []byte(corrupt), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runRaw(t, "", "list", "--api", f.srv.URL); r.code != ExitError || !strings.Contains(r.stderr, cfgPath) {
		t.Fatalf("list with a corrupt config: %v", r)
	}

	// a failed login leaves the file as it was
	if r := runRaw(t, "", "login", "-u", testAK, "-p", "wrong", "--api", f.srv.URL); r.code != ExitError || !strings.Contains(r.stderr, "status 401") {
		t.Fatalf("login with a wrong SK: %v", r)
	}
	if b, _ := os.ReadFile(cfgPath); string(b) != corrupt {
		t.Fatalf("a failed login changed the corrupt config to %q", b)
	}

	r := mustOK(t, runRaw(t, "", "login", "-u", testAK, "-p", testSK, "--api", f.srv.URL))
	if !strings.Contains(r.stdout, "Login success") || !strings.Contains(r.stderr, "replaced") || !strings.Contains(r.stderr, cfgPath) {
		t.Fatalf("login over a corrupt config: %v", r)
	}
	b, _ := os.ReadFile(cfgPath)
	for _, want := range []string{"endpoint: " + f.srv.URL, "ak: " + testAK, "sk: " + testSK} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("config %q lacks %q", b, want)
		}
	}
	mustOK(t, runRaw(t, "", "list"))
	// a good config is replaced without a word
	if r := mustOK(t, runRaw(t, "", "login", "-u", testAK, "-p", testSK)); r.stderr != "" {
		t.Fatalf("login over a good config says %q", r.stderr)
	}
}

// TestSaveConfigThroughSymlink: a config file that is a symlink (to a
// dotfiles checkout, say) is written through: its target gets the new
// content, atomically, and keeps its mode; the link stays a link. The
// rename replaced the link with a regular file.
func TestSaveConfigThroughSymlink(t *testing.T) {
	for _, tc := range []struct {
		name     string
		existing bool // the target exists (else the link dangles)
	}{{"target", true}, {"dangling", false}} {
		t.Run(tc.name, func(t *testing.T) {
			f, cfgPath := loginEnv(t)
			home := filepath.Dir(filepath.Dir(cfgPath))
			dots := filepath.Join(home, "dotfiles")
			if err := os.MkdirAll(dots, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(cfgPath), 0o700); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(dots, "qdoractl.yaml")
			// two hops, the first relative: config.yaml -> ../mid.yaml -> dotfiles/qdoractl.yaml
			mid := filepath.Join(home, "mid.yaml")
			if err := os.Symlink(target, mid); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("../mid.yaml", cfgPath); err != nil {
				t.Fatal(err)
			}
			wantMode := os.FileMode(0o600)
			if tc.existing {
				if err := os.WriteFile(target, []byte("endpoint: http://old.example\n"), 0o640); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(target, 0o640); err != nil {
					t.Fatal(err)
				}
				wantMode = 0o640
			}

			mustOK(t, runRaw(t, "", "login", "-u", testAK, "-p", testSK, "--api", f.srv.URL))
			for _, link := range []struct{ path, to string }{{cfgPath, "../mid.yaml"}, {mid, target}} {
				if got, err := os.Readlink(link.path); err != nil || got != link.to {
					t.Fatalf("after login, %s links to %q (%v); want %q", link.path, got, err, link.to)
				}
			}
			b, err := os.ReadFile(target)
			if err != nil || !strings.Contains(string(b), "sk: "+testSK) || !strings.Contains(string(b), "endpoint: "+f.srv.URL) {
				t.Fatalf("the link's target holds %q, %v", b, err)
			}
			st, err := os.Stat(target)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != wantMode {
				t.Fatalf("the target's mode is %v, want %v", st.Mode().Perm(), wantMode)
			}
			left, _ := filepath.Glob(filepath.Join(dots, ".config-*"))
			if len(left) != 0 {
				t.Fatalf("temporary files left: %q", left)
			}
			mustOK(t, runRaw(t, "", "logout"))
			if b, _ := os.ReadFile(target); strings.Contains(string(b), testSK) {
				t.Fatalf("after logout the target holds %q", b)
			}
		})
	}
}
