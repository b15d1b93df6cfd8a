package admin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/accounts"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/store"
)

// apiError is an error with the HTTP status it maps to and the message the
// client sees.
type apiError struct {
	Status int
	Msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Msg) }

// errf builds an apiError.
func errf(status int, format string, args ...any) error {
	return &apiError{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// role says who may call a route.
type role int

const (
	roleUser role = iota // any enabled account
	roleRoot             // the root account only
)

// call carries what the middleware learnt about a request.
type call struct {
	acct dora.Account
	body []byte // the request body the signature covers (nil on uploads and unsigned bodies)
}

type apiFunc func(w http.ResponseWriter, r *http.Request, c *call) error

// accessInfo is filled by the inner layers for the access log.
type accessInfo struct {
	ak    string
	reqid string
}

type accessKey struct{}

// statusWriter records the status and size written.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Flush lets streamed responses (logs) reach the client early.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// jsonErrorWriter turns the mux's own plain-text 404/405 replies into JSON.
type jsonErrorWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *jsonErrorWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	msg := http.StatusText(code)
	if code == http.StatusNotFound {
		msg = "no such endpoint"
	}
	h := w.ResponseWriter.Header()
	h.Set("Content-Type", "application/json")
	w.ResponseWriter.WriteHeader(code)
	_ = json.NewEncoder(w.ResponseWriter).Encode(map[string]string{"error": msg})
}

func (w *jsonErrorWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return len(b), nil // the mux's text body is replaced by the JSON one
}

func newReqid() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// InertCSP is the Content-Security-Policy of every reply but the console's
// own files: nothing the API sends is a page, and stored bytes sent back
// on the console's origin (an object stored as text/html or SVG, a log)
// must not run there, where a script could read the session's CSRF token.
const InertCSP = "default-src 'none'; sandbox"

// Inert sets on every reply of h the headers that keep it inert on the
// console's origin (nosniff, InertCSP), for the handlers that share the
// admin's address but answer before the admin's own (the Qiniu upload and
// rs/rsf APIs, whose returnBody and errors the caller shapes).
func Inert(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setInert(w.Header())
		h.ServeHTTP(w, r)
	})
}

func setInert(h http.Header) {
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", InertCSP)
}

// outer adds X-Reqid, the access log, metrics, panic recovery, JSON
// replies for unknown routes and the headers that keep replies inert
// (nosniff, InertCSP; the console's files set a CSP of their own).
func (s *Server) outer(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		reqid := newReqid()
		h := rw.Header()
		h.Set("X-Reqid", reqid)
		setInert(h)
		w := &statusWriter{ResponseWriter: rw}
		info := &accessInfo{reqid: reqid}
		r = r.WithContext(context.WithValue(r.Context(), accessKey{}, info))
		_, pattern := mux.Handler(r)
		// The route label is the pattern without its method (the method
		// has a label of its own): "/v1/ufops/{name}".
		route := pattern
		if _, path, ok := strings.Cut(pattern, " "); ok {
			route = path
		}
		if route == "" {
			route = "unmatched"
		}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("admin: panic", "reqid", reqid, "path", r.URL.Path, "panic", p)
				if w.status == 0 {
					writeError(w, errf(http.StatusInternalServerError, "internal error"))
				}
			}
			code := w.status
			if code == 0 {
				code = http.StatusOK
			}
			d := time.Since(start)
			s.reqs.WithLabelValues(r.Method, route, strconv.Itoa(code)).Inc()
			s.latency.WithLabelValues(route).Observe(d.Seconds())
			s.log.Info("admin", "reqid", reqid, "method", r.Method, "path", r.URL.Path,
				"status", code, "bytes", w.bytes, "duration", d, "ak", info.ak, "remote", r.RemoteAddr)
		}()
		if err := cleanPathError(r.URL.Path); err != nil {
			writeError(w, err)
			return
		}
		if pattern == "" {
			mux.ServeHTTP(&jsonErrorWriter{ResponseWriter: w}, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// cleanPathError refuses a path with an empty, "." or ".." segment (a
// trailing slash aside), decoded as the mux sees it. The mux would answer
// it with a redirect to the cleaned path, which a browser follows with the
// same method and body (307): a console upload to "x/../y" would overwrite
// "y". Nothing of the API has such a path, so it is a 400 for every method.
func cleanPathError(p string) error {
	if !strings.HasPrefix(p, "/") || p == "/" {
		return nil // "*" and the like: the server's and the mux's business
	}
	for i, seg := range strings.Split(strings.TrimSuffix(p[1:], "/"), "/") {
		name := strconv.Quote(seg)
		switch seg {
		case "":
			name = "empty"
		case ".", "..":
		default:
			continue
		}
		return errf(http.StatusBadRequest, "path %q: segment %d is %s: empty, \".\" and \"..\" segments are refused, not cleaned (send the path meant)", p, i+1, name)
	}
	return nil
}

// routes registers every endpoint of docs/api.md.
func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})
	m.Handle("GET /metrics", promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{}))
	if s.cfg.Registry != nil {
		m.Handle("/v2/", s.cfg.Registry)
	}
	m.HandleFunc("GET /v1/artifacts/{ufop}/{file}", s.handleArtifact)
	s.consoleRoutes()
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, ConsolePath, http.StatusFound)
	})
	s.api("GET /v1/stats", roleUser, false, s.getStats)
	s.api("POST /v1/pfop", roleUser, false, s.submitPfop)

	s.api("GET /v1/whoami", roleUser, false, s.whoami)
	s.api("POST /v1/accounts", roleRoot, false, s.createAccount)
	s.api("GET /v1/accounts", roleRoot, false, s.listAccounts)
	s.api("POST /v1/accounts/{id}/disable", roleRoot, false, s.disableAccount)
	s.api("GET /v1/regions", roleUser, false, s.listRegions)
	s.api("GET /v1/flavors", roleUser, false, s.listFlavors)

	s.api("POST /v1/buckets", roleUser, false, s.createBucket)
	s.api("GET /v1/buckets", roleUser, false, s.listBuckets)
	s.api("GET /v1/buckets/{name}", roleUser, false, s.getBucket)
	s.api("POST /v1/buckets/{name}/domains", roleUser, false, s.addDomain)
	s.api("DELETE /v1/buckets/{name}", roleUser, false, s.deleteBucket)

	s.api("PUT /v1/objects/{bucket}/{key...}", roleUser, true, s.putObject)
	s.api("GET /v1/objects/{bucket}/{key...}", roleUser, false, s.getObject)
	s.api("DELETE /v1/objects/{bucket}/{key...}", roleUser, false, s.deleteObject)
	s.api("GET /v1/stat/{bucket}/{key...}", roleUser, false, s.statObject)
	s.api("GET /v1/list/{bucket}", roleUser, false, s.listObjects)

	s.api("POST /v1/ufops", roleUser, false, s.createUfop)
	s.api("GET /v1/ufops", roleUser, false, s.listUfops)
	s.api("GET /v1/ufops/{name}", roleUser, false, s.getUfopInfo)
	s.api("DELETE /v1/ufops/{name}", roleUser, false, s.deleteUfop)
	s.api("POST /v1/ufops/{name}/apply", roleUser, false, s.applyUfop)
	s.api("DELETE /v1/ufops/{name}/apply", roleUser, false, s.unapplyUfop)
	s.api("POST /v1/ufops/{name}/mode", roleUser, false, s.setUfopMode)

	s.api("POST /v1/ufops/{name}/builds", roleUser, true, s.createBuild)
	s.api("GET /v1/ufops/{name}/builds", roleUser, false, s.listBuilds)
	s.api("GET /v1/ufops/{name}/builds/{n}", roleUser, false, s.getBuild)
	s.api("GET /v1/ufops/{name}/builds/{n}/log", roleUser, false, s.buildLog)
	s.api("POST /v1/ufops/{name}/version", roleUser, false, s.switchVersion)

	s.api("GET /v1/images", roleUser, false, s.listImages)
	s.api("POST /v1/releases", roleUser, false, s.createRelease)
	s.api("GET /v1/ufops/{name}/releases", roleUser, false, s.listReleases)

	s.api("POST /v1/ufops/{name}/deployments", roleUser, false, s.deploy)
	s.api("GET /v1/ufops/{name}/deployments", roleUser, false, s.listDeployments)
	s.api("GET /v1/ufops/{name}/deployments/{id}", roleUser, false, s.getDeployment)
	s.api("GET /v1/ufops/{name}/deployments/{id}/events", roleUser, false, s.deploymentEvents)
	s.api("POST /v1/ufops/{name}/resize", roleUser, false, s.resize)
	s.api("GET /v1/ufops/{name}/instances", roleUser, false, s.listInstances)
	s.api("POST /v1/ufops/{name}/instances/stop", roleUser, false, s.stopInstances)
	s.api("POST /v1/ufops/{name}/instances/start", roleUser, false, s.startInstances)
	s.api("GET /v1/ufops/{name}/instances/{index}/logs", roleUser, false, s.instanceLogs)
	s.api("GET /v1/ufops/{name}/logs", roleUser, false, s.ufopLogs)
}

// api registers an authenticated route. Non-upload routes take a JSON body
// capped at MaxJSONBytes, and only one the signature covers (auth.BodySigned:
// JSON or a form signed with the Qiniu form, a form with QBox); upload routes
// stream theirs and never sign it, whatever its type (see authenticate).
func (s *Server) api(pattern string, rl role, upload bool, fn apiFunc) {
	wildcards := patternWildcards(pattern)
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		c := &call{}
		if err := checkPathValues(r, wildcards); err != nil {
			writeError(w, err)
			return
		}
		if err := s.authenticate(w, r, rl, upload, c); err != nil {
			writeError(w, err)
			return
		}
		if err := fn(w, r, c); err != nil {
			s.logError(r, err)
			writeError(w, err)
		}
	})
}

// MaxPathValueBytes bounds a name in an API path (bucket, ufop, deployment,
// account, build number...); object keys are bounded by ValidateKey.
const MaxPathValueBytes = 256

// patternWildcards returns the wildcard names of a ServeMux pattern
// ("{bucket}", "{key...}" -> "bucket", "key").
func patternWildcards(pattern string) []string {
	var names []string
	for rest := pattern; ; {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			return names
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return names
		}
		names = append(names, strings.TrimSuffix(rest[i+1:i+j], "..."))
		rest = rest[i+j+1:]
	}
}

// checkPathValues refuses, before anything looks them up, path names that
// no resource can have: not UTF-8, with control characters, or too long
// (the stores refuse such keys, which would otherwise surface as a 500).
func checkPathValues(r *http.Request, wildcards []string) error {
	for _, name := range wildcards {
		v := r.PathValue(name)
		switch {
		case !utf8.ValidString(v):
			return errf(http.StatusBadRequest, "%s: not valid UTF-8", name)
		case strings.ContainsFunc(v, unicode.IsControl):
			return errf(http.StatusBadRequest, "%s: control characters are not allowed", name)
		case name != "key" && len(v) > MaxPathValueBytes:
			return errf(http.StatusBadRequest, "%s: longer than %d bytes", name, MaxPathValueBytes)
		}
	}
	return nil
}

// readCapped reads a non-upload body, at most MaxJSONBytes.
func readCapped(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(http.MaxBytesReader(w, r.Body, MaxJSONBytes), MaxJSONBytes+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errf(http.StatusRequestEntityTooLarge, "a JSON or form body is limited to %d bytes", MaxJSONBytes)
		}
		return nil, errf(http.StatusBadRequest, "reading the request body: %v", err)
	}
	if len(b) > MaxJSONBytes {
		return nil, errf(http.StatusRequestEntityTooLarge, "a JSON or form body is limited to %d bytes", MaxJSONBytes)
	}
	return b, nil
}

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, rl role, upload bool, c *call) error {
	authz := r.Header.Get("Authorization")
	if authz == "" {
		if ck, err := r.Cookie(SessionCookie); err == nil {
			return s.authenticateSession(w, r, ck, rl, upload, c)
		}
		return errf(http.StatusUnauthorized, "missing Authorization header")
	}
	ctype := r.Header.Get("Content-Type")
	scheme, _, _ := strings.Cut(authz, " ")
	// Uploads (objects PUT, builds POST) stream their body and never sign
	// it, whatever its type: the signature covers the path, query, host and
	// type (Qiniu form only; QBox signs too little), the object is checked
	// by its etag.
	if upload && scheme == auth.SchemeQBox {
		return errf(http.StatusUnauthorized, "uploads must be signed with the Qiniu form (Authorization: Qiniu <AK>:<sign>), not QBox")
	}
	if scheme == auth.SchemeQBox && s.hasGetTwin(r) {
		return errf(http.StatusUnauthorized, "a QBox signature covers neither the method nor an empty body, so one made for GET %s would pass for this %s: "+
			"sign it with the Qiniu form (Authorization: Qiniu <AK>:<sign>)", r.URL.Path, r.Method)
	}
	signed := !upload && auth.BodySigned(authz, ctype)
	var body []byte
	if !upload {
		b, err := readCapped(w, r)
		if err != nil {
			return err
		}
		body = b
		r.Body = http.NoBody
	}
	var sigBody []byte
	if signed {
		sigBody = body
	}
	ak, err := s.verifier.VerifyHTTP(r.Context(), r, sigBody)
	if errors.Is(err, accounts.ErrLookup) {
		return errf(http.StatusServiceUnavailable, "metadata store unavailable, retry later")
	}
	if err != nil {
		return errf(http.StatusUnauthorized, "bad signature: %v", err)
	}
	if info, ok := r.Context().Value(accessKey{}).(*accessInfo); ok {
		info.ak = ak
	}
	// Act only on what the signature covers.
	if len(body) > 0 && !signed {
		if scheme == auth.SchemeQBox {
			return errf(http.StatusUnauthorized, "a QBox signature does not cover a %q body: sign the request with the Qiniu form", ctype)
		}
		return errf(http.StatusBadRequest, "the request body must be application/json (Content-Type %q is not signed nor accepted here)", ctype)
	}
	if signed {
		c.body = body
	}
	return s.bindAccount(r.Context(), c, ak, rl)
}

// hasGetTwin reports whether r, neither a GET nor a HEAD, has a path a GET
// route serves too (POST /v1/accounts: GET /v1/accounts). A QBox
// signature signs "<path>[?<query>]\n" and a form body only, so a signed
// GET of that path, read anywhere, would otherwise pass for the write with
// an empty form body (POST /v1/accounts creates an account and answers
// its keys).
func (s *Server) hasGetTwin(r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return false
	}
	g := r.Clone(r.Context())
	g.Method = http.MethodGet
	_, pattern := s.mux.Handler(g)
	return pattern != ""
}

// bindAccount puts the enabled account of ak in c once the caller is
// authenticated (by signature or by console session), refusing a
// non-root account where rl asks for root.
func (s *Server) bindAccount(ctx context.Context, c *call, ak string, rl role) error {
	acct, err := s.accountByAK(ctx, ak)
	if err != nil {
		if errors.Is(err, errNoAccount) {
			return errf(http.StatusUnauthorized, "unknown or disabled access key")
		}
		return err
	}
	if rl == roleRoot && !acct.Root {
		return errf(http.StatusForbidden, "only the root account may do this")
	}
	c.acct = acct
	return nil
}

func (s *Server) logError(r *http.Request, err error) {
	var ae *apiError
	if errors.As(err, &ae) && ae.Status < 500 {
		return
	}
	reqid := ""
	if info, ok := r.Context().Value(accessKey{}).(*accessInfo); ok {
		reqid = info.reqid
	}
	s.log.Error("admin: request failed", "path", r.URL.Path, "reqid", reqid, "err", err)
}

// writeError writes err as {"error": msg} with its status; errors that are
// not apiErrors are 500 (store conflicts that survived retries: 409, a
// full disk: 507).
func writeError(w http.ResponseWriter, err error) {
	status, msg := http.StatusInternalServerError, "internal error"
	var ae *apiError
	var re *RuleError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		status, msg = ae.Status, ae.Msg
	case errors.As(err, &re):
		status, msg = http.StatusBadRequest, re.Msg
		switch {
		case errors.Is(re.Kind, ErrOverLimit):
			status = http.StatusForbidden
		case errors.Is(re.Kind, ErrNotReady):
			status = http.StatusConflict
		}
	case errors.As(err, &mbe):
		status, msg = http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", mbe.Limit)
	case errors.Is(err, store.ErrConflict):
		status, msg = http.StatusConflict, "concurrent update, retry"
	case errors.Is(err, context.Canceled):
		status, msg = 499, "request canceled"
	case errors.Is(err, store.ErrClosed):
		status, msg = http.StatusServiceUnavailable, "metadata store closed"
	case errors.Is(err, accounts.ErrLookup):
		status, msg = http.StatusServiceUnavailable, "metadata store unavailable, retry later"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		// A full disk is the server's condition, not a bug: say so, so
		// that clients and operators know to retry later or free space.
		status, msg = http.StatusInsufficientStorage, "insufficient storage: the server's disk is full"
	}
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// decode reads the signed JSON request body into v (the middleware kept
// only a body the signature covers); an empty body leaves v as is.
func (c *call) decode(r *http.Request, v any) error {
	if len(bytes.TrimSpace(c.body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(c.body, v); err != nil {
		return errf(http.StatusBadRequest, "bad JSON body: %v", err)
	}
	return nil
}
