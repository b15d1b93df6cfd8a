package admin

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/doraproject/dora"
)

func TestNormalizeDomain(t *testing.T) {
	const suffix = "dora.example.net"
	for _, c := range []struct {
		in, want string // want "" = refused
		msg      string // part of the refusal
	}{
		{"img.example.com", "img.example.com", ""},
		{" IMG.Example.COM. ", "img.example.com", ""},
		{"dora.example.net.evil.com", "dora.example.net.evil.com", ""},
		{"", "", "1 to 253 characters"},
		{strings.Repeat("a.", 127) + "com", "", "1 to 253 characters"},
		{"10.1.2.3", "", "IP addresses"},
		{"[::1]", "", "IP addresses"},
		{"127.1", "", "IP addresses"},
		{"a..b", "", "bad label"},
		{"-a.com", "", "bad label"},
		{"a_b.com", "", "only a-z 0-9"},
		{"intranet", "", "fully qualified"},
		{"victim.localhost", "", "localhost names"},
		{"localhost", "", "fully qualified"},
		{"dora.example.net", "", "the platform's own"},
		{"x.Dora.Example.Net.", "", "the platform's own"},
	} {
		got, err := normalizeDomain(c.in, suffix)
		if got != c.want || (c.want == "") != (err != nil) || (err != nil && !strings.Contains(err.Error(), c.msg)) {
			t.Errorf("normalizeDomain(%q) = %q, %v; want %q, %q", c.in, got, err, c.want, c.msg)
		}
	}
	// With no suffix, names under any suffix are the user's.
	if got, err := normalizeDomain("x.dora.example.net", ""); err != nil || got != "x.dora.example.net" {
		t.Errorf("no suffix: %q, %v", got, err)
	}
}

func TestValidateMirror(t *testing.T) {
	for _, c := range []struct {
		m            string
		allowPrivate bool
		msg          string // part of the refusal; "" = accepted
	}{
		{"", false, ""},
		{"https://origin.example.com/", false, ""},
		{"http://93.184.216.34/files/", false, ""},
		{"ftp://origin.example.com/", false, "http(s) URL prefix"},
		{"http://user:pw@origin.example.com/", false, "http(s) URL prefix"},
		{"http:///path", false, "http(s) URL prefix"},
		{"http://" + strings.Repeat("a", 1024), false, "at most 1024 bytes"},
		{"http://127.0.0.1:9000/", false, "loopback, private"},
		{"http://127.0.0.1:9000/", true, ""},
		{"http://localhost/", false, "localhost"},
		{"http://localhost/", true, ""},
		{"http://2130706433/", false, "write an address in full"},
		{"http://0x7f.0x1/", false, "write an address in full"},
		{"http://169.254.169.254/", false, "metadata"},
		{"http://169.254.169.254/", true, "metadata"},
	} {
		err := validateMirror(c.m, c.allowPrivate)
		if (c.msg == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.msg)) {
			t.Errorf("validateMirror(%q, %v) = %v, want %q", truncateName(c.m), c.allowPrivate, err, c.msg)
		}
	}
}

func TestPlanBucket(t *testing.T) {
	many := make([]string, MaxDomainsPerBucket+1)
	for i := range many {
		many[i] = fmt.Sprintf("d%d.example.com", i)
	}
	for _, c := range []struct {
		name string
		req  bucketRequest
		priv bool   // allowPrivateMirror
		msg  string // part of the refusal; "" = accepted
	}{
		{"plain", bucketRequest{Name: "photos"}, false, ""},
		{"bad name", bucketRequest{Name: "A B"}, false, "name: "},
		{"system bucket", bucketRequest{Name: dora.SystemBucket}, false, "reserved for the platform"},
		{"too many domains", bucketRequest{Name: "photos", Domains: many}, false, "domains: at most"},
		{"bad domain", bucketRequest{Name: "photos", Domains: []string{"ok.example.com", "127.0.0.1"}}, false, "IP addresses"},
		{"private mirror", bucketRequest{Name: "photos", Mirror: "http://10.0.0.5/"}, false, "mirror"},
		{"private mirror allowed", bucketRequest{Name: "photos", Mirror: "http://10.0.0.5/"}, true, ""},
	} {
		b, err := planBucket(c.req, "alice", "dora.example.net", c.priv, ruleNow)
		if c.msg == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			} else if b.Name != c.req.Name || b.Owner != "alice" || b.Mirror != c.req.Mirror || !b.Created.Equal(ruleNow) {
				t.Errorf("%s: bucket %+v", c.name, b)
			}
			continue
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err = %v, want ErrInvalid with %q", c.name, err, c.msg)
		}
	}
	b, err := planBucket(bucketRequest{Name: "pics", Private: true,
		Domains: []string{"B.example.com", "a.example.com", "b.example.com."}}, "bob", "", false, ruleNow)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Private || !slices.Equal(b.Domains, []string{"b.example.com", "a.example.com"}) {
		t.Errorf("private %v domains %q, want private and each domain once, normalized, in the order given", b.Private, b.Domains)
	}
}

func TestBindDomain(t *testing.T) {
	b := dora.Bucket{Name: "pics", Domains: []string{"b.example.com", "d.example.com"}}
	got, added, err := bindDomain(b, "c.example.com")
	if err != nil || !added || !slices.Equal(got.Domains, []string{"b.example.com", "c.example.com", "d.example.com"}) {
		t.Errorf("bind c: %q %v %v", got.Domains, added, err)
	}
	if len(b.Domains) != 2 {
		t.Errorf("the bucket given changed: %q", b.Domains)
	}
	if got, added, err := bindDomain(b, "d.example.com"); err != nil || added || len(got.Domains) != 2 {
		t.Errorf("bind d again: %q %v %v, want unchanged", got.Domains, added, err)
	}
	full := dora.Bucket{Name: "pics"}
	for i := range MaxDomainsPerBucket {
		full.Domains = append(full.Domains, fmt.Sprintf("d%02d.example.com", i))
	}
	if _, added, err := bindDomain(full, "new.example.com"); added || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "per bucket") {
		t.Errorf("bind on a full bucket: %v %v, want ErrInvalid", added, err)
	}
	if _, added, err := bindDomain(full, "d03.example.com"); added || err != nil {
		t.Errorf("bind a domain a full bucket has: %v %v, want no change and no error", added, err)
	}
}
