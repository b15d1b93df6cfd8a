package cmd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
)

func TestNormalizeArgs(t *testing.T) {
	root := NewRootCommand(io.Discard, io.Discard)
	tests := []struct {
		in, want []string
	}{
		{[]string{"resize", "grepd", "-num", "3"}, []string{"resize", "grepd", "--num", "3"}},
		{[]string{"reg", "grepd", "-mode", "1", "-desc", "demo ufop"}, []string{"reg", "grepd", "--mode", "1", "--desc", "demo ufop"}},
		{[]string{"stop", "grepd", "-range", "1:5"}, []string{"stop", "grepd", "--range", "1:5"}},
		{[]string{"state", "grepd", "-index=2"}, []string{"state", "grepd", "--index=2"}},
		{[]string{"logtail", "grepd", "-index", "1", "-type", "stdout", "-tail", "200"},
			[]string{"logtail", "grepd", "--index", "1", "--type", "stdout", "--tail", "200"}},
		{[]string{"build", "grepd", "-dir", "x"}, []string{"build", "grepd", "--dir", "x"}},
		// shorthands and unknown words stay as they are
		{[]string{"buildlog", "grepd", "-v", "1"}, []string{"buildlog", "grepd", "-v", "1"}},
		{[]string{"ufopver", "grepd", "-c", "1"}, []string{"ufopver", "grepd", "-c", "1"}},
		{[]string{"log", "grepd", "v1", "-k", "-xyz"}, []string{"log", "grepd", "v1", "-k", "-xyz"}},
		{[]string{"deploy", "u", "v1", "-e", "-1"}, []string{"deploy", "u", "v1", "-e", "-1"}},
		// after "--" nothing is touched
		{[]string{"log", "grepd", "v1", "--", "-num"}, []string{"log", "grepd", "v1", "--", "-num"}},
		{[]string{"--num", "3"}, []string{"--num", "3"}},
	}
	for _, tt := range tests {
		if got := NormalizeArgs(root, tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("NormalizeArgs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestSingleDashFlagsParse checks that the seeds' spellings reach the API.
func TestSingleDashFlagsParse(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"POST /v1/ufops":              reply(201, dora.Ufop{Name: "grepd", Mode: dora.ModeProtected, Desc: "demo ufop"}),
		"POST /v1/ufops/grepd/resize": reply(200, dora.Deployment{ID: "deploy-1", Version: "v1", Region: "z0", Expect: 3}),
	})
	mustOK(t, runCLI(t, f, "", "reg", "grepd", "-mode", "1", "-desc", "demo ufop"))
	jsonEq(t, f.last(t, "POST /v1/ufops").Body, `{"name":"grepd","desc":"demo ufop","mode":1}`)
	mustOK(t, runCLI(t, f, "", "resize", "grepd", "-num", "3"))
	jsonEq(t, f.last(t, "POST /v1/ufops/grepd/resize").Body, `{"num":3}`)
}

func TestEveryCommandHasAnExample(t *testing.T) {
	root := NewRootCommand(io.Discard, io.Discard)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() != "help" && c.Name() != "completion" && c.Example == "" {
			t.Errorf("command %q has no Example", c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
}

func TestHelp(t *testing.T) {
	r := mustOK(t, runCLI(t, nil, "", "deploy", "--help"))
	if !strings.Contains(r.stdout, "qdoractl deploy doraufoptest v1 --region z0 --expect 2") {
		t.Fatalf("help lacks the example:\n%s", r.stdout)
	}
}

func TestExitCodes(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"GET /v1/ufops/nope": reply(404, map[string]string{"error": "ufop nope not found"}),
	})
	tests := []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"api error", []string{"info", "nope"}, ExitError, "ufop nope not found (status 404, reqid reqid-42)"},
		{"missing arg", []string{"info"}, ExitUsage, "accepts 1 arg"},
		{"unknown flag", []string{"info", "x", "--bogus"}, ExitUsage, "unknown flag"},
		{"unknown command", []string{"frobnicate"}, ExitUsage, "unknown command"},
		{"bad mode", []string{"register", "grepd", "-m", "open"}, ExitUsage, "mode must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, f, "", tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.err) {
				t.Fatalf("want exit %d with %q, got %v", tt.code, tt.err, r)
			}
		})
	}
}

func TestNotLoggedIn(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("DORA_AK", "")
	t.Setenv("DORA_SK", "")
	t.Setenv("DORA_API", "")
	t.Setenv("QDORACTL_CONFIG", "")
	r := runRaw(t, "", "list")
	if r.code != ExitError || !strings.Contains(r.stderr, "not logged in") {
		t.Fatalf("got %v", r)
	}
}

func TestLoginStoresKeysAndPrecedence(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"GET /v1/whoami": reply(200, dora.Account{ID: "1366779853", Name: "alice", AccessKey: testAK}),
		"GET /v1/ufops":  reply(200, []any{}),
	})
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("QDORACTL_CONFIG", "")
	t.Setenv("DORA_AK", "")
	t.Setenv("DORA_SK", "")
	t.Setenv("DORA_API", "")

	// wrong keys: nothing stored, the API's message is shown
	r := runRaw(t, "", "login", "-u", testAK, "-p", "wrong", "--api", f.srv.URL)
	if r.code != ExitError || !strings.Contains(r.stderr, "status 401") ||
		!strings.Contains(r.stderr, "qdoractl: login to "+f.srv.URL+": the platform refused the keys: the access key is unknown or disabled, or the secret key is wrong (status 401") ||
		strings.Contains(r.stderr, "unauthorized:") {
		t.Fatalf("login with a wrong SK: %v", r)
	}
	cfgPath := filepath.Join(home, ".qdoractl", "config.yaml")
	if _, err := os.Stat(cfgPath); err == nil {
		t.Fatal("a failed login wrote the config")
	}

	r = mustOK(t, runRaw(t, "", "login", "-u", testAK, "-p", testSK, "--api", f.srv.URL))
	if !strings.Contains(r.stdout, "Login success: account 1366779853 (alice)") {
		t.Fatalf("stdout %q", r.stdout)
	}
	st, err := os.Stat(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("config mode %v, want 0600", st.Mode().Perm())
	}
	dst, _ := os.Stat(filepath.Dir(cfgPath))
	if dst.Mode().Perm() != 0o700 {
		t.Fatalf("config dir mode %v, want 0700", dst.Mode().Perm())
	}
	b, _ := os.ReadFile(cfgPath)
	for _, want := range []string{"endpoint: " + f.srv.URL, "ak: " + testAK, "sk: " + testSK} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("config %q lacks %q", b, want)
		}
	}

	// the stored keys work without env
	mustOK(t, runRaw(t, "", "list"))

	// env overrides the file: a wrong SK in DORA_SK fails
	t.Setenv("DORA_SK", "wrong")
	if r := runRaw(t, "", "list"); r.code != ExitError {
		t.Fatalf("DORA_SK did not override the file: %v", r)
	}
	t.Setenv("DORA_SK", "")

	// DORA_API overrides the file, --api overrides DORA_API
	t.Setenv("DORA_API", "http://127.0.0.1:1")
	if r := runRaw(t, "", "list"); r.code != ExitError {
		t.Fatalf("DORA_API did not override the file: %v", r)
	}
	mustOK(t, runRaw(t, "", "list", "--api", f.srv.URL))
	t.Setenv("DORA_API", "")

	// logout forgets the keys and keeps the endpoint
	mustOK(t, runRaw(t, "", "logout"))
	b, _ = os.ReadFile(cfgPath)
	if strings.Contains(string(b), testSK) || !strings.Contains(string(b), f.srv.URL) {
		t.Fatalf("config after logout: %q", b)
	}
	if r := runRaw(t, "", "list"); r.code != ExitError || !strings.Contains(r.stderr, "not logged in") {
		t.Fatalf("after logout: %v", r)
	}
}

func TestLoginInteractive(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"GET /v1/whoami": reply(200, dora.Account{ID: "7", AccessKey: testAK}),
	})
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("QDORACTL_CONFIG", "")
	t.Setenv("DORA_AK", "")
	t.Setenv("DORA_SK", "")
	t.Setenv("DORA_API", f.srv.URL)
	r := mustOK(t, runRaw(t, testAK+"\n"+testSK+"\n", "login"))
	if !strings.Contains(r.stderr, "Access key: ") || !strings.Contains(r.stderr, "Secret key: ") {
		t.Fatalf("no prompts: %v", r)
	}
	b, err := os.ReadFile(filepath.Join(home, ".qdoractl", "config.yaml"))
	if err != nil || !strings.Contains(string(b), "sk: "+testSK) {
		t.Fatalf("config %q, %v", b, err)
	}
	// closed stdin before the secret: a clear error, nothing stored
	t.Setenv("HOME", t.TempDir())
	if r := runRaw(t, testAK+"\n", "login"); r.code == 0 || !strings.Contains(r.stderr, "secret key") {
		t.Fatalf("login without a secret: %v", r)
	}
}

func TestJSONOutput(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"GET /v1/flavors": reply(200, []dora.Flavor{{Name: "C1M1", CPU: 1000, MemoryMB: 1024, Desc: "1 core"}}),
	})
	r := mustOK(t, runCLI(t, f, "", "flavor", "--json"))
	jsonEq(t, []byte(r.stdout), `[{"name":"C1M1","cpu":1000,"memoryMB":1024,"desc":"1 core"}]`)
	r = mustOK(t, runCLI(t, f, "", "flavor"))
	if !strings.Contains(r.stdout, "Name  CPU(MHz)  Memory(MiB)  Desc") || !strings.Contains(r.stdout, "C1M1  1000      1024         1 core") {
		t.Fatalf("table:\n%s", r.stdout)
	}
}

// TestTidyAuthRefusal: the admin API's 401 for a bad signature chains its
// layers' prefixes; qdoractl shows one sentence, and leaves other errors be.
func TestTidyAuthRefusal(t *testing.T) {
	for _, c := range []struct {
		status   int
		in, want string
	}{
		{401, "bad signature: unauthorized: bad token: signature mismatch (unknown or disabled access key, wrong secret key, or a request changed after it was signed)",
			"the platform refused the keys: the access key is unknown or disabled, or the secret key is wrong"},
		{401, "bad signature: unauthorized: X-Qiniu-Date 20260101T000000Z is more than 15m0s from the server's clock",
			"the platform refused the request's signature: X-Qiniu-Date 20260101T000000Z is more than 15m0s from the server's clock"},
		{401, "token expired", "token expired"},
		{403, "bad signature: unauthorized: x", "bad signature: unauthorized: x"},
	} {
		ae := &client.APIError{Status: c.status, Message: c.in, Reqid: "r1"}
		err := tidyAuthRefusal(fmt.Errorf("login to x: %w", ae))
		want := fmt.Sprintf("login to x: %s (status %d, reqid r1)", c.want, c.status)
		if ae.Message != c.want || err.Error() != want || !errors.Is(err, ae) {
			t.Errorf("%d %q: got %q (%q), want %q", c.status, c.in, ae.Message, err, want)
		}
	}
}
