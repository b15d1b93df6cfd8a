package pfop_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/internal/accountstest"
)

// TestPfopEndToEnd: both signature forms and both paths; prefop goes from
// waiting/processing to 0; results are readable directly and via ?p/1/.
func TestPfopEndToEnd(t *testing.T) {
	e := newEnv(t)
	e.startWorker(e.q, nil)
	e.object("photos", "doc.txt", "hello pfop")
	for _, c := range []struct{ path, signer string }{{"/pfop", "qiniu"}, {"/pfop/", "qbox"}, {"/pfop/", "qiniu"}, {"/pfop", "qbox"}} {
		t.Run(c.signer+c.path, func(t *testing.T) {
			out := "out/" + c.signer + strings.ReplaceAll(c.path, "/", "_") + ".txt"
			fops := "upper/x;upper/y|saveas/" + entry("results", out)
			status, v, _ := e.pfopCall(c.path, alice, signers[c.signer], url.Values{
				"bucket": {"photos"}, "key": {"doc.txt"}, "fops": {fops}, "force": {"1"},
			})
			id, _ := v["persistentId"].(string)
			if status != 200 || id == "" {
				t.Fatalf("pfop: %d %v", status, v)
			}
			s, seen := e.waitFinal(id)
			if seen[0] != pfop.CodeWaiting && seen[0] != pfop.CodeProcessing && seen[0] != pfop.CodeSuccess {
				t.Fatalf("first code %d", seen[0])
			}
			if s.Code != 0 || s.Desc == "" || s.ID != id || s.InputBucket != "photos" || s.InputKey != "doc.txt" ||
				s.Pipeline != pfop.DefaultPipeline || s.Reqid == "" || len(s.Items) != 2 {
				t.Fatalf("status %+v (codes %v)", s, seen)
			}
			if _, err := time.Parse(time.RFC3339, s.CreationDate); err != nil {
				t.Fatalf("creationDate %q: %v", s.CreationDate, err)
			}
			want := "HELLO PFOP"
			it0, it1 := s.Items[0], s.Items[1]
			if it0.Code != 0 || it0.Cmd != "upper/x" || it0.Key != pfop.DefaultResultKey("doc.txt", "upper/x") || it0.Hash != etagOf(t, want) || it0.ErrorIndex != nil {
				t.Fatalf("item 0 %+v", it0)
			}
			if it1.Code != 0 || it1.Key != out || it1.Hash != etagOf(t, want) {
				t.Fatalf("item 1 %+v", it1)
			}
			if got, ok := e.read("photos", it0.Key); !ok || got != want {
				t.Fatalf("default result %q %v", got, ok)
			}
			if got, ok := e.read("results", out); !ok || got != want {
				t.Fatalf("saveas result %q %v", got, ok)
			}
			for _, q := range []string{"p/1/upper/x", "p/1/upper/y"} {
				if st, body := e.get("photos.localhost", "/doc.txt?"+q); st != 200 || body != want {
					t.Fatalf("?%s: %d %q", q, st, body)
				}
			}
			if st, _ := e.get("photos.localhost", "/doc.txt?p/1/upper/never"); st != 404 {
				t.Fatalf("?p/1/ of a fop never run: %d", st)
			}
		})
	}
}

// TestReturnOldAndForce: an existing result is returned (returnOld 1)
// without running the pipeline again, unless force=1.
func TestReturnOldAndForce(t *testing.T) {
	e := newEnv(t)
	e.startWorker(e.q, nil)
	e.object("photos", "a.txt", "abc")
	form := url.Values{"bucket": {"photos"}, "key": {"a.txt"}, "fops": {"upper/1"}}
	key := pfop.DefaultResultKey("a.txt", "upper/1")
	s, _ := e.waitFinal(e.submit(form))
	if s.Code != 0 || s.Items[0].ReturnOld != 0 || e.objs.putCount("photos", key) != 1 {
		t.Fatalf("first run %+v, %d puts", s, e.objs.putCount("photos", key))
	}
	s, _ = e.waitFinal(e.submit(form))
	if s.Code != 0 || s.Items[0].ReturnOld != 1 || s.Items[0].Hash != etagOf(t, "ABC") || e.objs.putCount("photos", key) != 1 {
		t.Fatalf("second run %+v, %d puts", s, e.objs.putCount("photos", key))
	}
	form.Set("force", "1")
	s, _ = e.waitFinal(e.submit(form))
	if s.Code != 0 || s.Items[0].ReturnOld != 0 || e.objs.putCount("photos", key) != 2 {
		t.Fatalf("forced run %+v, %d puts", s, e.objs.putCount("photos", key))
	}
}

// TestFailingStep: a pipeline failing at its second step → code 3,
// errorIndex 1, the instance's message; the other item still runs.
func TestFailingStep(t *testing.T) {
	e := newEnv(t)
	e.startWorker(e.q, nil)
	e.object("photos", "a.txt", "abc")
	s, _ := e.waitFinal(e.submit(url.Values{"bucket": {"photos"}, "key": {"a.txt"}, "fops": {"upper/a|failer/b;upper/c"}}))
	if s.Code != pfop.CodeFailed || len(s.Items) != 2 {
		t.Fatalf("status %+v", s)
	}
	bad, good := s.Items[0], s.Items[1]
	if bad.Code != pfop.CodeFailed || bad.ErrorIndex == nil || *bad.ErrorIndex != 1 || !strings.Contains(bad.Error, "cannot frobnicate failer/b") {
		t.Fatalf("failed item %+v", bad)
	}
	if good.Code != 0 || good.ErrorIndex != nil {
		t.Fatalf("good item %+v", good)
	}
	// The raw JSON carries errorIndex only on the failed item.
	resp, err := http.Get(e.api.URL + "/status/get/prefop?id=" + s.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Count(string(b), `"errorIndex":1`) != 1 || strings.Count(string(b), "errorIndex") != 1 {
		t.Fatalf("prefop JSON %s", b)
	}
}

// receiver records notifications.
type receiver struct {
	mu     sync.Mutex
	bodies []pfop.Status
	types  []string
	status int
	got    chan struct{}
}

func newReceiver(t *testing.T, status int) (*receiver, string) {
	r := &receiver{status: status, got: make(chan struct{}, 100)}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var st pfop.Status
		b, _ := io.ReadAll(req.Body)
		json.Unmarshal(b, &st)
		r.mu.Lock()
		r.bodies = append(r.bodies, st)
		r.types = append(r.types, req.Header.Get("Content-Type"))
		r.mu.Unlock()
		w.WriteHeader(r.status)
		r.got <- struct{}{}
	}))
	t.Cleanup(s.Close)
	return r, s.URL + "/notify"
}

func TestNotify(t *testing.T) {
	e := newEnv(t)
	e.startWorker(e.q, nil) // 3 attempts
	e.object("photos", "a.txt", "abc")

	ok, okURL := newReceiver(t, 200)
	s, _ := e.waitFinal(e.submit(url.Values{"bucket": {"photos"}, "key": {"a.txt"}, "fops": {"upper/n"}, "notifyURL": {okURL}}))
	if s.Code != 0 {
		t.Fatalf("status %+v", s)
	}
	ok.mu.Lock()
	if len(ok.bodies) != 1 || ok.bodies[0].ID != s.ID || ok.bodies[0].Code != 0 || len(ok.bodies[0].Items) != 1 || ok.types[0] != "application/json" {
		t.Fatalf("notifications %+v %v", ok.bodies, ok.types)
	}
	ok.mu.Unlock()

	bad, badURL := newReceiver(t, 500)
	s, _ = e.waitFinal(e.submit(url.Values{"bucket": {"photos"}, "key": {"a.txt"}, "fops": {"upper/m"}, "notifyURL": {badURL}}))
	if s.Code != pfop.CodeNotifyFailed || s.Items[0].Code != 0 {
		t.Fatalf("status after a failing receiver %+v", s)
	}
	bad.mu.Lock()
	if len(bad.bodies) != 3 {
		t.Fatalf("%d attempts, want 3", len(bad.bodies))
	}
	bad.mu.Unlock()
}

// TestPfopErrors: what the API refuses.
func TestPfopErrors(t *testing.T) {
	e := newEnv(t)
	e.object("photos", "a.txt", "abc")
	e.object("bobs", "b.txt", "abc")
	good := url.Values{"bucket": {"photos"}, "key": {"a.txt"}, "fops": {"upper/x"}}
	with := func(k, v string) url.Values {
		f := url.Values{}
		for kk, vv := range good {
			f[kk] = vv
		}
		if v == "" {
			f.Del(k)
		} else {
			f.Set(k, v)
		}
		return f
	}
	cases := []struct {
		name   string
		form   url.Values
		sign   signer
		status int
	}{
		{"no fops", with("fops", ""), signers["qiniu"], 400},
		{"bad fop", with("fops", "upper/x||y"), signers["qiniu"], 400},
		{"token in fop", with("fops", "upper/x&e=1&token=a:b"), signers["qiniu"], 400},
		{"bad pipeline", with("pipeline", "a b"), signers["qiniu"], 400},
		{"bad type", with("type", "7"), signers["qiniu"], 400},
		{"ftp notify", with("notifyURL", "ftp://example.com/x"), signers["qiniu"], 400},
		{"no key", with("key", ""), signers["qiniu"], 400},
		{"no object", with("key", "missing.txt"), signers["qiniu"], 612},
		{"no bucket", with("bucket", "nobucket"), signers["qiniu"], 631},
		{"someone else's bucket", with("bucket", "bobs"), signers["qiniu"], 403},
		{"unsigned", good, func(*http.Request, dora.Account, string) {}, 401},
		{"wrong key", good, func(r *http.Request, _ dora.Account, body string) { accountstest.SignQBox(r, bob, body+"x") }, 401},
		{"stale date", good, func(r *http.Request, a dora.Account, body string) {
			accountstest.SignQiniu(r, a, body, time.Now().Add(-time.Hour))
		}, 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, v, _ := e.pfopCall("/pfop", alice, c.sign, c.form)
			if status != c.status || v["error"] == nil {
				t.Fatalf("got %d %v, want %d", status, v, c.status)
			}
		})
	}
	// GET /pfop, prefop of unknown ids.
	resp, err := http.Get(e.api.URL + "/pfop")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("X-Reqid") == "" {
		t.Fatalf("GET /pfop: %d", resp.StatusCode)
	}
	for _, id := range []string{"", "z0.000000000000000000000000", "../../etc", "z0.0123"} {
		if st, _ := e.prefop(id); st != pfop.CodeUnknownID {
			t.Fatalf("prefop %q: %d", id, st)
		}
	}
}

// The form must be covered by the signature: QBox only signs a form body,
// and the handler parses the body only when it is a form.
func TestPfopBodyMustBeASignedForm(t *testing.T) {
	e := newEnv(t)
	e.object("photos", "a.txt", "abc")
	form := url.Values{"bucket": {"photos"}, "key": {"a.txt"}, "fops": {"upper/x"}}.Encode()
	cases := []struct {
		name, ctype string
		sign        signer
		status      int
	}{
		{"qiniu form", "application/x-www-form-urlencoded", signers["qiniu"], 200},
		{"qbox form", "application/x-www-form-urlencoded", signers["qbox"], 200},
		{"qbox form with charset", "application/x-www-form-urlencoded; charset=utf-8", signers["qbox"], 200},
		// QBox does not sign a JSON or text body.
		{"qbox json", "application/json", func(r *http.Request, a dora.Account, _ string) { accountstest.SignQBox(r, a, "") }, 401},
		{"qbox text", "text/plain", func(r *http.Request, a dora.Account, _ string) { accountstest.SignQBox(r, a, "") }, 401},
		// Qiniu does not sign a text body; a JSON body is signed but is no form.
		{"qiniu text", "text/plain", func(r *http.Request, a dora.Account, _ string) { accountstest.SignQiniu(r, a, "", time.Now()) }, 400},
		{"qiniu json", "application/json", signers["qiniu"], 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, e.api.URL+"/pfop", strings.NewReader(form))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", c.ctype)
			c.sign(req, alice, form)
			status, v, _ := e.do(req)
			if status != c.status {
				t.Fatalf("got %d %v, want %d", status, v, c.status)
			}
		})
	}
}
