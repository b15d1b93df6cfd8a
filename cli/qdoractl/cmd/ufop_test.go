package cmd

import (
	"strings"
	"testing"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
)

func TestRegisterSpellings(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"POST /v1/ufops": reply(201, dora.Ufop{Name: "doraufoptest", Mode: dora.ModePrivate, Desc: "it is a test!"}),
	})
	tests := []struct {
		args []string
		body string
	}{
		{[]string{"register", "doraufoptest", "-m", "private", "-d", "it is a test!"}, `{"name":"doraufoptest","desc":"it is a test!","mode":2}`},
		{[]string{"register", "doraufoptest", "--mode", "protected", "--description", "x"}, `{"name":"doraufoptest","desc":"x","mode":1}`},
		{[]string{"reg", "grepd", "-mode", "1", "-desc", "demo ufop"}, `{"name":"grepd","desc":"demo ufop","mode":1}`},
		{[]string{"register", "grepd"}, `{"name":"grepd","desc":"","mode":2}`},
		{[]string{"reg", "grepd", "-mode", "0"}, `{"name":"grepd","desc":"","mode":0}`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := mustOK(t, runCLI(t, f, "", tt.args...))
			jsonEq(t, f.last(t, "POST /v1/ufops").Body, tt.body)
			if !strings.HasPrefix(r.stdout, "Register success\n") {
				t.Fatalf("stdout %q", r.stdout)
			}
		})
	}
}

func TestInfoLayout(t *testing.T) {
	created := time.Date(2014, 11, 5, 10, 49, 33, 0, time.UTC)
	info := client.UfopInfo{Name: "grepd", Owner: "1366779853", ActiveVersion: "v1", Mode: dora.ModePublic, Desc: "demo ufop",
		Created: created, InstanceNum: 1, MaxInstanceNum: 5, Flavor: "default", AccessList: []string{"1366779853"}}
	f := newFakeAPI(t, map[string]route{
		"GET /v1/ufops/grepd": reply(200, info),
		"GET /v1/ufops":       reply(200, []client.UfopInfo{info}),
	})
	r := mustOK(t, runCLI(t, f, "", "info", "grepd"))
	want := "Ufop name: grepd\nOwner: 1366779853\nVersion: 1\nAccess mode: PUBLIC\nDescription: demo ufop\n" +
		"Create time: " + created.Local().Format("2006-01-02 15:04:05 -0700 MST") + "\n" +
		"Instance num: 1\nMax instanceNum: 5\nFlavor: default\nAccess list: 1366779853\n"
	if r.stdout != want {
		t.Fatalf("info:\n%s\nwant:\n%s", r.stdout, want)
	}
	// With the policy in force, info shows it on one more line.
	info.Autoscale = withPolicy(dora.Deployment{}).Autoscale
	f.mu.Lock()
	f.routes["GET /v1/ufops/grepd"] = reply(200, info)
	f.mu.Unlock()
	r = mustOK(t, runCLI(t, f, "", "info", "grepd"))
	if !strings.HasPrefix(r.stdout, want) || !strings.HasSuffix(r.stdout, "\nAutoscale: target 2 in flight per instance, stable window 6s, "+
		"panic window 1s (threshold 2), scale up ×10 / down ÷2 per step, cooldown up 0s / down 1s, every 200ms\n") {
		t.Fatalf("info with a policy:\n%s", r.stdout)
	}
	r = mustOK(t, runCLI(t, f, "", "list"))
	if !strings.Contains(r.stdout, "grepd  1366779853  PUBLIC  v1       1          demo ufop") {
		t.Fatalf("list:\n%s", r.stdout)
	}
}

func TestApplyUnregister(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"POST /v1/ufops/grepd/apply":   reply(200, dora.Account{ID: "7", Applied: []string{"grepd"}}),
		"DELETE /v1/ufops/grepd/apply": reply(200, dora.Account{ID: "7"}),
		"DELETE /v1/ufops/grepd":       reply(204, nil),
	})
	if r := mustOK(t, runCLI(t, f, "", "apply", "grepd")); !strings.Contains(r.stdout, "Applied: grepd") {
		t.Fatalf("apply: %q", r.stdout)
	}
	mustOK(t, runCLI(t, f, "", "unapply", "grepd"))
	mustOK(t, runCLI(t, f, "", "unregister", "grepd"))
	f.last(t, "DELETE /v1/ufops/grepd")
}

func TestModeCommand(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"POST /v1/ufops/grepd/mode": reply(200, client.UfopInfo{Name: "grepd", Mode: dora.ModeProtected}),
	})
	r := mustOK(t, runCLI(t, f, "", "mode", "grepd", "protected"))
	if r.stdout != "Ufop grepd access mode: PROTECTED\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	jsonEq(t, f.last(t, "POST /v1/ufops/grepd/mode").Body, `{"mode":1}`)
	mustOK(t, runCLI(t, f, "", "mode", "grepd", "2"))
	jsonEq(t, f.last(t, "POST /v1/ufops/grepd/mode").Body, `{"mode":2}`)
	if r := runCLI(t, f, "", "mode", "grepd", "secret"); r.code == 0 {
		t.Fatal("a bad mode was accepted")
	}
}

func TestInfoVersion(t *testing.T) {
	for in, want := range map[string]string{"v1": "1", "v12": "12", "v": "v", "v1.2": "v1.2", "release-3": "release-3", "": ""} {
		if got := infoVersion(in); got != want {
			t.Errorf("infoVersion(%q) = %q, want %q", in, got, want)
		}
	}
}
