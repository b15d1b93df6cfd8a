package router

import (
	"strings"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/pool"
)

// TestURLConventions: Qiniu's URL habits (issue 12): attname, ignored
// parameters, a pipeline percent-encoded whole, and a 400 naming the
// problem when a query could be read two ways.
func TestURLConventions(t *testing.T) {
	e := newEnv(t, nil)
	e.objs.add("photos", "dir/r.txt", "text/plain", []byte("report body"))
	host := "photos.localhost"
	_, md5Body := e.get(host, "/dir/r.txt?qhash/md5")
	_, chain := e.get(host, "/dir/r.txt?qhash/md5|qhash/sha1")
	if !strings.Contains(string(md5Body), `"hash"`) || !strings.Contains(string(chain), `"hash"`) {
		t.Fatalf("qhash bodies %q %q", md5Body, chain)
	}
	for _, c := range []struct {
		name, pq    string
		status      int
		body        string // "" : not checked
		disposition string
		errHas      string
	}{
		{"attname on an object", "/dir/r.txt?attname=report.txt", 200, "report body",
			`attachment; filename="report.txt"; filename*=UTF-8''report.txt`, ""},
		{"attname UTF-8 and spaces", "/dir/r.txt?attname=%E6%8A%A5%E5%91%8A+1.txt", 200, "report body",
			`attachment; filename="__ 1.txt"; filename*=UTF-8''%E6%8A%A5%E5%91%8A%201.txt`, ""},
		{"empty attname names the key", "/dir/r.txt?attname=", 200, "report body",
			`attachment; filename="r.txt"; filename*=UTF-8''r.txt`, ""},
		{"attname on a fop result", "/dir/r.txt?qhash/md5&attname=h.json", 200, string(md5Body),
			`attachment; filename="h.json"; filename*=UTF-8''h.json`, ""},
		{"quote in attname", "/dir/r.txt?attname=a%22b.txt", 200, "report body",
			`attachment; filename="a_b.txt"; filename*=UTF-8''a%22b.txt`, ""},
		{"cache-buster alone", "/dir/r.txt?v=123", 200, "report body", "", ""},
		{"cache-buster after a fop", "/dir/r.txt?qhash/md5&v=2", 200, string(md5Body), "", ""},
		{"several ignored parameters", "/dir/r.txt?qhash/md5&v=2&_=1700000000&utm_source=x", 200, string(md5Body), "", ""},
		{"pipeline fully percent-encoded", "/dir/r.txt?qhash%2Fmd5", 200, string(md5Body), "", ""},
		{"steps joined by %7C", "/dir/r.txt?qhash%2Fmd5%7Cqhash%2Fsha1", 200, string(chain), "", ""},
		{"lower-case escapes", "/dir/r.txt?qhash%2fmd5%7cqhash%2fsha1", 200, string(chain), "", ""},
		{"%7C inside an argument is ambiguous", "/dir/r.txt?qhash/md5%7Cqhash/sha1", 400, "", "",
			"ambiguous fop: %7C at byte 9, in a pipeline whose other separators are raw"},
		{"%2F beside a raw '/' is ambiguous", "/dir/r.txt?grepd/a%2Fb", 400, "", "", "ambiguous fop"},
		{"a stray '%' in an encoded pipeline", "/dir/r.txt?qhash%2Fmd5%", 400, "", "", "'%' not followed by two hex digits"},
		{"%7C left after decoding", "/dir/r.txt?qhash%2Fmd5%257Cqhash", 400, "", "", "ambiguous fop: %7C at byte 9 after decoding"},
		{"steps joined by '&'", "/dir/r.txt?qhash/md5&qhash/sha1", 400, "", "", "joined with '|', not '&'"},
		{"badly named parameter", "/dir/r.txt?qhash/md5&v%3D=1", 400, "", "", `invalid name "v%3D"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.get(host, c.pq)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d want %d (%s)", resp.StatusCode, c.status, body)
			}
			if c.status != 200 {
				if msg := jsonError(t, body); !strings.Contains(msg, c.errHas) {
					t.Fatalf("error %q does not name the problem %q", msg, c.errHas)
				}
				if cd := resp.Header.Get("Content-Disposition"); cd != "" {
					t.Fatalf("error with Content-Disposition %q", cd)
				}
				return
			}
			if c.body != "" && string(body) != c.body {
				t.Fatalf("body %q want %q", body, c.body)
			}
			if cd := resp.Header.Get("Content-Disposition"); cd != c.disposition {
				t.Fatalf("Content-Disposition %q want %q", cd, c.disposition)
			}
		})
	}
}

// TestURLConventionsSigned: on a private bucket the download token covers
// the raw query as sent, parameters and escapes included, and nothing may
// follow it; a saveas sign covers the raw text before /sign/ (escaped
// or not), so each covers exactly what runs.
func TestURLConventionsSigned(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	e := newEnv(t, func(c *Config) { c.Now = func() time.Time { return now } })
	e.objs.add("secret", "a/k.txt", "text/plain", []byte("secret data"))
	e.objs.add("photos", "in.txt", "text/plain", []byte("abc"))
	future := now.Unix() + 3600
	signed := func(pq string) string {
		u := auth.DownloadURL("http://secret.localhost"+pq, alice.AccessKey, alice.SecretKey, future)
		return strings.TrimPrefix(u, "http://secret.localhost")
	}
	_, want := e.get("photos.localhost", "/in.txt?qhash/md5") // not the same object; only for shape
	if !strings.Contains(string(want), "hash") {
		t.Fatalf("qhash %q", want)
	}
	enc := signed("/a/k.txt?qhash%2Fmd5%7Cqhash%2Fsha1&attname=h.json&v=7")
	for _, c := range []struct {
		name, pq    string
		status      int
		disposition string
	}{
		{"fop, attname and cache-buster under the token", signed("/a/k.txt?qhash/md5&attname=h.json&v=7"), 200,
			`attachment; filename="h.json"; filename*=UTF-8''h.json`},
		{"encoded pipeline under the token", enc, 200, `attachment; filename="h.json"; filename*=UTF-8''h.json`},
		{"same pipeline written raw: not what was signed", strings.Replace(enc, "qhash%2Fmd5%7Cqhash%2Fsha1", "qhash/md5|qhash/sha1", 1), 401, ""},
		{"attname changed", strings.Replace(signed("/a/k.txt?attname=a.txt"), "a.txt", "b.txt", 1), 401, ""},
		{"cache-buster added before e", strings.Replace(signed("/a/k.txt?qhash/md5"), "&e=", "&v=1&e=", 1), 401, ""},
		{"parameter after the token", signed("/a/k.txt?qhash/md5") + "&attname=x.txt", 400, ""},
		{"cache-buster after the token", signed("/a/k.txt") + "&v=1", 400, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.get("secret.localhost", c.pq)
			if resp.StatusCode != c.status {
				t.Fatalf("%s: status %d want %d (%s)", c.pq, resp.StatusCode, c.status, body)
			}
			if c.status != 200 {
				jsonError(t, body)
				return
			}
			if !strings.Contains(string(body), `"hash"`) && string(body) != "secret data" {
				t.Fatalf("body %q", body)
			}
			if cd := resp.Header.Get("Content-Disposition"); cd != c.disposition {
				t.Fatalf("Content-Disposition %q want %q", cd, c.disposition)
			}
		})
	}

	// saveas in a fully encoded pipeline: signed over the bytes as sent.
	host := "photos.localhost"
	q := "qhash%2Fmd5%7Csaveas%2F" + auth.EncodedEntryURI("photos", "enc/h.json")
	sign := auth.SaveAsSign(alice.SecretKey, host+"/in.txt?"+q)
	resp, body := e.get(host, "/in.txt?"+q+"%2Fsign%2F"+alice.AccessKey+":"+sign)
	if resp.StatusCode != 200 {
		t.Fatalf("encoded saveas: %d %s", resp.StatusCode, body)
	}
	if got, ok := e.objs.get("photos", "enc/h.json"); !ok || string(got) != string(body) {
		t.Fatalf("encoded saveas saved %q (%v), served %q", got, ok, body)
	}
	// A sign over the decoded text does not open the encoded URL.
	dq := "qhash/md5|saveas/" + auth.EncodedEntryURI("photos", "enc/h2.json")
	dsign := auth.SaveAsSign(alice.SecretKey, host+"/in.txt?"+dq)
	eq := strings.NewReplacer("/", "%2F", "|", "%7C").Replace(dq)
	if resp, body := e.get(host, "/in.txt?"+eq+"%2Fsign%2F"+alice.AccessKey+":"+dsign); resp.StatusCode != 401 {
		t.Fatalf("sign over decoded text accepted: %d %s", resp.StatusCode, body)
	}
	if _, ok := e.objs.get("photos", "enc/h2.json"); ok {
		t.Fatal("saved under a sign that does not cover the bytes sent")
	}
}

// TestUfopNamesOfTheNameRule: every name the platform lets a ufop have
// (dora.ValidateUfopName, 5 to 20 of a-z 0-9 - _, so a
// digit, '-' or '_' may come first) can be called from a processing URL.
func TestUfopNamesOfTheNameRule(t *testing.T) {
	e := newEnv(t, nil)
	addr, _ := countingInstance(t, strings.ToUpper)
	var insts []pool.Instance
	names := []string{"3dview", "_priv-x", "-dash1", "12345"}
	for _, n := range names {
		if err := dora.ValidateUfopName(n); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		e.ufop(dora.Ufop{Name: n, Owner: alice.ID}, dora.ProtocolDora)
		insts = append(insts, poolInst(n+"-0", n, "v1", addr))
	}
	e.pool.Update(insts)
	e.objs.add("photos", "k", "text/plain", []byte("abc"))
	for _, pq := range []string{"/k?3dview/x", "/k?_priv-x", "/k?-dash1/a|12345/b", "/k?3dview%2Fx%7C12345"} {
		if resp, body := e.get("photos.localhost", pq); resp.StatusCode != 200 || string(body) != "ABC" {
			t.Fatalf("%s: %d %q", pq, resp.StatusCode, body)
		}
	}
}
