// Package auth signs and verifies requests the way Qiniu's SDKs do
// (docs/api.md's Conventions, docs/builtins.md): the QBox and Qiniu management signatures, the
// download token of private URLs, and the saveas sign.
//
// Every signature is urlsafe_base64(hmac_sha1(SK, data)); only what data
// covers differs. Verification compares signatures in constant time.
package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/textproto"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ErrUnauthorized is wrapped by every verification error.
var ErrUnauthorized = errors.New("unauthorized")

// KeyLookup returns the SK of an AK; it returns an error for an unknown or
// disabled AK.
type KeyLookup func(ctx context.Context, ak string) (sk string, err error)

// Content types that decide whether a body is signed.
const (
	ContentTypeForm = "application/x-www-form-urlencoded"
	ContentTypeJSON = "application/json"
)

// MediaType returns the bare, lower-case media type of a Content-Type value
// ("application/json" for "application/json; charset=utf-8"), "" for an
// empty one, and "invalid" for one that does not parse. Both the signing and
// the verifying side decide with it whether a body is signed.
func MediaType(contentType string) string {
	if strings.TrimSpace(contentType) == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return "invalid"
	}
	return mt
}

// ErrQBoxRefused: a QBox signature on a request it cannot protect. QBox
// signs neither the method nor a body other than a form, so it is accepted
// only for GET, HEAD and POST with a form body; it wraps ErrUnauthorized.
var ErrQBoxRefused = fmt.Errorf("%w: QBox signatures cover neither the method nor a non-form body; "+
	"they are accepted for GET, HEAD and application/x-www-form-urlencoded POSTs only: sign this request with the Qiniu form (Authorization: Qiniu <AK>:<sign>)", ErrUnauthorized)

// QBoxAllowed reports whether a request of this method and Content-Type may
// be signed with the QBox form: GET, HEAD, or POST with a form body.
func QBoxAllowed(method, contentType string) bool {
	switch method {
	case http.MethodGet, http.MethodHead:
		return true
	case http.MethodPost:
		return MediaType(contentType) == ContentTypeForm
	}
	return false
}

// DateHeader is the header the Qiniu SDK signs with the request time, in
// DateFormat (UTC).
const (
	DateHeader = "X-Qiniu-Date"
	DateFormat = "20060102T150405Z"
)

// DefaultMaxSkew is the tolerance for X-Qiniu-Date when Verifier.MaxSkew is 0.
const DefaultMaxSkew = 15 * time.Minute

// URLSafeBase64 is standard base64 with '+'→'-' and '/'→'_', padding kept.
func URLSafeBase64(b []byte) string { return base64.URLEncoding.EncodeToString(b) }

// EncodedEntryURI is urlsafe_base64("<bucket>:<key>"), as saveas and pfop take it.
func EncodedEntryURI(bucket, key string) string {
	return URLSafeBase64([]byte(bucket + ":" + key))
}

// HMACSHA1 returns urlsafe_base64(hmac_sha1(sk, data)).
func HMACSHA1(sk string, data []byte) string { return URLSafeBase64(mac(sk, data)) }

func mac(sk string, data []byte) []byte {
	h := hmac.New(sha1.New, []byte(sk))
	h.Write(data)
	return h.Sum(nil)
}

// Authorization schemes.
const (
	SchemeQBox  = "QBox"
	SchemeQiniu = "Qiniu"
)

// signsBody reports whether a signature of scheme over a request of
// contentType covers the body: QBox a form, Qiniu a form or JSON (an empty
// type stands for a form, as the SDK sends one then). Types are compared
// bare (MediaType), on the signing and the verifying side alike.
func signsBody(scheme, contentType string) bool {
	mt := MediaType(contentType)
	switch scheme {
	case SchemeQBox:
		return mt == ContentTypeForm
	case SchemeQiniu:
		return mt == "" || mt == ContentTypeForm || mt == ContentTypeJSON
	}
	return false
}

// BodySigned reports whether a request carrying this Authorization header
// and Content-Type has its body inside the signature (false for a header
// of no known scheme). A server must not act on a body that is not signed.
func BodySigned(authorization, contentType string) bool {
	scheme, _, _ := strings.Cut(authorization, " ")
	return signsBody(scheme, contentType)
}

// qboxData is "<path>[?<query>]\n" + the body when the type is form.
func qboxData(pathQuery, contentType string, body []byte) []byte {
	data := make([]byte, 0, len(pathQuery)+1+len(body))
	data = append(data, pathQuery...)
	data = append(data, '\n')
	if signsBody(SchemeQBox, contentType) {
		data = append(data, body...)
	}
	return data
}

// SignQBox returns the header value "QBox AK:sign" for a request to
// pathQuery ("<path>[?<query>]"); the body counts only for a form (bare
// media type: "; charset=..." parameters do not matter).
func SignQBox(ak, sk string, pathQuery, contentType string, body []byte) string {
	return "QBox " + ak + ":" + HMACSHA1(sk, qboxData(pathQuery, contentType, body))
}

// qiniuData builds the string the Qiniu form signs. An empty contentType
// stands for a form, as the SDK sends one then.
func qiniuData(method, pathQuery, host, contentType string, qiniuHeaders http.Header, body []byte) []byte {
	withBody := signsBody(SchemeQiniu, contentType)
	if contentType == "" {
		contentType = ContentTypeForm
	}
	var b strings.Builder
	b.WriteString(method)
	b.WriteByte(' ')
	b.WriteString(pathQuery)
	b.WriteString("\nHost: ")
	b.WriteString(host)
	b.WriteString("\nContent-Type: ")
	b.WriteString(contentType)
	b.WriteByte('\n')
	type kv struct{ k, v string }
	var hs []kv
	for name, vals := range qiniuHeaders {
		c := textproto.CanonicalMIMEHeaderKey(name)
		if len(c) > len("X-Qiniu-") && strings.HasPrefix(c, "X-Qiniu-") && len(vals) > 0 {
			hs = append(hs, kv{c, vals[0]})
		}
	}
	sort.Slice(hs, func(i, j int) bool {
		if hs[i].k != hs[j].k {
			return hs[i].k < hs[j].k
		}
		return hs[i].v < hs[j].v
	})
	for _, h := range hs {
		b.WriteString(h.k)
		b.WriteString(": ")
		b.WriteString(h.v)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	if withBody {
		b.Write(body)
	}
	return []byte(b.String())
}

// SignQiniu returns the header value "Qiniu AK:sign" over
// "<METHOD> <pathQuery>\nHost: <host>\nContent-Type: <type>\n" + the sorted
// X-Qiniu-* headers + "\n" + the body when the type is form or JSON
// (compared bare: "application/json; charset=utf-8" is JSON; the type line
// holds the header verbatim). An empty contentType is signed as a form (the
// SDK sends one then). Pass a nil body for a body that is not to be signed
// (uploads), whatever its type.
func SignQiniu(ak, sk string, method, pathQuery, host, contentType string, qiniuHeaders http.Header, body []byte) string {
	return "Qiniu " + ak + ":" + HMACSHA1(sk, qiniuData(method, pathQuery, host, contentType, qiniuHeaders, body))
}

func pathQueryOf(req *http.Request) string { return joinPathQuery(req.URL.Path, req.URL.RawQuery) }

func escapedPathQueryOf(req *http.Request) string {
	return joinPathQuery(req.URL.EscapedPath(), req.URL.RawQuery)
}

// joinPathQuery is the "<path>[?<query>]" a signature covers, "/" for an
// empty path.
func joinPathQuery(p, rawQuery string) string {
	if p == "" {
		p = "/"
	}
	if rawQuery != "" {
		return p + "?" + rawQuery
	}
	return p
}

func hostOf(req *http.Request) string {
	if req.Host != "" {
		return req.Host
	}
	return req.URL.Host
}

// SignRequest signs req on the client side with the Qiniu form: it sets
// X-Qiniu-Date to now, Content-Type to a form when none is set (as the SDK
// does), and Authorization. body must be the bytes req will send.
func SignRequest(req *http.Request, ak, sk string, body []byte, now time.Time) {
	req.Header.Set(DateHeader, now.UTC().Format(DateFormat))
	ct := req.Header.Get("Content-Type")
	if ct == "" {
		ct = ContentTypeForm
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Authorization", SignQiniu(ak, sk, req.Method, escapedPathQueryOf(req), hostOf(req), ct, req.Header, body))
}

// SignRequestQBox signs req on the client side with the QBox form.
func SignRequestQBox(req *http.Request, ak, sk string, body []byte) {
	req.Header.Set("Authorization", SignQBox(ak, sk, escapedPathQueryOf(req), req.Header.Get("Content-Type"), body))
}

// Verifier checks management signatures.
type Verifier struct {
	Lookup  KeyLookup
	MaxSkew time.Duration    // tolerance for X-Qiniu-Date; DefaultMaxSkew when 0
	Now     func() time.Time // time.Now when nil
}

func (v Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

func unauthorized(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnauthorized, fmt.Sprintf(format, args...))
}

// parseAuthorization splits "QBox AK:sign" or "Qiniu AK:sign". The sign
// must be URL-safe base64 of a 20-byte HMAC-SHA1.
func parseAuthorization(h string) (scheme, ak string, sign []byte, err error) {
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok {
		return "", "", nil, unauthorized("malformed Authorization header: no scheme")
	}
	if scheme != SchemeQBox && scheme != SchemeQiniu {
		return "", "", nil, unauthorized("unsupported Authorization scheme %q", truncate(scheme))
	}
	ak, s, ok := strings.Cut(cred, ":")
	switch {
	case !ok:
		return "", "", nil, unauthorized("malformed Authorization header: want %s <AK>:<sign>", scheme)
	case ak == "":
		return "", "", nil, unauthorized("malformed Authorization header: empty AK")
	case strings.ContainsAny(ak, " \t\r\n:"):
		return "", "", nil, unauthorized("malformed Authorization header: bad AK")
	}
	sign, err = decodeSign(s)
	if err != nil || len(sign) != sha1.Size {
		return "", "", nil, unauthorized("malformed Authorization header: sign is not a URL-safe base64 HMAC-SHA1")
	}
	return scheme, ak, sign, nil
}

// errSignNewline is decodeSign's error for a sign holding CR or LF.
var errSignNewline = errors.New("sign holds a line break")

// decodeSign decodes a URL-safe base64 sign. Go's decoder skips CR and LF
// even in strict mode, so "ab\ncd" would pass as the sign "abcd": a sign
// is accepted in its one canonical spelling only.
func decodeSign(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, errSignNewline
	}
	return base64.URLEncoding.Strict().DecodeString(s)
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// VerifyHTTP verifies req's Authorization (QBox or Qiniu form) and returns
// the AK. body is the request body when BodySigned says the signature
// covers it (the caller reads it, capped), else nil; a caller must then not
// act on a non-empty body. The signature covers the path exactly as sent
// (escaped, as SignRequest and most SDKs sign it). The decoded path (as the
// Go SDK signs it) is accepted too, but only where decoding is unambiguous:
// when the path as sent escapes no '?', '#', '/' or '%', since a signature
// over "DELETE /v1/objects/b/victim?x=1" made for the key "victim?x=1" must
// not delete the key "victim" when replayed unescaped, nor one over
// "/v1/objects/b/a%20b" (the key "a b", escaped) the key "a%20b" when
// replayed as "/v1/objects/b/a%2520b".
func (v Verifier) VerifyHTTP(ctx context.Context, req *http.Request, body []byte) (string, error) {
	authz := req.Header.Get("Authorization")
	esc := escapedPathQueryOf(req)
	ak, err := v.Verify(ctx, authz, req.Method, esc, hostOf(req), req.Header.Get("Content-Type"), req.Header, body)
	if err == nil || !errors.Is(err, errBadSign) {
		return ak, err
	}
	if dec := pathQueryOf(req); dec != esc && decodedPathUnambiguous(req.URL.EscapedPath()) {
		if ak2, err2 := v.Verify(ctx, authz, req.Method, dec, hostOf(req), req.Header.Get("Content-Type"), req.Header, body); err2 == nil {
			return ak2, nil
		}
	}
	return ak, err
}

// decodedPathUnambiguous reports whether the decoded form of the escaped
// path rawPath names the same request: it escapes none of the delimiters
// '?' (path/query), '#' and '/' (segments), nor '%' (a decoded path holding
// one reads as another, escaped, path).
func decodedPathUnambiguous(rawPath string) bool {
	l := strings.ToLower(rawPath)
	return !strings.Contains(l, "%3f") && !strings.Contains(l, "%23") && !strings.Contains(l, "%2f") &&
		!strings.Contains(l, "%25")
}

// errBadSign is the answer to a management signature that does not verify.
// An unknown or disabled access key gets the same one (keyRefused): Qiniu
// answers 401 "bad token" to both, and a different text would tell an
// attacker which access keys exist.
var errBadSign = fmt.Errorf("%w: bad token: signature mismatch "+
	"(unknown or disabled access key, wrong secret key, or a request changed after it was signed)", ErrUnauthorized)

// Download token and saveas sign refusals, alike for an unknown access key.
var (
	errBadDownloadToken = fmt.Errorf("%w: bad download token "+
		"(unknown or disabled access key, wrong secret key, or a URL changed after it was signed)", ErrUnauthorized)
	errBadSaveAsSign = fmt.Errorf("%w: saveas: bad sign "+
		"(unknown or disabled access key, wrong secret key, or a URL changed after it was signed)", ErrUnauthorized)
)

// refusedKey is a KeyLookup failure shown as the sign's refusal (shown),
// so that an unknown key reads like a wrong secret key. It wraps the
// lookup's error as well, for callers that answer a store outage
// (accounts.ErrLookup) with 503 rather than 401.
type refusedKey struct{ shown, lookup error }

func (e *refusedKey) Error() string   { return e.shown.Error() }
func (e *refusedKey) Unwrap() []error { return []error{e.shown, e.lookup} }

func keyRefused(shown, lookup error) error { return &refusedKey{shown: shown, lookup: lookup} }

// Verify is the transport-neutral form of VerifyHTTP (used by the fasthttp
// router): it checks authorization against the request's parts and returns
// the AK. qiniuHeaders may hold any headers; only X-Qiniu-* ones are signed.
// For the Qiniu form, X-Qiniu-Date, when sent, must be within MaxSkew of now.
// The QBox form is refused with ErrQBoxRefused unless QBoxAllowed(method,
// contentType): it does not sign the method, so a signed GET could
// otherwise be replayed as a DELETE.
func (v Verifier) Verify(ctx context.Context, authorization, method, pathQuery, host, contentType string, qiniuHeaders http.Header, body []byte) (string, error) {
	if authorization == "" {
		return "", unauthorized("missing Authorization header")
	}
	scheme, ak, sign, err := parseAuthorization(authorization)
	if err != nil {
		return "", err
	}
	if scheme == SchemeQiniu {
		if err := v.checkDate(qiniuHeaders); err != nil {
			return "", err
		}
	} else if !QBoxAllowed(method, contentType) {
		return ak, fmt.Errorf("%w (got %s with Content-Type %q)", ErrQBoxRefused, method, truncate(contentType))
	}
	if v.Lookup == nil {
		return "", unauthorized("no key lookup configured")
	}
	sk, err := v.Lookup(ctx, ak)
	if err != nil {
		return "", keyRefused(errBadSign, err)
	}
	var data []byte
	if scheme == SchemeQBox {
		data = qboxData(pathQuery, contentType, body)
	} else {
		data = qiniuData(method, pathQuery, host, contentType, qiniuHeaders, body)
	}
	if !hmac.Equal(mac(sk, data), sign) {
		return ak, errBadSign
	}
	return ak, nil
}

func (v Verifier) checkDate(h http.Header) error {
	vals := h.Values(DateHeader)
	if len(vals) == 0 {
		return nil
	}
	if len(vals) > 1 {
		return unauthorized("more than one %s header", DateHeader)
	}
	t, err := time.Parse(DateFormat, vals[0])
	if err != nil {
		return unauthorized("malformed %s %q: want %s", DateHeader, truncate(vals[0]), DateFormat)
	}
	skew := v.MaxSkew
	if skew <= 0 {
		skew = DefaultMaxSkew
	}
	d := v.now().Sub(t)
	if d > skew || d < -skew {
		return unauthorized("%s %s is more than %s from the server's clock", DateHeader, vals[0], skew)
	}
	return nil
}

// DownloadURL appends "e=<deadline>" (with '&' when baseURL has a query,
// else '?') and "&token=<AK>:<sign>" where sign covers the URL up to and
// including e=.
func DownloadURL(baseURL string, ak, sk string, deadline int64) string {
	sep := "?"
	if strings.Contains(baseURL, "?") {
		sep = "&"
	}
	u := baseURL + sep + "e=" + strconv.FormatInt(deadline, 10)
	return u + "&token=" + ak + ":" + HMACSHA1(sk, []byte(u))
}

// splitToken splits "<AK>:<sign>" and decodes the sign.
func splitToken(token string) (string, []byte, error) {
	ak, s, ok := strings.Cut(token, ":")
	if !ok || ak == "" || s == "" {
		return "", nil, unauthorized("malformed token: want <AK>:<sign>")
	}
	sign, err := decodeSign(s)
	if err != nil || len(sign) != sha1.Size {
		return "", nil, unauthorized("malformed token: sign is not a URL-safe base64 HMAC-SHA1")
	}
	return ak, sign, nil
}

// VerifyDownloadToken checks a private URL's token: deadline not passed at
// now, sign = HMAC-SHA1 over fullURLUpToE (scheme://host/path?...e=<deadline>).
// It returns the AK.
func VerifyDownloadToken(ctx context.Context, lookup KeyLookup, fullURLUpToE, token string, deadline int64, now time.Time) (string, error) {
	ak, sign, err := splitToken(token)
	if err != nil {
		return "", err
	}
	if now.Unix() > deadline {
		return ak, unauthorized("token expired at %d", deadline)
	}
	if !strings.HasSuffix(fullURLUpToE, "e="+strconv.FormatInt(deadline, 10)) {
		return ak, unauthorized("signed URL does not end with e=%d", deadline)
	}
	if lookup == nil {
		return ak, unauthorized("no key lookup configured")
	}
	sk, err := lookup(ctx, ak)
	if err != nil {
		return ak, keyRefused(errBadDownloadToken, err)
	}
	if !hmac.Equal(mac(sk, []byte(fullURLUpToE)), sign) {
		return ak, errBadDownloadToken
	}
	return ak, nil
}

// SaveAsSign returns the saveas sign: urlsafe_base64(hmac_sha1(SK,
// host+path+"?"+query up to, not including, "/sign/")). The scheme is not signed.
func SaveAsSign(sk, hostPathQuery string) string { return HMACSHA1(sk, []byte(hostPathQuery)) }

// VerifySaveAs checks a saveas sign made by ak over hostPathQuery.
func VerifySaveAs(ctx context.Context, lookup KeyLookup, hostPathQuery, ak, sign string) error {
	if ak == "" || sign == "" {
		return unauthorized("saveas: missing sign")
	}
	got, err := decodeSign(sign)
	if err != nil || len(got) != sha1.Size {
		return unauthorized("saveas: sign is not a URL-safe base64 HMAC-SHA1")
	}
	if lookup == nil {
		return unauthorized("no key lookup configured")
	}
	sk, err := lookup(ctx, ak)
	if err != nil {
		return keyRefused(errBadSaveAsSign, err)
	}
	if !hmac.Equal(mac(sk, []byte(hostPathQuery)), got) {
		return errBadSaveAsSign
	}
	return nil
}
