package router

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/pool"
)

func TestPrivateBucketToken(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	e := newEnv(t, func(c *Config) { c.Now = func() time.Time { return now } })
	e.objs.add("secret", "a/k.txt", "text/plain", []byte("secret data"))
	future, past := now.Unix()+3600, now.Unix()-1
	signed := func(base, ak, sk string, deadline int64) string {
		u := auth.DownloadURL("http://secret.localhost"+base, ak, sk, deadline)
		return strings.TrimPrefix(u, "http://secret.localhost")
	}
	good := signed("/a/k.txt", alice.AccessKey, alice.SecretKey, future)
	tampered := strings.Replace(good, "e=", "e=1", 1)
	for _, c := range []struct {
		name, pathQuery string
		status          int
	}{
		{"valid", good, 200},
		{"no token", "/a/k.txt", 401},
		{"expired", signed("/a/k.txt", alice.AccessKey, alice.SecretKey, past), 401},
		{"tampered deadline", tampered, 401},
		{"signed for another key", strings.Replace(signed("/a/other", alice.AccessKey, alice.SecretKey, future), "/a/other", "/a/k.txt", 1), 401},
		{"wrong secret", signed("/a/k.txt", alice.AccessKey, "not-the-sk", future), 401},
		{"unknown AK", signed("/a/k.txt", "AK-nobody", "whatever", future), 401},
		{"another account's valid key", signed("/a/k.txt", bob.AccessKey, bob.SecretKey, future), 401},
		{"malformed token", "/a/k.txt?e=123&token=nocolon", 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.get("secret.localhost", c.pathQuery)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d want %d (%s)", resp.StatusCode, c.status, body)
			}
			if c.status == 200 {
				if string(body) != "secret data" {
					t.Fatalf("body %q", body)
				}
				return
			}
			jsonError(t, body)
		})
	}
	// The scheme is signed: a token made for https does not open http.
	u := auth.DownloadURL("https://secret.localhost/a/k.txt", alice.AccessKey, alice.SecretKey, future)
	if resp, _ := e.get("secret.localhost", strings.TrimPrefix(u, "https://secret.localhost")); resp.StatusCode != 401 {
		t.Fatalf("https token over http: %d", resp.StatusCode)
	}
}

// TestModeMatrix checks public/protected/private ufops against buckets of
// the owner, of an account that applied, and of another account.
func TestModeMatrix(t *testing.T) {
	e := newEnv(t, nil)
	g := startExample(t, "grepd")
	var insts []pool.Instance
	for _, u := range []dora.Ufop{
		{Name: "pubufop", Owner: carol.ID, Mode: dora.ModePublic},
		{Name: "protufop", Owner: carol.ID, Mode: dora.ModeProtected},
		{Name: "privufop", Owner: carol.ID, Mode: dora.ModePrivate},
	} {
		e.ufop(u, dora.ProtocolDora)
		insts = append(insts, poolInst(u.Name+"-0", u.Name, "v1", g.addr))
	}
	e.pool.Update(insts)
	for _, b := range []string{"carols", "bobs", "photos"} {
		e.objs.add(b, "f.txt", "text/plain", []byte("keep x\ndrop\n"))
	}
	want := map[string]map[string]int{ // ufop → bucket (owner, applied, other) → status
		"pubufop":  {"carols": 200, "bobs": 200, "photos": 200},
		"protufop": {"carols": 200, "bobs": 200, "photos": 403},
		"privufop": {"carols": 200, "bobs": 403, "photos": 403},
	}
	for u, row := range want {
		for b, status := range row {
			t.Run(u+"/"+b, func(t *testing.T) {
				resp, body := e.get(b+".localhost", "/f.txt?"+u+"/x")
				if resp.StatusCode != status {
					t.Fatalf("status %d want %d (%s)", resp.StatusCode, status, body)
				}
				if status == 200 && string(body) != "keep x\n" {
					t.Fatalf("body %q", body)
				}
				if status == 403 {
					msg := jsonError(t, body)
					if resp.Header.Get("X-Dora-Step") != "0" {
						t.Errorf("X-Dora-Step = %q", resp.Header.Get("X-Dora-Step"))
					}
					// A protected ufop says how to get access.
					if hint := "qdoractl apply " + u; (u == "protufop") != strings.Contains(msg, hint) {
						t.Errorf("error %q: hint %q only for a protected ufop", msg, hint)
					}
				}
			})
		}
	}
}

func TestSaveAs(t *testing.T) {
	e := newEnv(t, nil)
	e.objs.add("photos", "in.txt", "text/plain", []byte("abc"))
	host := "photos.localhost"
	saveURL := func(fops, bucket, key, ak, sk string) string {
		q := fops + "saveas/" + auth.EncodedEntryURI(bucket, key)
		sign := auth.SaveAsSign(sk, host+"/in.txt?"+q)
		return "/in.txt?" + q + "/sign/" + ak + ":" + sign
	}
	for _, c := range []struct {
		name, pathQuery string
		status          int
		saved           string // bucket/key expected to exist afterwards
	}{
		{"qhash saved", saveURL("qhash/md5|", "photos", "out/hash.json", alice.AccessKey, alice.SecretKey), 200, "photos/out/hash.json"},
		{"copy saved", saveURL("", "photos", "copy.txt", alice.AccessKey, alice.SecretKey), 200, "photos/copy.txt"},
		{"bad sign", strings.Replace(saveURL("", "photos", "bad.txt", alice.AccessKey, alice.SecretKey), "/sign/AK-alice:", "/sign/AK-alice:AAAA", 1), 401, ""},
		{"unknown AK", saveURL("", "photos", "u.txt", "AK-nobody", "x"), 401, ""},
		{"no sign", "/in.txt?saveas/" + auth.EncodedEntryURI("photos", "n.txt"), 401, ""},
		{"not the signer's bucket", saveURL("", "bobs", "x.txt", alice.AccessKey, alice.SecretKey), 403, ""},
		{"no such bucket", saveURL("", "nobucket", "x.txt", alice.AccessKey, alice.SecretKey), 404, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.get(host, c.pathQuery)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d want %d (%s)", resp.StatusCode, c.status, body)
			}
			if c.status != 200 {
				jsonError(t, body)
				return
			}
			b, k, _ := strings.Cut(c.saved, "/")
			got, ok := e.objs.get(b, k)
			if !ok {
				t.Fatalf("%s not saved", c.saved)
			}
			if string(got) != string(body) {
				t.Fatalf("saved %q, served %q", got, body)
			}
		})
	}
	_, hash := e.get(host, "/in.txt?qhash/md5")
	if want := fmt.Sprintf(`"hash":"%s"`, "900150983cd24fb0d6963f7d28e17f72"); !strings.Contains(string(hash), want) {
		t.Fatalf("qhash body %s", hash)
	}
}

// TestTrustedProxyScheme: behind a TLS-terminating proxy the router sees
// plain HTTP; X-Forwarded-Proto: https makes a token signed for https
// valid only when the connection comes from a trusted proxy, so that a
// client cannot pick the scheme its token is checked against.
func TestTrustedProxyScheme(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	future := now.Unix() + 3600
	signed := func(scheme string) string {
		u := auth.DownloadURL(scheme+"://secret.localhost/a/k.txt", alice.AccessKey, alice.SecretKey, future)
		return strings.TrimPrefix(u, scheme+"://secret.localhost")
	}
	for _, c := range []struct {
		name    string
		trusted []netip.Prefix
		proto   string // X-Forwarded-Proto; "" sends none
		scheme  string // the token's
		status  int
	}{
		{"untrusted peer, https token", nil, "https", "https", 401},
		{"untrusted peer, http token", nil, "https", "http", 200},
		{"another network trusted", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "https", "https", 401},
		{"trusted proxy, https token", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "https", "https", 200},
		{"trusted proxy, client-facing element first", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, "HTTPS, http", "https", 200},
		{"trusted proxy says https, http token", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, "https", "http", 401},
		{"trusted proxy says http", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, "http", "https", 401},
		{"trusted proxy, no header", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, "", "http", 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, func(cfg *Config) {
				cfg.Now = func() time.Time { return now }
				cfg.TrustedProxies = c.trusted
			})
			e.objs.add("secret", "a/k.txt", "text/plain", []byte("secret data"))
			var hdr map[string]string
			if c.proto != "" {
				hdr = map[string]string{"X-Forwarded-Proto": c.proto}
			}
			resp, body := e.do(http.MethodGet, "secret.localhost", signed(c.scheme), hdr)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d want %d (%s)", resp.StatusCode, c.status, body)
			}
		})
	}
}

// TestPrivateBucketNotForSharedCaches: what a private bucket's token
// opens says Cache-Control: private, so that no CDN or proxy keeps it past
// the token's deadline for whoever asks the same URL; a cached result keeps
// its "private, max-age"; a public bucket's object carries no such word.
func TestPrivateBucketNotForSharedCaches(t *testing.T) {
	e := newEnv(t, nil)
	e.objs.add("secret", "k.txt", "text/plain", []byte("secret data"))
	e.objs.add("photos", "k.txt", "text/plain", []byte("public data"))
	deadline := time.Now().Unix() + 3600
	signed := func(pathQuery string) string {
		return strings.TrimPrefix(auth.DownloadURL("http://secret.localhost"+pathQuery, alice.AccessKey, alice.SecretKey, deadline), "http://secret.localhost")
	}
	for _, c := range []struct {
		name, method, host, pathQuery string
		hdr                           map[string]string
		status                        int
		cc                            string
	}{
		{"object", http.MethodGet, "secret.localhost", signed("/k.txt"), nil, 200, "private"},
		{"object, HEAD", http.MethodHead, "secret.localhost", signed("/k.txt"), nil, 200, "private"},
		{"object, range", http.MethodGet, "secret.localhost", signed("/k.txt"), map[string]string{"Range": "bytes=0-3"}, 206, "private"},
		{"cached result", http.MethodGet, "secret.localhost", signed("/k.txt?qhash/md5"), nil, 200, "private, max-age="},
		{"no token", http.MethodGet, "secret.localhost", "/k.txt", nil, 401, ""},
		{"public bucket", http.MethodGet, "photos.localhost", "/k.txt", nil, 200, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.do(c.method, c.host, c.pathQuery, c.hdr)
			cc := resp.Header.Get("Cache-Control")
			if resp.StatusCode != c.status || (c.cc == "" && cc != "") || !strings.HasPrefix(cc, c.cc) ||
				(c.cc == "private" && cc != "private") {
				t.Fatalf("%d, Cache-Control %q; want %d and %q (%s)", resp.StatusCode, cc, c.status, c.cc, body)
			}
		})
	}
}
