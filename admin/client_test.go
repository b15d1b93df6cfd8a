package admin

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
)

// TestWithTheGoClient drives the server with admin/client, qdoractl's own
// code: the two sides of docs/api.md must agree.
func TestWithTheGoClient(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	root := client.New(e.ts.URL, testRootAK, testRootSK)
	acct, err := root.CreateAccount(ctx, "alice", 4)
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(e.ts.URL, acct.AccessKey, acct.SecretKey)
	if who, err := c.Whoami(ctx); err != nil || who.ID != acct.ID {
		t.Fatalf("whoami = %+v, %v", who, err)
	}
	if _, err := c.CreateAccount(ctx, "x", 0); client.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("user creating an account: %v", err)
	}
	if _, err := c.CreateBucket(ctx, client.BucketSpec{Name: "photos"}); err != nil {
		t.Fatal(err)
	}
	obj, err := c.PutObject(ctx, "photos", "a b/c.txt", strings.NewReader("hello world"), 11, "")
	if err != nil || obj.Size != 11 {
		t.Fatalf("put = %+v, %v", obj, err)
	}
	if _, err := c.PutObject(ctx, "photos", "a b/c.txt", strings.NewReader("x"), 1, "", client.InsertOnly()); client.StatusOf(err) != http.StatusConflict {
		t.Fatalf("insert-only: %v", err)
	}
	rc, got, err := c.GetObject(ctx, "photos", "a b/c.txt")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rc)
	rc.Close()
	if string(body) != "hello world" || got.ETag != obj.ETag {
		t.Fatalf("get = %q %+v", body, got)
	}
	if items, err := c.ListObjects(ctx, "photos", "a ", 0); err != nil || len(items) != 1 {
		t.Fatalf("list = %+v, %v", items, err)
	}

	if _, err := c.RegisterUfop(ctx, "grepd", "demo", dora.ModeProtected); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RegisterUfop(ctx, "pubufop", "", dora.ModePublic); client.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("public by a user: %v", err)
	}
	e.push(acct, "ufopdemo:v1")
	rel, err := c.CreateRelease(ctx, client.ReleaseConfig{
		UfopName: "grepd", VerStr: "v1", Image: "ufopdemo:v1", Flavor: "C1M1",
		HealthCheck: &client.HealthCheckConfig{Path: "/health", Timeout: 3},
		Timeouts:    &client.TimeoutsConfig{Connect: "1s"},
		Autoscale:   &dora.AutoscalePolicy{Target: 3},
	})
	if err != nil || rel.Timeouts.Connect.String() != "1s" || rel.Autoscale == nil || rel.Autoscale.Target != 3 {
		t.Fatalf("release = %+v, %v", rel, err)
	}
	if _, err := c.CreateRelease(ctx, client.ReleaseConfig{UfopName: "grepd", VerStr: "v2", Image: "ufopdemo:v1", Flavor: "nope"}); client.StatusOf(err) != http.StatusUnprocessableEntity {
		t.Fatalf("unknown flavor: %v", err)
	}
	d, err := c.Deploy(ctx, "grepd", client.DeployRequest{Version: "v1", Region: "z0", Expect: 2})
	if err != nil || d.Max != 4 {
		t.Fatalf("deploy = %+v, %v", d, err)
	}
	if _, err := c.Deploy(ctx, "grepd", client.DeployRequest{Version: "v1", Expect: 5}); client.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("over limit: %v", err)
	}
	e.rt.setRunning(d.ID, 2)
	if err := e.srv.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := c.Deployment(ctx, "grepd", d.ID)
	if err != nil || info.Status != dora.DeployRunning || len(info.Instances) != 2 {
		t.Fatalf("deployment = %+v, %v", info, err)
	}
	if insts, err := c.Instances(ctx, "grepd", "", false); err != nil || len(insts) != 2 {
		t.Fatalf("instances = %+v, %v", insts, err)
	}
	if err := c.StopInstances(ctx, "grepd", "", []int{1}); err != nil {
		t.Fatal(err)
	}
	logs, err := c.InstanceLogs(ctx, "grepd", 1, "", "stdout", 5)
	if err != nil {
		t.Fatal(err)
	}
	lb, _ := io.ReadAll(logs)
	logs.Close()
	if !strings.Contains(string(lb), "line one of 1") {
		t.Fatalf("logs = %q", lb)
	}
	rd, err := c.Resize(ctx, "grepd", 3, "")
	if err != nil || rd.Expect != 3 {
		t.Fatalf("resize = %+v, %v", rd, err)
	}
	ui, err := c.GetUfop(ctx, "grepd")
	if err != nil || ui.ActiveVersion != "v1" || ui.InstanceNum != 3 || ui.Flavor != "C1M1" {
		t.Fatalf("ufop = %+v, %v", ui, err)
	}
	rels, err := c.Releases(ctx, "grepd")
	if err != nil || rels.Mode != "protected" || len(rels.Releases) != 1 || len(rels.Deployments) != 1 {
		t.Fatalf("releases = %+v, %v", rels, err)
	}
	if evs, err := c.DeploymentEvents(ctx, "grepd", d.ID); err != nil || len(evs) != 0 {
		t.Fatalf("events = %+v, %v", evs, err)
	}
	if err := c.DeleteUfop(ctx, "grepd"); err != nil {
		t.Fatal(err)
	}
}

// Uploads never sign their body, on either side: a .json object (small or
// over the JSON request cap) uploads through the Go client.
func TestClientUploadsJSONObjects(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := client.New(e.ts.URL, testRootAK, testRootSK)
	if _, err := c.CreateBucket(ctx, client.BucketSpec{Name: "docs"}); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{`{"a":1}`, `"` + strings.Repeat("x", MaxJSONBytes+10) + `"`} {
		obj, err := c.PutObject(ctx, "docs", "data.json", strings.NewReader(body), int64(len(body)), "application/json")
		if err != nil {
			t.Fatalf("put %d JSON bytes: %v", len(body), err)
		}
		if obj.Size != int64(len(body)) || obj.MimeType != "application/json" {
			t.Fatalf("put = %+v", obj)
		}
	}
}
