package cmd

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
)

func TestMkconfigThenConfig(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"POST /v1/releases": reply(201, dora.Release{Ufop: "doraufoptest", Version: "v1", Image: "ufopdemo:v1", Flavor: "C1M1", Desc: "a demo"}),
	})
	dir := t.TempDir()
	r := mustOK(t, runCLI(t, f, "", "release", "--mkconfig", dir))
	if !strings.Contains(r.stdout, "dora.yaml") {
		t.Fatalf("stdout %q", r.stdout)
	}
	// the template parses strictly as it is
	cfg, err := ReadDoraYAML(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.UfopName != "doraufoptest" || cfg.HealthCheck == nil || cfg.HealthCheck.Path != "/health" || cfg.HealthCheck.Timeout != 3 {
		t.Fatalf("template parsed as %+v", cfg)
	}
	// a second mkconfig does not overwrite
	if r := runCLI(t, f, "", "release", "--mkconfig", dir); r.code != ExitError || !strings.Contains(r.stderr, "exists") {
		t.Fatalf("second mkconfig: %v", r)
	}
	r = mustOK(t, runCLI(t, f, "", "release", "--config", dir))
	want := "Build success\nUfop: doraufoptest\nVersion: v1\nImage: ufopdemo:v1\nFlavor: C1M1\nDesc: a demo\n" +
		"You can also see the release via run `qdoractl release doraufoptest -d`\n"
	if r.stdout != want {
		t.Fatalf("release --config:\n%s\nwant:\n%s", r.stdout, want)
	}
	jsonEq(t, f.last(t, "POST /v1/releases").Body, `{"ufopname":"doraufoptest","verstr":"v1","image":"ufopdemo:v1","desc":"a demo",
		"flavor":"C1M1","health_check":{"path":"/health","timeout":3},"log_file_paths":[]}`)
}

func TestReadDoraYAML(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr []string // substrings; nil means success
		check   func(t *testing.T, c client.ReleaseConfig)
	}{
		{"seed", "---\nufopname: doraufoptest\nverstr: v1\nimage: ufopdemo:v1\ndesc: a demo\nflavor: C1M1\nhealth_check:\n  path: \"/health\"\n  timeout: 3\nlog_file_paths: []\n",
			nil, func(t *testing.T, c client.ReleaseConfig) {
				if c.VerStr != "v1" || c.Image != "ufopdemo:v1" || c.Flavor != "C1M1" || c.LogFilePaths == nil {
					t.Fatalf("%+v", c)
				}
			}},
		{"env global and extras", "ufopname: u1234\nverstr: v2\nimage: u1234.v2\nflavor: default\nenv:\n  global:\n    - key: K\n      value: V\nprotocol: ufop\ntimeouts:\n  first_byte: 60s\n  connect: 2\nautoscale:\n  target: 5\n  stable_window: 30s\n",
			nil, func(t *testing.T, c client.ReleaseConfig) {
				if c.Env == nil || len(c.Env.Global) != 1 || c.Env.Global[0] != (dora.EnvVar{Key: "K", Value: "V"}) {
					t.Fatalf("env %+v", c.Env)
				}
				if c.Protocol != "ufop" || c.Timeouts.FirstByte != "60s" || c.Timeouts.Connect != "2s" || c.Autoscale.Target != 5 || c.Autoscale.StableWindow != 30*time.Second {
					t.Fatalf("%+v %+v %+v", c, c.Timeouts, c.Autoscale)
				}
			}},
		{"unknown fields named", "ufopname: u\nverstr: v1\nimage: i\nflavor: f\nflavour: C1M1\nhealth_check:\n  path: /h\n  interval: 3\n",
			[]string{"unknown field flavour", "unknown field interval"}, nil},
		{"missing required", "desc: x\n", []string{"ufopname", "verstr", "image", "flavor"}, nil},
		{"empty", "", []string{"empty"}, nil},
		{"not yaml", "ufopname: [\n", []string{"dora.yaml"}, nil},
		{"wrong type", "ufopname: u\nverstr: v1\nimage: i\nflavor: f\nhealth_check:\n  timeout: soon\n", []string{"soon"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "dora.yaml"), []byte(tt.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := ReadDoraYAML(dir)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				tt.check(t, c)
				return
			}
			if !errors.Is(err, ErrBadConfig) {
				t.Fatalf("err = %v, want ErrBadConfig", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("err %q lacks %q", err, w)
				}
			}
		})
	}
	if _, err := ReadDoraYAML(filepath.Join(t.TempDir(), "none")); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestReleaseConfigUnknownFieldExitsUsage(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "dora.yaml"), []byte("ufopname: u\nverstr: v1\nimage: i\nflavor: f\nbogus: 1\n"), 0o644)
	r := runCLI(t, nil, "", "release", "--config", dir)
	if r.code != ExitUsage || !strings.Contains(r.stderr, "unknown field bogus") {
		t.Fatalf("got %v", r)
	}
}

func TestReleaseDetail(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"GET /v1/ufops/doraufoptest/releases": reply(200, client.Releases{Mode: "private",
			Releases: []dora.Release{
				{Version: "v1", Image: "ufopdemo:v1", Flavor: "C1M1", Desc: "a demo", HealthCheck: dora.HealthCheck{Path: "/health", Timeout: 3}},
				{Version: "v2", Image: "ufopdemo:v2", Flavor: "C1M1", Protocol: dora.ProtocolUfop},
			},
			Deployments: []dora.Deployment{{ID: "deploy-1", Version: "v1", Region: "z0", Expect: 2, Desired: 2, Max: 5, Status: "RUNNING"}}}),
		"GET /v1/images": reply(200, []client.Image{{Name: "ufopdemo:v1", Kind: "oci", Created: time.Date(2016, 11, 28, 12, 19, 5, 0, time.UTC)}}),
	})
	r := mustOK(t, runCLI(t, f, "", "release", "doraufoptest", "-d"))
	lines := strings.Split(r.stdout, "\n")
	if lines[0] != "Mode: PRIVATE" || lines[1] != "Releases:" {
		t.Fatalf("release -d:\n%s", r.stdout)
	}
	for _, w := range []string{
		"Version  Image        Flavor  Desc    Health Check Path  Health Check Timeout  LogFilePaths  Protocol",
		"v1       ufopdemo:v1  C1M1    a demo  /health            3                     []            dora",
		"v2       ufopdemo:v2  C1M1    -       -                  0                     []            ufop",
		"Deploys:\nVersion  Region  Expect  Actual  Max  Status   Id",
		"v1       z0      2       2       5    RUNNING  deploy-1",
	} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("release -d lacks %q:\n%s", w, r.stdout)
		}
	}
	r = mustOK(t, runCLI(t, f, "", "release", "doraufoptest", "v2", "-d"))
	if strings.Contains(r.stdout, "ufopdemo:v1") || !strings.Contains(r.stdout, "ufopdemo:v2") {
		t.Fatalf("release v2 -d:\n%s", r.stdout)
	}
	if r := runCLI(t, f, "", "release"); r.code != ExitUsage {
		t.Fatalf("bare release: %v", r)
	}
	r = mustOK(t, runCLI(t, f, "", "image"))
	if !strings.Contains(r.stdout, "Name         Ctime") || !strings.Contains(r.stdout, "ufopdemo:v1  "+time.Date(2016, 11, 28, 12, 19, 5, 0, time.UTC).Local().Format("2006-01-02 15:04:05")) {
		t.Fatalf("image:\n%s", r.stdout)
	}
}

// TestExampleDoraYAMLs: every example's dora.yaml is accepted as it is.
func TestExampleDoraYAMLs(t *testing.T) {
	paths, err := filepath.Glob("../../../examples/*/dora.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no examples found: every example dora.yaml must be checked")
	}
	for _, p := range paths {
		if _, err := ReadDoraYAML(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// TestDoraYAMLBlockDescIsOneLine: "desc: |" ends the text with a line
// break YAML adds; the release's desc is the line without it (the server
// refuses line breaks in descriptions).
func TestDoraYAMLBlockDescIsOneLine(t *testing.T) {
	dir := t.TempDir()
	yml := "ufopname: grepd\nverstr: v1\nimage: grepd.v1\nflavor: C1M1\ndesc: |\n  a demo\n"
	if err := os.WriteFile(filepath.Join(dir, "dora.yaml"), []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ReadDoraYAML(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Desc != "a demo" {
		t.Errorf("desc %q, want %q", cfg.Desc, "a demo")
	}
}
