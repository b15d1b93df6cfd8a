package admin

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/pfop/boltq"
	"github.com/doraproject/dora/internal/api"
)

// TestPfopFromTheAPI: POST /v1/pfop (the console's pfop form) submits a
// job through the real pfop handler for the caller's own bucket: the job
// is stored and queued; someone else's bucket, a missing key and bad fops
// are refused with the pfop API's statuses; without a pfop handler the
// route answers 501.
func TestPfopFromTheAPI(t *testing.T) {
	e := newEnv(t)
	req := api.PfopRequest{Bucket: "pfb", Key: "a.txt", Fops: "qhash/md5"}
	if r := e.req(e.root, "POST", "/v1/pfop", req); r.Status != http.StatusNotImplemented {
		t.Fatalf("without a pfop handler: %d %s", r.Status, r.Body)
	}
	q, err := boltq.Open(filepath.Join(t.TempDir(), "pfop.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	h, err := pfop.NewHandler(pfop.HandlerConfig{Store: e.st, Queue: q, Objects: e.objs})
	if err != nil {
		t.Fatal(err)
	}
	e.start(func(c *Config) { c.Pfop = h })

	e.must(http.StatusCreated, e.root, "POST", "/v1/buckets", map[string]any{"name": "pfb"}, nil)
	e.must(http.StatusOK, e.root, "PUT", "/v1/objects/pfb/a.txt", []byte("hello\n"), nil)
	var reply api.PfopReply
	e.must(http.StatusOK, e.root, "POST", "/v1/pfop", api.PfopRequest{Bucket: "pfb", Key: "a.txt", Fops: "qhash/md5", Pipeline: "console"}, &reply)
	if reply.PersistentID == "" {
		t.Fatal("no persistentId")
	}
	j, _, err := pfop.Jobs{Store: e.st}.Get(context.Background(), reply.PersistentID)
	if err != nil || j.Bucket != "pfb" || j.Key != "a.txt" || j.Pipeline != "console" || j.Owner != e.root.ID || len(j.Items) != 1 || j.Items[0].Cmd != "qhash/md5" {
		t.Fatalf("stored job %+v, %v", j, err)
	}
	m, ok, err := q.Claim(context.Background(), "console", "test", 1)
	if err != nil || !ok || m.JobID != reply.PersistentID {
		t.Fatalf("queued: %+v %v %v", m, ok, err)
	}

	other := e.user("other", 1)
	for _, c := range []struct {
		name string
		acct func() resp
		want int
	}{
		{"someone else's bucket", func() resp { return e.req(other, "POST", "/v1/pfop", req) }, http.StatusForbidden},
		{"missing key", func() resp {
			return e.req(e.root, "POST", "/v1/pfop", api.PfopRequest{Bucket: "pfb", Key: "none.txt", Fops: "qhash/md5"})
		}, api.PfopUnknownID},
		{"no such bucket", func() resp {
			return e.req(e.root, "POST", "/v1/pfop", api.PfopRequest{Bucket: "nonesuch", Key: "a.txt", Fops: "qhash/md5"})
		}, 631},
		{"empty fops", func() resp {
			return e.req(e.root, "POST", "/v1/pfop", api.PfopRequest{Bucket: "pfb", Key: "a.txt"})
		}, http.StatusBadRequest},
		{"unsigned", func() resp { return e.req(dora.Account{}, "POST", "/v1/pfop", req) }, http.StatusUnauthorized},
	} {
		if r := c.acct(); r.Status != c.want || r.errMsg() == "" {
			t.Errorf("%s: %d %s, want %d with an error message", c.name, r.Status, r.Body, c.want)
		}
	}
}
