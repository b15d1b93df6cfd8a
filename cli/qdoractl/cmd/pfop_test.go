package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/admin/pfop/boltq"
	"github.com/doraproject/dora/internal/api"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/bolt"
	"github.com/doraproject/dora/router"
	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/origin/local"
)

// okProc pretends every pipeline succeeded.
type okProc struct{}

func (okProc) Process(context.Context, string, string, string, io.Writer) (router.Result, error) {
	return router.Result{Saved: &api.Object{ETag: "Fetag"}}, nil
}

func TestPfopCommands(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	put := func(k string, v any) {
		b, _ := json.Marshal(v)
		if _, err := st.Put(ctx, k, b); err != nil {
			t.Fatal(err)
		}
	}
	put(store.AccountKey("1001"), dora.Account{ID: "1001", AccessKey: "AK", SecretKey: "SK"})
	st.Put(ctx, store.AccessKeyKey("AK"), []byte("1001"))
	put(store.BucketKey("photos"), dora.Bucket{Name: "photos", Owner: "1001"})
	objs, err := local.New(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	objs.Put(ctx, "photos", "doc.txt", strings.NewReader("hi"), origin.PutOptions{})
	q, err := boltq.Open(filepath.Join(dir, "q.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	h, err := pfop.NewHandler(pfop.HandlerConfig{Store: st, Queue: q, Objects: objs})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	var out bytes.Buffer
	a := &app{v: viper.New(), stdout: &out, stderr: &out, newClient: client.New, pollInterval: time.Millisecond}
	a.v.Set(keyEndpoint, srv.URL)
	a.v.Set(keyAK, "AK")
	a.v.Set(keySK, "SK")
	run := func(c interface {
		SetArgs([]string)
		ExecuteContext(context.Context) error
	}, args ...string) error {
		out.Reset()
		c.SetArgs(args)
		return c.ExecuteContext(ctx)
	}

	// Submitted, not yet run: prefop shows it waiting.
	if err := run(a.pfopCmd(), "photos", "doc.txt", "qhash/md5;qhash/sha1"); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(out.String())
	if !pfop.ValidID(id) {
		t.Fatalf("pfop printed %q", id)
	}
	if err := run(a.prefopCmd(), id); err != nil || !strings.Contains(out.String(), "code 1") || !strings.Contains(out.String(), "qhash/sha1") {
		t.Fatalf("prefop: %v\n%s", err, out.String())
	}

	w, err := pfop.NewWorker(pfop.WorkerConfig{Store: st, Queue: q, Processor: okProc{}, Objects: objs, PollInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { w.Run(wctx); close(done) }()
	defer func() { cancel(); <-done }()

	a.jsonOut = true
	if err := run(a.pfopCmd(), "photos", "doc.txt", "qhash/md5", "--wait", "--force", "--pipeline", "cli"); err != nil {
		t.Fatalf("pfop --wait: %v\n%s", err, out.String())
	}
	var s api.PfopStatus
	if err := json.Unmarshal(out.Bytes(), &s); err != nil || s.Code != 0 || s.Pipeline != "cli" || s.Items[0].Hash != "Fetag" {
		t.Fatalf("pfop --wait --json: %v %+v", err, s)
	}
	if err := run(a.prefopCmd(), "z0.000000000000000000000000"); err == nil || !strings.Contains(err.Error(), "612") {
		t.Fatalf("prefop of an unknown id: %v", err)
	}
	if err := run(a.pfopCmd(), "photos", "missing.txt", "qhash/md5"); err == nil || !strings.Contains(err.Error(), "612") {
		t.Fatalf("pfop of a missing object: %v", err)
	}
	a.v.Set(keySK, "wrong")
	if err := run(a.pfopCmd(), "photos", "doc.txt", "qhash/md5"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("pfop with a wrong key: %v", err)
	}
}

// TestPfopLikeTheOtherCommands: pfop and prefop take the endpoint as
// every other command does (a host:port without scheme means http) and
// report an API error as every other command does: its message, status
// and request id (in --json's error object too).
func TestPfopLikeTheOtherCommands(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"POST /pfop/":            reply(200, map[string]string{"persistentId": "z0.0123456789abcdef01234567"}),
		"GET /status/get/prefop": reply(612, map[string]string{"error": "no such job"}),
	})
	hostPort := strings.TrimPrefix(f.srv.URL, "http://")
	r := mustOK(t, runCLI(t, f, "", "--api", hostPort, "pfop", "photos", "doc.txt", "qhash/md5"))
	if strings.TrimSpace(r.stdout) != "z0.0123456789abcdef01234567" {
		t.Fatalf("pfop printed %q", r.stdout)
	}
	if c := f.last(t, "POST /pfop/"); string(c.Body) != "bucket=photos&fops=qhash%2Fmd5&key=doc.txt" {
		t.Fatalf("pfop sent %q", c.Body)
	}
	r = runCLI(t, f, "", "--api", hostPort, "--json", "prefop", "z0.nosuch")
	var je JSONError
	if r.code != ExitError || json.Unmarshal([]byte(r.stderr), &je) != nil {
		t.Fatalf("prefop of an unknown job: %v", r)
	}
	if je.Error != "no such job" || je.Status != 612 || je.Reqid != "reqid-42" {
		t.Fatalf("prefop error %+v, want the API's message, status and reqid", je)
	}
}

// TestPfopProxyErrorPage: a proxy's HTML error page in front of the API
// is reported by its title, as for every other command.
func TestPfopProxyErrorPage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body><h1>502 Bad Gateway</h1></body>\r\n</html>\r\n")
	}))
	defer srv.Close()
	t.Setenv("HOME", t.TempDir())
	t.Setenv("QDORACTL_CONFIG", "")
	t.Setenv("DORA_AK", testAK)
	t.Setenv("DORA_SK", testSK)
	t.Setenv("DORA_API", srv.URL)
	r := runRaw(t, "", "prefop", "z0.x")
	if r.code != ExitError || strings.Contains(r.stderr, "<") || !strings.Contains(r.stderr, "502 Bad Gateway (status 502") {
		t.Fatalf("prefop through a failing proxy: %v", r)
	}
}
