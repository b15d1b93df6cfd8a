package admin

import (
	"crypto/sha256"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Sign-in throttling: the console's sign-in checks a secret key, so it
// counts the attempts of each (access key, client address) pair and, past
// a few in a short time, refuses the pair's attempts (429, Retry-After)
// for a while that doubles with each further failure, as Grafana's login
// attempt lockout (5 failures in 5 minutes per user name) and Authelia's
// regulation (max_retries, find_time, ban_time) do. The pair, not the
// account alone, is the key, so an attacker cannot lock an account's owner
// out from another address; not the address alone, so one user's typos
// do not lock out the others behind the same proxy. The table is in
// memory and bounded: each admin counts its own sign-ins.
const (
	// loginBurst failed sign-ins within loginWindow block the pair.
	loginBurst  = 5
	loginWindow = time.Minute
	// loginBlock is the first block; each failure after it doubles it, up
	// to loginMaxBlock.
	loginBlock    = time.Minute
	loginMaxBlock = 15 * time.Minute
	// loginForget: a blocked pair that has not failed again for this long
	// after its block ended starts afresh.
	loginForget = 15 * time.Minute
	// loginTable bounds the pairs remembered (about 100 bytes each).
	loginTable = 4096
)

// loginKey is a digest of the pair, of fixed size whatever the AK sent.
type loginKey [sha256.Size]byte

// loginKeyOf is the pair's key: the AK as given and the client's address,
// an IPv6 address by its /64 (what one host usually has to pick from).
func loginKeyOf(ak, remoteAddr string) loginKey {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if ip.Is6() {
			ip = netip.PrefixFrom(ip, 64).Masked().Addr()
		}
		host = ip.String()
	}
	return sha256.Sum256([]byte(ak + "\x00" + host))
}

// loginEntry is what the table remembers of a pair: its failures since
// first (the start of the count), and until when it is blocked.
type loginEntry struct {
	fails int
	first time.Time
	until time.Time
}

// release is when the entry no longer holds anything back: forgetting it
// then changes no decision.
func (e loginEntry) release() time.Time {
	if e.fails < loginBurst {
		return e.first.Add(loginWindow)
	}
	return e.until.Add(loginForget)
}

// loginLimiter is the table of pairs; the zero value is not usable, see
// newLoginLimiter.
type loginLimiter struct {
	mu      sync.Mutex
	max     int
	entries map[loginKey]loginEntry
}

func newLoginLimiter(max int) *loginLimiter {
	return &loginLimiter{max: max, entries: make(map[loginKey]loginEntry, max)}
}

// begin decides an attempt of k at now: refused (ok false) while the pair
// is blocked, with how long it still is; otherwise the attempt is counted
// as a failure before its key is checked (attempts sent at once cannot
// all pass before the first failure is counted), and succeed forgets the
// pair if the key was right.
func (l *loginLimiter) begin(k loginKey, now time.Time) (wait time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, found := l.entries[k]
	if found && now.Before(e.until) {
		return e.until.Sub(now), false
	}
	if found && !now.Before(e.release()) {
		found = false
	}
	if !found {
		e = loginEntry{first: now}
		l.makeRoom(now)
	}
	e.fails++
	if e.fails >= loginBurst {
		block := loginMaxBlock
		if n := e.fails - loginBurst; n < 8 {
			block = min(loginBlock<<n, loginMaxBlock)
		}
		e.until = now.Add(block)
	}
	l.entries[k] = e
	return 0, true
}

// succeed forgets the pair: its owner signed in.
func (l *loginLimiter) succeed(k loginKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.entries, k)
}

// makeRoom keeps the table under its size before an insertion: released
// entries go first; if none has, the entry of fewest failures (of them,
// the one released soonest), so that a flood of new pairs, one failure
// each, pushes out pairs of one failure, never a blocked pair: to push
// out one pair of n failures takes a table of pairs with as many.
func (l *loginLimiter) makeRoom(now time.Time) {
	if len(l.entries) < l.max {
		return
	}
	var victim loginKey
	var least loginEntry
	have := false
	for k, e := range l.entries {
		if !now.Before(e.release()) {
			delete(l.entries, k)
			continue
		}
		if !have || e.fails < least.fails || (e.fails == least.fails && e.release().Before(least.release())) {
			victim, least, have = k, e, true
		}
	}
	if len(l.entries) >= l.max {
		delete(l.entries, victim)
	}
}

// size is how many pairs the table holds.
func (l *loginLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}
