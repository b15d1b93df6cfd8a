package pfop

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheckURL(t *testing.T) {
	strict := NewNotifier(NotifyConfig{})
	dev := NewNotifier(NotifyConfig{AllowPrivate: true})
	cases := []struct {
		url             string
		strictOK, devOK bool
	}{
		{"https://hooks.example.com/pfop", true, true},
		{"http://203.0.113.7:8080/x", true, true},
		{"ftp://example.com/x", false, false},
		{"javascript:alert(1)", false, false},
		{"http:///nohost", false, false},
		{"http://user:pw@example.com/", false, false},
		{"http://127.0.0.1:9/x", false, true},
		{"http://localhost/x", false, true},
		{"http://api.localhost/x", false, true},
		{"http://10.1.2.3/x", false, true},
		{"http://192.168.0.1/x", false, true},
		{"http://169.254.169.254/latest/meta-data", false, true},
		{"http://[::1]/x", false, true},
		{"http://[::ffff:127.0.0.1]/x", false, true},
		{"http://0.0.0.0/x", false, true},
		{"http://100.64.0.1/x", false, true},
		{"http://example.com/" + strings.Repeat("a", MaxNotifyURL), false, false},
	}
	for _, c := range cases {
		if err := strict.CheckURL(c.url); (err == nil) != c.strictOK {
			t.Errorf("strict CheckURL(%q) = %v", c.url, err)
		} else if err != nil && !errors.Is(err, ErrNotifyURL) {
			t.Errorf("strict CheckURL(%q) = %v, not ErrNotifyURL", c.url, err)
		}
		if err := dev.CheckURL(c.url); (err == nil) != c.devOK {
			t.Errorf("dev CheckURL(%q) = %v", c.url, err)
		}
	}
}

// TestNotifyRefusesPrivateAtDial: a notification that reaches a private
// address by any route (here a loopback server) is refused when
// connecting, the receiver never sees it, and it is not retried.
func TestNotifyRefusesPrivateAtDial(t *testing.T) {
	var hits atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer s.Close()
	n := NewNotifier(NotifyConfig{Attempts: 3, BaseDelay: time.Millisecond})
	err := n.post(context.Background(), s.URL, []byte("{}")) // past CheckURL, as a rebound name would be
	if err == nil || hits.Load() != 0 {
		t.Fatalf("post to loopback: %v, %d hits", err, hits.Load())
	}
	if err := n.Notify(context.Background(), s.URL, []byte("{}")); !errors.Is(err, ErrNotifyURL) || hits.Load() != 0 {
		t.Fatalf("Notify to loopback: %v, %d hits", err, hits.Load())
	}
}

func TestNotifyRetries(t *testing.T) {
	var hits atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) < 3 {
			w.WriteHeader(503)
		}
	}))
	defer s.Close()
	n := NewNotifier(NotifyConfig{AllowPrivate: true, Attempts: 4, BaseDelay: time.Millisecond})
	if err := n.Notify(context.Background(), s.URL, []byte("{}")); err != nil || hits.Load() != 3 {
		t.Fatalf("Notify: %v after %d hits, want success on the third", err, hits.Load())
	}
	// Redirects are not followed: a 3xx is a failure.
	r := httptest.NewServer(http.RedirectHandler(s.URL, http.StatusFound))
	defer r.Close()
	hits.Store(10)
	if err := n.Notify(context.Background(), r.URL, []byte("{}")); err == nil || hits.Load() != 10 {
		t.Fatalf("redirect: %v, %d hits", err, hits.Load())
	}
	// A cancelled context stops the backoff.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	slow := NewNotifier(NotifyConfig{AllowPrivate: true, Attempts: 5, BaseDelay: time.Hour})
	if err := slow.Notify(ctx, r.URL, nil); err == nil {
		t.Fatal("Notify with a cancelled context succeeded")
	}
}

func TestPublicAddr(t *testing.T) {
	for a, want := range map[string]bool{"8.8.8.8": true, "2001:4860::8888": true, "127.0.0.2": false, "fd00::1": false, "fe80::1": false, "224.0.0.1": false, "::": false} {
		if got := publicAddr(netip.MustParseAddr(a)); got != want {
			t.Errorf("publicAddr(%s) = %v", a, got)
		}
	}
}

func TestFops(t *testing.T) {
	good := []string{"a/b", "a/b|c;d", "a|saveas/" + "YjprZXk=", "saveas/YjprZXk=", "a|saveas/YjprZXk=/sign/AK:c2ln"}
	for _, f := range good {
		if _, err := ParseFops(f); err != nil {
			t.Errorf("ParseFops(%q): %v", f, err)
		}
	}
	bad := []string{"", ";", "a;", "a||b", "p/1/a", "a&e=1&token=x:y", "a&v=1", "a&attname=x.txt", "saveas/YjprZXk=|a", strings.Repeat("a;", MaxFops) + "a", strings.Repeat("a", MaxFopsBytes+1)}
	for _, f := range bad {
		if _, err := ParseFops(f); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseFops(%q) = %v, want ErrInvalid", f, err)
		}
	}
	if k := DefaultResultKey("k", "a/b"); !strings.HasPrefix(k, "k_") || len(k) != 2+28 {
		t.Errorf("DefaultResultKey = %q", k)
	}
	long := strings.Repeat("x", MaxJobKeyByte)
	if k := DefaultResultKey(long, "a/b"); len(k) > MaxJobKeyByte || !strings.HasPrefix(k, "pfop/") {
		t.Errorf("DefaultResultKey of a long key = %q", k)
	}
	p, err := planItem("b", "k", "a/x|saveas/YjI6b3V0")
	if err != nil || p.bucket != "b2" || p.key != "out" || p.pipeline != "a/x" || p.run != "a/x|saveas/YjI6b3V0" {
		t.Errorf("planItem = %+v %v", p, err)
	}
}

func TestStatusJSON(t *testing.T) {
	j := Job{ID: "z0.x", Created: time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600))}
	s := j.Status()
	if s.CreationDate != "2026-01-02T02:04:05Z" || s.Items == nil || s.Desc == "" {
		t.Fatalf("%+v", s)
	}
	for _, id := range []string{"z0.0123456789abcdef01234567", "my-region.0123456789abcdef01234567"} {
		if !ValidID(id) {
			t.Errorf("ValidID(%q) false", id)
		}
	}
	id, err := NewID("")
	if err != nil || !ValidID(id) {
		t.Fatalf("NewID: %q %v", id, err)
	}
}
