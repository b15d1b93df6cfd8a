package cmd

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/api"
)

func TestVersion(t *testing.T) {
	r := mustOK(t, runCLI(t, nil, "", "version"))
	if !strings.HasPrefix(r.stdout, "qdoractl ") || !strings.Contains(r.stdout, "go1.") {
		t.Fatalf("version: %q", r.stdout)
	}
	r = mustOK(t, runCLI(t, nil, "", "--json", "version"))
	var in struct{ Version, GoVersion string }
	if err := json.Unmarshal([]byte(r.stdout), &in); err != nil || in.Version == "" || in.GoVersion == "" {
		t.Fatalf("version --json: %v %q", err, r.stdout)
	}
}

// TestUnknownSubcommandExitsUsage: an unknown word anywhere in the tree is
// a usage error (exit 2) with a suggestion, not help and exit 0.
func TestUnknownSubcommandExitsUsage(t *testing.T) {
	for _, args := range [][]string{{"bucket", "lst"}, {"account", "lsit"}, {"nosuch"}, {"bucket", "list", "--nosuch"}} {
		r := runCLI(t, nil, "", args...)
		if r.code != ExitUsage || !strings.Contains(r.stderr, "unknown") {
			t.Errorf("%v: %v", args, r)
		}
	}
	if r := runCLI(t, nil, "", "bucket", "lst"); !strings.Contains(r.stderr, "Did you mean this?\n\tlist") {
		t.Errorf("no suggestion: %q", r.stderr)
	}
	if r := mustOK(t, runCLI(t, nil, "", "bucket")); !strings.Contains(r.stdout, "Usage:") {
		t.Errorf("a bare group prints its help: %q", r.stdout)
	}
}

// TestJSONErrors: with --json an error is one JSON object on stderr, with
// the API's status and request id when it came from the API, and stdout
// stays empty.
func TestJSONErrors(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"GET /v1/ufops/nosuch": reply(404, map[string]string{"error": "no such ufop"}),
	})
	r := runCLI(t, f, "", "--json", "info", "nosuch")
	var je JSONError
	if r.code != ExitError || r.stdout != "" || json.Unmarshal([]byte(r.stderr), &je) != nil {
		t.Fatalf("api error with --json: %v", r)
	}
	if je.Error != "no such ufop" || je.Status != 404 || je.Reqid != "reqid-42" || je.Code != ExitError {
		t.Fatalf("json error %+v", je)
	}
	r = runCLI(t, f, "", "--json", "bucket", "lst")
	if r.code != ExitUsage || json.Unmarshal([]byte(r.stderr), &je) != nil || je.Code != ExitUsage || !strings.Contains(je.Error, "lst") {
		t.Fatalf("usage error with --json: %v", r)
	}
	if r := runCLI(t, f, "", "info", "nosuch"); strings.HasPrefix(r.stderr, "{") {
		t.Fatalf("without --json errors stay text: %q", r.stderr)
	}
}

// TestDynamicCompletion: Tab after a command asks the API for the names
// (cobra's hidden __complete is what the shell scripts call).
func TestDynamicCompletion(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"GET /v1/ufops":                reply(200, []api.UfopInfo{{Ufop: dora.Ufop{Name: "grepd", Desc: "grep"}}, {Ufop: dora.Ufop{Name: "wordcount"}}}),
		"GET /v1/buckets":              reply(200, []dora.Bucket{{Name: "photos"}, {Name: "docs"}}),
		"GET /v1/regions":              reply(200, []api.Region{{Name: "z0", Desc: "default"}, {Name: "z1"}}),
		"GET /v1/ufops/grepd/releases": reply(200, api.Releases{Releases: []dora.Release{{Version: "v1", Image: "grepd.v1"}, {Version: "v2"}}}),
		"GET /v1/ufops/grepd/builds":   reply(200, []dora.Build{{Number: 1, Status: "SUCCESS"}, {Number: 2, Status: "FAILED"}}),
	})
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "info", ""}, []string{"grepd\tgrep", "wordcount"}},
		{[]string{"__complete", "deploy", "grepd", ""}, []string{"v1\tgrepd.v1", "v2"}},
		{[]string{"__complete", "ls", ""}, []string{"photos", "docs"}},
		{[]string{"__complete", "bucket", "rm", ""}, []string{"photos", "docs"}},
		{[]string{"__complete", "resize", "grepd", "--region", ""}, []string{"z0\tdefault", "z1"}},
		{[]string{"__complete", "buildlog", "grepd", "-v", ""}, []string{"1\tSUCCESS", "2\tFAILED"}},
	} {
		r := mustOK(t, runCLI(t, f, "", tc.args...))
		for _, w := range tc.want {
			if !strings.Contains(r.stdout, w+"\n") {
				t.Errorf("%v: completions %q lack %q", tc.args, r.stdout, w)
			}
		}
	}
	// An unreachable API completes nothing, silently.
	t.Setenv("DORA_API", "http://127.0.0.1:1")
	r := runRaw(t, "", "__complete", "info", "")
	if r.code != 0 || strings.Contains(r.stdout, "grepd") {
		t.Fatalf("unreachable API: %v", r)
	}
}
