package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLoginLimiter: the decisions of the sign-in throttle, as a table of
// attempts at given times (each attempt of the table fails unless ok
// says the key was right).
func TestLoginLimiter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b := loginKeyOf("AK", "192.0.2.1:1000"), loginKeyOf("AK", "192.0.2.2:1000")
	type step struct {
		at      time.Duration // since t0
		key     loginKey
		allowed bool
		wait    time.Duration // when refused
		right   bool          // the key checked: succeed
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"five failures in a minute, then a minute's block", []step{
			{0, a, true, 0, false}, {time.Second, a, true, 0, false}, {2 * time.Second, a, true, 0, false},
			{3 * time.Second, a, true, 0, false}, {4 * time.Second, a, true, 0, false},
			{5 * time.Second, a, false, 59 * time.Second, false},
			{5 * time.Second, b, true, 0, false}, // another address is not blocked
			{64 * time.Second, a, true, 0, false},
			// the sixth failure: two minutes
			{65 * time.Second, a, false, 119 * time.Second, false},
			{184 * time.Second, a, true, 0, false},
			{185 * time.Second, a, false, 239 * time.Second, false}, // four
		}},
		{"failures spread out never block", []step{
			{0, a, true, 0, false}, {20 * time.Second, a, true, 0, false}, {40 * time.Second, a, true, 0, false},
			{59 * time.Second, a, true, 0, false}, {61 * time.Second, a, true, 0, false},
			{80 * time.Second, a, true, 0, false}, {100 * time.Second, a, true, 0, false},
		}},
		{"a sign-in forgets the failures", []step{
			{0, a, true, 0, false}, {1, a, true, 0, false}, {2, a, true, 0, false}, {3, a, true, 0, true},
			{4, a, true, 0, false}, {5, a, true, 0, false}, {6, a, true, 0, false}, {7, a, true, 0, false},
			{8, a, true, 0, false}, {9, a, false, time.Minute - 1, false},
		}},
		{"the block caps at 15 minutes; a quiet pair starts afresh", []step{
			{0, a, true, 0, false}, {1, a, true, 0, false}, {2, a, true, 0, false}, {3, a, true, 0, false}, {4, a, true, 0, false}, // 1m
			{2 * time.Minute, a, true, 0, false},  // 2m, until 4m
			{5 * time.Minute, a, true, 0, false},  // 4m, until 9m
			{10 * time.Minute, a, true, 0, false}, // 8m, until 18m
			{19 * time.Minute, a, true, 0, false}, // 16m → 15m, until 34m
			{33 * time.Minute, a, false, time.Minute, false},
			{34 * time.Minute, a, true, 0, false}, // 15m again, until 49m
			// quiet for loginForget after the block: afresh
			{64 * time.Minute, a, true, 0, false}, {64*time.Minute + 1, a, true, 0, false},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLoginLimiter(16)
			for i, s := range c.steps {
				wait, ok := l.begin(s.key, t0.Add(s.at))
				if ok != s.allowed || (!ok && wait != s.wait) {
					t.Fatalf("step %d (at %v): allowed %v, wait %v; want %v, %v", i, s.at, ok, wait, s.allowed, s.wait)
				}
				if ok && s.right {
					l.succeed(s.key)
				}
			}
		})
	}
}

// TestLoginLimiterBounded: a flood of distinct pairs keeps the table at
// its size, and does not push out a blocked pair.
func TestLoginLimiterBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newLoginLimiter(64)
	blocked := loginKeyOf("rootAK", "198.51.100.7:1")
	for range loginBurst {
		l.begin(blocked, now)
	}
	for i := range 10000 {
		l.begin(loginKeyOf(fmt.Sprintf("junk%d", i), "203.0.113.9:1"), now)
		if n := l.size(); n > 64 {
			t.Fatalf("after %d pairs the table holds %d, over its 64", i+1, n)
		}
	}
	if _, ok := l.begin(blocked, now.Add(time.Second)); ok {
		t.Fatal("a flood of new pairs pushed the blocked pair out of the table")
	}
	// IPv6 addresses of one /64 are one client; an IPv4-mapped one is its
	// IPv4 address.
	if loginKeyOf("AK", "[2001:db8::1]:1") != loginKeyOf("AK", "[2001:db8::ffff:2]:2") ||
		loginKeyOf("AK", "[::ffff:192.0.2.1]:1") != loginKeyOf("AK", "192.0.2.1:2") ||
		loginKeyOf("AK", "[2001:db8:0:1::1]:1") == loginKeyOf("AK", "[2001:db8::1]:1") {
		t.Fatal("loginKeyOf does not group addresses as documented")
	}
}

// TestConsoleLoginThrottled: past five failed sign-ins in a minute with one
// access key from one address, sign-ins of that pair (even with the right
// key) get 429, Retry-After and a JSON error until the block ends; another
// address is not affected; a sign-in then forgets the failures.
func TestConsoleLoginThrottled(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := newEnv(t, func(c *Config) { c.Now = func() time.Time { return now } })
	h := e.srv.Handler()
	signIn := func(sk, addr string) *httptest.ResponseRecorder {
		t.Helper()
		r := httptest.NewRequest(http.MethodPost, "/console/login", strings.NewReader(url.Values{"ak": {testRootAK}, "sk": {sk}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.RemoteAddr = addr
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	const attacker, owner = "203.0.113.5:4000", "198.51.100.8:5000"
	for i := range loginBurst {
		if w := signIn(fmt.Sprintf("guess%d", i), attacker); w.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d %s", i+1, w.Code, w.Body)
		}
	}
	for _, sk := range []string{"guess5", testRootSK} {
		w := signIn(sk, attacker)
		var body struct{ Error string }
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != http.StatusTooManyRequests || body.Error == "" {
			t.Fatalf("attempt past the limit: %d %q", w.Code, w.Body)
		}
		if ra, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || ra != 60 {
			t.Fatalf("Retry-After %q, want 60", w.Header().Get("Retry-After"))
		}
	}
	if w := signIn(testRootSK, owner); w.Code != http.StatusOK {
		t.Fatalf("the owner from another address: %d %s", w.Code, w.Body)
	}
	now = now.Add(time.Minute)
	if w := signIn(testRootSK, attacker); w.Code != http.StatusOK {
		t.Fatalf("after the block, the right key: %d %s", w.Code, w.Body)
	}
	// The sign-in forgot the failures: five more before a block.
	for i := range loginBurst {
		if w := signIn("wrong", attacker); w.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d after a sign-in: %d %s", i+1, w.Code, w.Body)
		}
	}
	if w := signIn("wrong", attacker); w.Code != http.StatusTooManyRequests {
		t.Fatalf("sixth failure after a sign-in: %d", w.Code)
	}
}
