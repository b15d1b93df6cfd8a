package admin

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/accounts"
	"github.com/doraproject/dora/admin/console"
	"github.com/doraproject/dora/internal/store"
)

// The web console is served under ConsolePath on the admin API's own
// listener: same origin as the /v1/ API its pages call, so the session
// cookie, SameSite and the CSRF header are all it needs, and no second
// listener or CORS policy exists to get wrong.
const (
	ConsolePath = "/console/"
	// SessionCookie carries the signed, expiring session (HttpOnly).
	SessionCookie = "dora_session"
	// CSRFHeader must carry the session's CSRF token on every write made
	// with the session cookie.
	CSRFHeader = "X-CSRF-Token"
	// DefaultSessionTTL is how long a console sign-in lasts.
	DefaultSessionTTL = 12 * time.Hour
)

// session is what the cookie says once its signature checks. The cookie
// is stateless but for gen: the account's session generation when it was
// signed (store.ConsoleSessionGenKey). Sign-out moves the generation on,
// which ends every session of the account on every admin sharing the store;
// the signature also covers the account's SK (never sent), so a new SK ends
// them too.
type session struct {
	ak   string
	exp  time.Time
	csrf string
	gen  uint64
}

// sessionGen reads the account's session generation and the key's version
// (0 when it has none yet). A store failure wraps accounts.ErrLookup (503).
func (s *Server) sessionGen(ctx context.Context, accountID string) (uint64, uint64, error) {
	kv, err := s.st.Get(ctx, store.ConsoleSessionGenKey(accountID))
	if errors.Is(err, store.ErrNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%w: console session generation: %w", accounts.ErrLookup, err)
	}
	gen, err := strconv.ParseUint(string(kv.Value), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("console session generation of %s: %w", accountID, err)
	}
	return gen, kv.Version, nil
}

// endSessions moves the account's session generation on: every session
// signed before is refused from now on, by every admin.
func (s *Server) endSessions(ctx context.Context, accountID string) error {
	for i := 0; i < casRetries; i++ {
		gen, ver, err := s.sessionGen(ctx, accountID)
		if err != nil {
			return err
		}
		_, err = s.st.CAS(ctx, store.ConsoleSessionGenKey(accountID), []byte(strconv.FormatUint(gen+1, 10)), ver)
		if errors.Is(err, store.ErrConflict) {
			continue // another sign-out moved it on: move it again, harmless
		}
		if err != nil {
			return fmt.Errorf("end console sessions of %s: %w", accountID, err)
		}
		return nil
	}
	return fmt.Errorf("end console sessions of %s: %w", accountID, store.ErrConflict)
}

// sessionKey returns the key sessions are signed with: Config.ConsoleKey
// when set, else the platform's own key kept in the metadata store
// (store.ConsoleSessionKey), created by the first admin that needs it. Every
// admin of one platform shares the store, so a session signed by one is
// accepted by the others and outlives a restart. The key is read once;
// a store failure is returned (and retried at the next call).
func (s *Server) sessionKey(ctx context.Context) ([]byte, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if len(s.consoleKey) > 0 {
		return s.consoleKey, nil
	}
	kv, err := s.st.Get(ctx, store.ConsoleSessionKey)
	if errors.Is(err, store.ErrNotFound) {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, fmt.Errorf("console session key: %w", err)
		}
		if _, err = s.st.CAS(ctx, store.ConsoleSessionKey, k, 0); err == nil {
			s.consoleKey = k
			return k, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return nil, fmt.Errorf("console session key: create: %w", err)
		}
		// Another admin created it first: use theirs.
		kv, err = s.st.Get(ctx, store.ConsoleSessionKey)
	}
	if err != nil {
		return nil, fmt.Errorf("console session key: %w", err)
	}
	if len(kv.Value) < 16 {
		return nil, fmt.Errorf("console session key: %s holds %d bytes, want at least 16", store.ConsoleSessionKey, len(kv.Value))
	}
	s.consoleKey = kv.Value
	return kv.Value, nil
}

// sessionMAC signs a cookie's payload together with the account's SK.
func sessionMAC(key, payload []byte, sk string) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write(payload)
	mac.Write([]byte{0})
	mac.Write([]byte(sk))
	return mac.Sum(nil)
}

func (s *Server) signSession(ctx context.Context, ss session, sk string) (string, error) {
	key, err := s.sessionKey(ctx)
	if err != nil {
		return "", err
	}
	payload := []byte(ss.ak + "|" + strconv.FormatInt(ss.exp.Unix(), 10) + "|" + ss.csrf + "|" + strconv.FormatUint(ss.gen, 10))
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(sessionMAC(key, payload, sk)), nil
}

// errBadSession is any cookie that does not check: forged, altered,
// expired, signed out, of an SK since changed, of an unknown or disabled
// account.
var errBadSession = errors.New("console session invalid or expired: sign in again")

// parseSession checks a cookie's signature (with the account's current
// SK), expiry and generation, and returns the session and its enabled
// account. A failure to read the store is returned as it is (not
// errBadSession): the store is down, the cookie may well be good.
func (s *Server) parseSession(ctx context.Context, v string) (session, dora.Account, error) {
	key, err := s.sessionKey(ctx)
	if err != nil {
		return session{}, dora.Account{}, err
	}
	p64, m64, ok := strings.Cut(v, ".")
	if !ok {
		return session{}, dora.Account{}, errBadSession
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	sum, err2 := base64.RawURLEncoding.DecodeString(m64)
	if err1 != nil || err2 != nil {
		return session{}, dora.Account{}, errBadSession
	}
	parts := strings.Split(string(payload), "|")
	if len(parts) != 4 {
		return session{}, dora.Account{}, errBadSession
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || !s.now().Before(time.Unix(exp, 0)) {
		return session{}, dora.Account{}, errBadSession
	}
	gen, err := strconv.ParseUint(parts[3], 10, 64)
	if err != nil {
		return session{}, dora.Account{}, errBadSession
	}
	// The account is looked up before the signature is checked (the SK
	// is part of it); an unknown AK says no more than a bad signature,
	// and costs the same reads and MAC (candidateAccount), so that its
	// time does not say it either.
	acct, found, err := s.candidateAccount(ctx, parts[0])
	if err != nil {
		return session{}, dora.Account{}, err
	}
	if !hmac.Equal(sum, sessionMAC(key, payload, acct.SecretKey)) || !found {
		return session{}, dora.Account{}, errBadSession
	}
	cur, _, err := s.sessionGen(ctx, acct.ID)
	if err != nil {
		return session{}, dora.Account{}, err
	}
	if gen != cur {
		return session{}, dora.Account{}, errBadSession
	}
	return session{ak: parts[0], exp: time.Unix(exp, 0), csrf: parts[2], gen: gen}, acct, nil
}

// authenticateSession is authenticate for a request that carries the
// console's cookie instead of a signature: the same account checks follow
// (enabled account, role); writes must carry the CSRF token.
func (s *Server) authenticateSession(w http.ResponseWriter, r *http.Request, ck *http.Cookie, rl role, upload bool, c *call) error {
	ss, acct, err := s.parseSession(r.Context(), ck.Value)
	if errors.Is(err, errBadSession) {
		return errf(http.StatusUnauthorized, "%v", err)
	}
	if err != nil {
		return err
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		got := r.Header.Get(CSRFHeader)
		if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(ss.csrf)) != 1 {
			return errf(http.StatusForbidden, "missing or wrong %s header (console writes need the session's CSRF token)", CSRFHeader)
		}
	}
	if !upload {
		body, err := readCapped(w, r)
		if err != nil {
			return err
		}
		r.Body = http.NoBody
		if len(body) > 0 {
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				return errf(http.StatusBadRequest, "the request body must be application/json, not %q", ct)
			}
			c.body = body
		}
	}
	if info, ok := r.Context().Value(accessKey{}).(*accessInfo); ok {
		info.ak = ss.ak
	}
	if rl == roleRoot && !acct.Root {
		return errf(http.StatusForbidden, "only the root account may do this")
	}
	c.acct = acct
	return nil
}

// consoleInfo is GET /console/session and the reply of a sign-in.
type consoleInfo struct {
	Account      dora.Account `json:"account"`
	CSRF         string       `json:"csrf"`
	Expires      time.Time    `json:"expires"`
	RouterURL    string       `json:"routerURL,omitempty"`
	DomainSuffix string       `json:"domainSuffix"`
	StatsEvery   float64      `json:"statsEverySeconds"`
}

func (s *Server) consoleInfo(acct dora.Account, ss session) consoleInfo {
	acct.SecretKey = ""
	every := 0.0
	if s.stats != nil {
		every = s.stats.Interval().Seconds()
	}
	return consoleInfo{Account: acct, CSRF: ss.csrf, Expires: ss.exp.UTC(), RouterURL: s.cfg.RouterURL,
		DomainSuffix: s.cfg.DomainSuffix, StatsEvery: every}
}

func (s *Server) consoleRoutes() {
	m := s.mux
	static, err := fs.Sub(console.Files, "static")
	if err != nil {
		panic(fmt.Sprintf("admin: console files: %v", err)) // the embed is fixed at build time
	}
	files := http.StripPrefix("/console/", http.FileServer(http.FS(static)))
	m.HandleFunc("GET /console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, ConsolePath, http.StatusFound)
	})
	m.HandleFunc("GET /console/", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' http: https: data: blob:; frame-src http: https:; connect-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
	// Sign-in and sign-out come from the console's own pages only: a
	// page of another origin, a bucket's on a sibling domain included
	// (same-site, so SameSite=Strict does not stop it), must not sign the
	// browser into another account (login CSRF) nor out. Browsers say
	// where a request comes from (Sec-Fetch-Site, else Origin); clients
	// that say neither (curl, scripts) are not browsers and pass. The
	// public URL is trusted as an origin too, for proxies that rewrite
	// Host.
	cop := http.NewCrossOriginProtection()
	if err := cop.AddTrustedOrigin(s.public.Scheme + "://" + s.public.Host); err != nil {
		panic(fmt.Sprintf("admin: trusted origin: %v", err)) // New checked PublicURL
	}
	sameOrigin := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if err := cop.Check(r); err != nil {
				writeError(w, errf(http.StatusForbidden, "the console signs in and out from its own pages only (%v)", err))
				return
			}
			h(w, r)
		}
	}
	m.HandleFunc("POST /console/login", sameOrigin(s.consoleLogin))
	m.HandleFunc("POST /console/logout", sameOrigin(s.consoleLogout))
	m.HandleFunc("GET /console/session", func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie(SessionCookie)
		if err != nil {
			writeError(w, errf(http.StatusUnauthorized, "not signed in"))
			return
		}
		ss, acct, err := s.parseSession(r.Context(), ck.Value)
		if errors.Is(err, errBadSession) {
			writeError(w, errf(http.StatusUnauthorized, "%v", err))
			return
		}
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, s.consoleInfo(acct, ss))
	})
}

// secureCookie says whether the session cookie is Secure: when this admin
// terminates TLS itself, or when its PublicURL is https, i.e. browsers
// reach it through a TLS-terminating proxy (docs/production.md) while the
// proxy talks plain HTTP to it. Request headers (X-Forwarded-Proto) are
// not consulted: any client can send them.
func (s *Server) secureCookie(r *http.Request) bool {
	return r.TLS != nil || s.public.Scheme == "https"
}

// consoleLogin checks an AK/SK pair (form fields ak and sk) against the
// accounts and sets the session cookie. The SK never leaves this request:
// the browser keeps only the signed cookie, which scripts cannot read.
// Failed sign-ins are throttled per access key and client address
// (loginLimiter): past loginBurst in loginWindow, 429 with Retry-After.
func (s *Server) consoleLogin(w http.ResponseWriter, r *http.Request) {
	const maxForm = 64 << 10
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	// The fields come as a form, URL-encoded (the console) or multipart
	// (a FormData posted as is, curl -F); another body is not read as one
	// and gets a message saying so, not "both required".
	var err error
	ct := r.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	switch mt {
	case "application/x-www-form-urlencoded":
		err = r.ParseForm()
	case "multipart/form-data":
		err = r.ParseMultipartForm(maxForm)
		if r.MultipartForm != nil {
			defer r.MultipartForm.RemoveAll()
		}
	default:
		writeError(w, errf(http.StatusUnsupportedMediaType, "sign-in: Content-Type %q: send the fields ak and sk as "+
			"application/x-www-form-urlencoded or multipart/form-data", ct))
		return
	}
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, err) // 413
			return
		}
		writeError(w, errf(http.StatusBadRequest, "bad sign-in form: %v", err))
		return
	}
	ak, sk := strings.TrimSpace(r.PostForm.Get("ak")), strings.TrimSpace(r.PostForm.Get("sk"))
	if ak == "" || sk == "" {
		writeError(w, errf(http.StatusBadRequest, "access key and secret key are both required"))
		return
	}
	// Every attempt counts as a failure until its key checks (a store
	// failure too: it says nothing either way, and the count is what
	// bounds an attacker's guesses).
	lk := loginKeyOf(ak, r.RemoteAddr)
	if wait, ok := s.logins.begin(lk, s.now()); !ok {
		secs := int64((wait + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		writeError(w, errf(http.StatusTooManyRequests, "too many failed sign-ins with this access key from this address: retry in %d s", secs))
		return
	}
	acct, err := s.signInAccount(r.Context(), ak, sk)
	if err != nil {
		writeError(w, err)
		return
	}
	s.logins.succeed(lk)
	var nonce [18]byte
	_, _ = rand.Read(nonce[:])
	gen, _, err := s.sessionGen(r.Context(), acct.ID)
	if err != nil {
		writeError(w, err)
		return
	}
	ss := session{ak: ak, exp: s.now().Add(s.sessionTTL), csrf: base64.RawURLEncoding.EncodeToString(nonce[:]), gen: gen}
	signed, err := s.signSession(r.Context(), ss, acct.SecretKey)
	if err != nil {
		writeError(w, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: signed, Path: "/", Expires: ss.exp,
		MaxAge: int(s.sessionTTL / time.Second), HttpOnly: true, Secure: s.secureCookie(r), SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, s.consoleInfo(acct, ss))
}

// errSignIn answers every refused AK/SK pair, whatever was wrong with it.
var errSignIn = &apiError{Status: http.StatusUnauthorized, Msg: "unknown access key, wrong secret key or disabled account"}

// noAccountID names no account (account ids are longer): an unknown AK
// reads accounts/<noAccountID> where a known one reads its account.
const noAccountID = "-"

// signInAccount checks an AK/SK pair (errSignIn when it does not sign in)
// with the same work whatever is wrong with it (candidateAccount), the SK
// compared in every case, so the time of the answer does not tell whether
// the AK exists.
func (s *Server) signInAccount(ctx context.Context, ak, sk string) (dora.Account, error) {
	acct, found, err := s.candidateAccount(ctx, ak)
	if err != nil {
		return dora.Account{}, err
	}
	if !s.secretEqual(sk, acct.SecretKey) || !found {
		return dora.Account{}, errSignIn
	}
	return acct, nil
}

// candidateAccount is accounts.ByAK (the enabled account of ak; found
// false when there is none) with the same store reads whether or not
// there is: an unknown AK reads accounts/<noAccountID> where a known one
// reads its account. The caller checks a secret against the account's SK
// ("" when not found) in every case. TestCandidateAccountIsByAK keeps the
// two in step. Store failures wrap accounts.ErrLookup.
func (s *Server) candidateAccount(ctx context.Context, ak string) (dora.Account, bool, error) {
	id, found := noAccountID, true
	kv, err := s.st.Get(ctx, store.AccessKeyKey(ak))
	switch {
	case err == nil:
		id = string(kv.Value)
	case errors.Is(err, store.ErrNotFound):
		found = false
	default:
		return dora.Account{}, false, fmt.Errorf("%w: %w", accounts.ErrLookup, err)
	}
	var acct dora.Account
	kv, err = s.st.Get(ctx, store.AccountKey(id))
	switch {
	case err == nil:
		if err := json.Unmarshal(kv.Value, &acct); err != nil {
			return dora.Account{}, false, fmt.Errorf("decode %s: %w", store.AccountKey(id), err)
		}
	case errors.Is(err, store.ErrNotFound):
		found = false
	default:
		return dora.Account{}, false, fmt.Errorf("%w: %w", accounts.ErrLookup, err)
	}
	return acct, found && !acct.Disabled && acct.AccessKey == ak, nil
}

// secretEqual compares a secret key given at sign-in with the account's
// in constant time, and in a time that does not depend on the account's
// SK length either (both are hashed first: subtle.ConstantTimeCompare
// answers at once on different lengths). It is Server.secretEqual unless
// a test replaced it.
func secretEqual(given, want string) bool {
	g, w := sha256.Sum256([]byte(given)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// consoleLogout ends the session on the server as well as in the browser:
// a valid cookie moves its account's session generation on, which signs
// the account out of every browser and every admin (a copied cookie stops
// working). The cookie is cleared whatever it holds; a store failure is
// reported (503), so the user knows the session may still be alive.
func (s *Server) consoleLogout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: s.secureCookie(r), SameSite: http.SameSiteStrictMode})
	if ck, err := r.Cookie(SessionCookie); err == nil {
		_, acct, err := s.parseSession(r.Context(), ck.Value)
		if err == nil {
			err = s.endSessions(r.Context(), acct.ID)
		}
		if err != nil && !errors.Is(err, errBadSession) {
			s.logError(r, err)
			writeError(w, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{})
}

// statsReply is GET /v1/stats: per ufop the caller may see, the samples
// of the last hour.
type statsReply struct {
	IntervalSeconds float64                 `json:"intervalSeconds"`
	Ufops           map[string][]statsPoint `json:"ufops"`
}

type statsPoint = struct {
	T         time.Time `json:"t"`
	RPS       float64   `json:"rps"`
	ErrorsPS  float64   `json:"eps"`
	LatencyMS float64   `json:"latencyMs"`
	Ready     float64   `json:"ready"`
	Desired   float64   `json:"desired"`
}

func (s *Server) getStats(w http.ResponseWriter, r *http.Request, c *call) error {
	out := statsReply{Ufops: map[string][]statsPoint{}}
	if s.stats == nil {
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	out.IntervalSeconds = s.stats.Interval().Seconds()
	want := r.URL.Query().Get("ufop")
	for _, name := range s.stats.Ufops() {
		if want != "" && name != want {
			continue
		}
		ps := s.stats.Series(name)
		if !c.acct.Root {
			u, _, err := store.Get[dora.Ufop](r.Context(), s.st, store.UfopKey(name))
			if err != nil || u.Owner != c.acct.ID {
				continue
			}
			// Samples are kept by name: those from before this ufop was
			// registered are of a deleted ufop of the same name, maybe
			// another account's.
			kept := ps[:0]
			for _, p := range ps {
				if !p.Time.Before(u.Created) {
					kept = append(kept, p)
				}
			}
			ps = kept
		}
		conv := make([]statsPoint, len(ps))
		for i, p := range ps {
			conv[i] = statsPoint{T: p.Time, RPS: p.RPS, ErrorsPS: p.ErrorsPS, LatencyMS: p.LatencyMS, Ready: p.Ready, Desired: p.Desired}
		}
		out.Ufops[name] = conv
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
