package main

import (
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/pfop/redisq"
	"github.com/doraproject/dora/internal/agenttest"
	"github.com/doraproject/dora/internal/redisconn"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/bolt"
	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/origin/local"
)

func TestParseLimits(t *testing.T) {
	good := map[string]map[string]int{
		"":                   {},
		"0.default=8":        {"0.default": 8},
		" a=1, video-hd=2 ,": {"a": 1, "video-hd": 2},
	}
	for in, want := range good {
		got, err := parseLimits(in)
		if err != nil || len(got) != len(want) {
			t.Fatalf("parseLimits(%q) = %v %v", in, got, err)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("parseLimits(%q) = %v", in, got)
			}
		}
	}
	for _, in := range []string{"a", "a=0", "a=-1", "a=x", "a=1x", "bad name=1", "=3"} {
		if _, err := parseLimits(in); err == nil {
			t.Fatalf("parseLimits(%q) accepted", in)
		}
	}
}

// TestWorkerCommand: `dorad worker` on a bolt store and a Redis queue runs
// a queued job (a built-in step, no instance needed) and records it.
func TestWorkerCommand(t *testing.T) {
	dir := t.TempDir()
	rs := agenttest.StartRedis(t)
	ctx := context.Background()
	storePath := filepath.Join(dir, "meta.db")
	objDir := filepath.Join(dir, "objects")

	st, err := bolt.Open(storePath)
	if err != nil {
		t.Fatal(err)
	}
	put := func(k string, v any) {
		b, _ := json.Marshal(v)
		if _, err := st.Put(ctx, k, b); err != nil {
			t.Fatal(err)
		}
	}
	put(store.AccountKey("1001"), dora.Account{ID: "1001", AccessKey: "AK", SecretKey: "SK"})
	put(store.BucketKey("photos"), dora.Bucket{Name: "photos", Owner: "1001"})
	id, _ := pfop.NewID("z0")
	if err := (pfop.Jobs{Store: st}).Create(ctx, pfop.Job{ID: id, Code: pfop.CodeWaiting, Bucket: "photos", Key: "in.txt",
		Pipeline: pfop.DefaultPipeline, Owner: "1001", Items: []pfop.Item{{Cmd: "qhash/md5", Code: pfop.CodeWaiting}}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	objs, err := local.New(objDir)
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	if _, err := objs.Put(ctx, "photos", "in.txt", strings.NewReader("hello"), origin.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	q, err := redisq.New(redisq.Config{Server: redisconn.Config{Addr: rs.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.Enqueue(ctx, pfop.DefaultPipeline, id, false); err != nil {
		t.Fatal(err)
	}

	r := startDorad(t, "worker", "--listen", "127.0.0.1:0", "--store", "bolt://"+storePath,
		"--queue", "redis://"+rs.Addr+"/0", "--objects", "file://"+objDir, "--limits", "0.default=2")
	waitOK(t, r.waitURL(t)+"/healthz")
	resultKey := pfop.DefaultResultKey("in.txt", "qhash/md5")
	deadline := time.Now().Add(30 * time.Second)
	var body string
	for {
		rc, _, err := objs.Open(ctx, "photos", resultKey, 0, -1)
		if err == nil {
			b, _ := io.ReadAll(rc)
			rc.Close()
			body = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no result at %s; output:\n%s", resultKey, r.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(body, "5d41402abc4b2a76b9719d911017c592") { // md5("hello")
		t.Fatalf("result %q", body)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("worker stopped with %v", err)
	}
	st, err = bolt.Open(storePath)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	j, _, err := (pfop.Jobs{Store: st}).Get(ctx, id)
	if err != nil || j.Code != pfop.CodeSuccess || j.Items[0].Key != resultKey {
		t.Fatalf("job %+v %v", j, err)
	}
}

func TestWorkerCommandErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--queue", "amqp://127.0.0.1"}, `queue URL "amqp://127.0.0.1": bad backend URL: unknown scheme "amqp" (use bolt:// or redis:// or rediss://)`},
		{[]string{"--queue", "redis://"}, "missing host"},
		{[]string{"--limits", "video=0"}, "--limits"},
	} {
		args := append([]string{"worker", "--listen", "127.0.0.1:0",
			"--store", "bolt://" + filepath.Join(dir, "meta.db"), "--objects", "file://" + filepath.Join(dir, "objects")}, c.args...)
		err := runDorad(t, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("dorad %v = %v, want an error with %q", c.args, err, c.want)
		}
	}
}

// TestWorkerCommandRefusesValuesItWouldIgnore: a zero or negative
// --concurrency, --default-limit, --reclaim-after or --grace, and a zero
// --job-retention, were replaced by the defaults without a word (a
// --grace 0 meant for "hand jobs back at once" waited 30 s); they are
// refused, naming the flag.
func TestWorkerCommandRefusesValuesItWouldIgnore(t *testing.T) {
	dir := t.TempDir()
	for _, c := range [][]string{
		{"--concurrency", "0"},
		{"--concurrency", "-2"},
		{"--default-limit", "0"},
		{"--reclaim-after", "-1s"},
		{"--grace", "0"},
		{"--job-retention", "0"},
	} {
		args := append([]string{"worker", "--listen", "127.0.0.1:0", "--queue", "bolt://" + filepath.Join(dir, "pfop.db"),
			"--store", "bolt://" + filepath.Join(dir, "meta.db"), "--objects", "file://" + filepath.Join(dir, "objects")}, c...)
		if err := runDorad(t, args...); err == nil || !strings.Contains(err.Error(), c[0]) {
			t.Errorf("dorad worker %v = %v, want an error naming %s", c, err, c[0])
		}
	}
}
