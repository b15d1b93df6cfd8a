package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/cli/platform"
	"github.com/doraproject/dora/internal/agenttest"
)

func TestRegionsFrom(t *testing.T) {
	for _, c := range []struct {
		name    string
		yaml    string // config file content; empty: set value instead
		value   any
		want    []platform.RegionSpec
		wantErr string
	}{
		{name: "unset"},
		{name: "flag list", value: []string{"z0=global/dc1", "z1=asia/sh1+sh2"}, want: []platform.RegionSpec{
			{Name: "z0", NomadRegion: "global", Datacenters: []string{"dc1"}},
			{Name: "z1", NomadRegion: "asia", Datacenters: []string{"sh1", "sh2"}},
		}},
		{name: "env string", value: "z0, z1=eu", want: []platform.RegionSpec{{Name: "z0"}, {Name: "z1", NomadRegion: "eu"}}},
		{name: "file maps and strings", yaml: "regions:\n  - name: z0\n    desc: Hangzhou\n    nomad_region: global\n    datacenters: [dc1, dc2]\n  - z1\n",
			want: []platform.RegionSpec{{Name: "z0", Desc: "Hangzhou", NomadRegion: "global", Datacenters: []string{"dc1", "dc2"}}, {Name: "z1"}}},
		{name: "file unknown key", yaml: "regions:\n  - name: z0\n    nomadregion: global\n", wantErr: `unknown field "nomadregion"`},
		{name: "file scalar", yaml: "regions: 3\n", wantErr: "want a list"},
		{name: "duplicate", value: []string{"z0", "z0=global"}, wantErr: "given twice"},
		{name: "bad name", value: []string{"z/0"}, wantErr: "name must be"},
		{name: "empty nomad region", value: []string{"z0="}, wantErr: "empty Nomad region"},
		{name: "bad datacenter", value: []string{"z0=global/dc1+"}, wantErr: `datacenter ""`},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := viper.New()
			if c.yaml != "" {
				p := filepath.Join(t.TempDir(), "c.yaml")
				if err := os.WriteFile(p, []byte(c.yaml), 0o600); err != nil {
					t.Fatal(err)
				}
				v.SetConfigFile(p)
				if err := v.ReadInConfig(); err != nil {
					t.Fatal(err)
				}
			} else if c.value != nil {
				v.Set("regions", c.value)
			}
			got, err := regionsFrom(v)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("regionsFrom = %v, %v; want error with %q", got, err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 && len(c.want) == 0 {
				return
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("regionsFrom = %+v, want %+v", got, c.want)
			}
		})
	}
}

// running is a dorad command started in the background.
type running struct {
	out    *agenttest.SyncBuffer
	cancel context.CancelFunc
	done   chan error
}

// startDorad runs `dorad args...` until the test ends or stop is called.
func startDorad(t *testing.T, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{out: &agenttest.SyncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	root := newRootCommand()
	root.SetArgs(append(args, "--log-level", "error"))
	root.SetOut(r.out)
	root.SetErr(r.out)
	go func() { r.done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the command and returns its error (nil after a clean stop).
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(40 * time.Second):
		t.Fatalf("command did not stop; output:\n%s", r.out)
		return nil
	}
}

var urlRE = regexp.MustCompile(`running at (http://127\.0\.0\.1:\d+)|at (http://127\.0\.0\.1:\d+)\)`)

// waitURL waits for the command's "running at <url>" line; it fails the
// test when the command exits first.
func (r *running) waitURL(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := urlRE.FindStringSubmatch(r.out.String()); m != nil {
			return m[1] + m[2]
		}
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("command exited: %v; output:\n%s", err, r.out)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no URL printed; output:\n%s", r.out)
	return ""
}

// waitOK polls url until it answers 200 and returns the body.
func waitOK(t *testing.T, url string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(b)
			}
			last = resp.Status + " " + string(b)
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("GET %s never answered 200: %s", url, last)
	return ""
}

// runDorad runs a command that must fail fast and returns its error.
func runDorad(t *testing.T, args ...string) error {
	t.Helper()
	root := newRootCommand()
	root.SetArgs(append(args, "--log-level", "error"))
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dorad %v did not fail fast", args)
	}
	return err
}

func TestHelpHasExamples(t *testing.T) {
	for _, name := range []string{"admin", "router", "autoscaler"} {
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs([]string{name, "--help"})
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Examples:", "dorad " + name, "--store", "DORA_", "consul://"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("dorad %s --help lacks %q:\n%s", name, want, out.String())
			}
		}
	}
}

func TestFlavorsFrom(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		want       []dora.Flavor
		wantErr    string
	}{
		{name: "none", yaml: "store: bolt://x\n"},
		{name: "two", yaml: "flavors:\n  - {name: S, cpu: 100, memoryMB: 64}\n  - name: L\n    cpu: 4000\n    memorymb: 4096\n    desc: big\n",
			want: []dora.Flavor{{Name: "S", CPU: 100, MemoryMB: 64}, {Name: "L", CPU: 4000, MemoryMB: 4096, Desc: "big"}}},
		{name: "unknown key", yaml: "flavors:\n  - {name: S, cpu: 100, memory: 64}\n", wantErr: `unknown field "memory"`},
		{name: "zero memory", yaml: "flavors:\n  - {name: S, cpu: 100}\n", wantErr: "positive cpu and memoryMB"},
		{name: "duplicate", yaml: "flavors:\n  - {name: S, cpu: 1, memoryMB: 1}\n  - {name: S, cpu: 1, memoryMB: 1}\n", wantErr: "unique name"},
		{name: "not a list", yaml: "flavors: big\n", wantErr: "want a list"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(p, []byte(c.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			v := viper.New()
			v.SetConfigFile(p)
			if err := v.ReadInConfig(); err != nil {
				t.Fatal(err)
			}
			got, err := flavorsFrom(v)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("flavorsFrom = %v, %v; want error with %q", got, err, c.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, c.want) {
				t.Fatalf("flavorsFrom = %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}
