package pfop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/accounts"
	"github.com/doraproject/dora/admin/rs"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/qhttp"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/origin/local"
)

// PutPolicy is the upload policy of a Qiniu upload token (the fields Dora
// honours; an unknown field is ignored, callbackUrl is refused).
type PutPolicy struct {
	// Scope is "<bucket>" (new keys only) or "<bucket>:<key>" (that key,
	// overwriting it unless InsertOnly); with IsPrefixalScope the key part
	// is a prefix of the allowed keys.
	Scope           string `json:"scope"`
	IsPrefixalScope int    `json:"isPrefixalScope,omitempty"`
	// Deadline is the unix second after which the token is refused.
	Deadline   int64 `json:"deadline"`
	InsertOnly int   `json:"insertOnly,omitempty"`
	// ReturnBody is the reply template: $(key) $(etag) $(persistentId)
	// and saveKey's magic variables ($(fsize) $(mimeType) $(bucket)
	// $(fname) $(fprefix) $(ext) $(endUser) $(uuid) $(year).. $(x:<name>)).
	ReturnBody string `json:"returnBody,omitempty"`
	// ReturnURL turns a form upload's success into a 303 See Other to
	// <returnUrl>?upload_ret=<urlsafe base64 of the reply> (browsers).
	ReturnURL string `json:"returnUrl,omitempty"`
	// FsizeLimit bounds the file's size in bytes (413 beyond it).
	FsizeLimit int64 `json:"fsizeLimit,omitempty"`
	// FsizeMin is the least size of the file in bytes (403 under it).
	FsizeMin int64 `json:"fsizeMin,omitempty"`
	// MimeLimit is "a/b;c/*" (allowed types) or "!a/b;!c/*" (refused types).
	MimeLimit string `json:"mimeLimit,omitempty"`
	// DetectMime: above 0 the file's type is detected from its content
	// (then its name), whatever the client declares; 0 the declared type
	// unless it is absent or application/octet-stream; below 0 the
	// declared type as it is (detected only when absent).
	DetectMime int `json:"detectMime,omitempty"`
	// PersistentOps queues a pfop on the uploaded object.
	PersistentOps       string `json:"persistentOps,omitempty"`
	PersistentNotifyURL string `json:"persistentNotifyUrl,omitempty"`
	PersistentPipeline  string `json:"persistentPipeline,omitempty"`
	PersistentType      int    `json:"persistentType,omitempty"`
	CallbackURL         string `json:"callbackUrl,omitempty"`
	// SaveKey names the object when the upload names none (the scope's
	// key counts as named), or always with ForceSaveKey: a template of
	// magic variables (saveKey), expanded once the file is stored.
	SaveKey      string   `json:"saveKey,omitempty"`
	ForceSaveKey flexBool `json:"forceSaveKey,omitempty"`
	// EndUser is $(endUser) in saveKey and returnBody.
	EndUser string `json:"endUser,omitempty"`
	// DeleteAfterDays and FileType are the stored object's lifecycle and
	// storage class, as rs's deleteAfterDays and chtype set them.
	DeleteAfterDays int `json:"deleteAfterDays,omitempty"`
	FileType        int `json:"fileType,omitempty"`
}

// flexBool is a JSON boolean that also reads 0 and 1 (the put policy's
// other flags, insertOnly and isPrefixalScope, are numbers).
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	switch string(data) {
	case "true", "1":
		*b = true
	case "false", "0", "null":
		*b = false
	default:
		return fmt.Errorf("want true or false, not %s", data)
	}
	return nil
}

// UploadToken makes "<AK>:<sign>:<urlsafe_base64(policy JSON)>", sign =
// urlsafe_base64(hmac_sha1(SK, encoded policy)), as the Qiniu SDKs do.
func UploadToken(ak, sk string, p PutPolicy) string {
	b, _ := json.Marshal(p)
	enc := auth.URLSafeBase64(b)
	return ak + ":" + auth.HMACSHA1(sk, []byte(enc)) + ":" + enc
}

// Upload limits.
const (
	maxFieldBytes = 64 << 10
	maxFields     = 256
	maxTokenBytes = 16 << 10
)

// uploadError is a refused upload: status and message.
type uploadError struct {
	status int
	msg    string
}

func (e *uploadError) Error() string { return e.msg }

func uerr(status int, format string, args ...any) *uploadError {
	return &uploadError{status: status, msg: fmt.Sprintf(format, args...)}
}

// Statuses of the form upload, as Qiniu answers them.
const (
	StatusFileExists = 614
	StatusNoBucket   = 631
)

// badUploadToken answers a token whose sign does not verify, or whose
// access key is unknown or disabled: the same text for both.
const badUploadToken = "bad token: signature mismatch (unknown or disabled access key, wrong secret key, or a policy changed after it was signed)"

// verifyUploadToken checks the token's sign and deadline and returns the
// account's id with the decoded policy.
func (h *Handler) verifyUploadToken(ctx context.Context, token string) (ownerID string, p PutPolicy, _ *uploadError) {
	if token == "" {
		return "", p, uerr(http.StatusUnauthorized, "upload token is required")
	}
	if len(token) > maxTokenBytes {
		return "", p, uerr(http.StatusUnauthorized, "bad token: too long")
	}
	parts := strings.Split(token, ":")
	if len(parts) != 3 || parts[0] == "" {
		return "", p, uerr(http.StatusUnauthorized, "bad token: want <AK>:<sign>:<policy>")
	}
	ak, sign, enc := parts[0], parts[1], parts[2]
	// An unknown or disabled AK is answered like a wrong sign (Qiniu: 401
	// "bad token" to both), so that the answer does not tell which access
	// keys exist; a store outage is a 503.
	acct, err := h.accountByAK(ctx, ak)
	if errors.Is(err, accounts.ErrLookup) {
		return "", p, uerr(http.StatusServiceUnavailable, "metadata store unavailable, retry later")
	}
	if err != nil {
		return "", p, uerr(http.StatusUnauthorized, badUploadToken)
	}
	want := auth.HMACSHA1(acct.SecretKey, []byte(enc))
	if !hmac.Equal([]byte(want), []byte(sign)) {
		return "", p, uerr(http.StatusUnauthorized, badUploadToken)
	}
	raw, err := base64.URLEncoding.DecodeString(enc)
	if err != nil {
		raw, err = base64.RawURLEncoding.DecodeString(enc)
	}
	if err != nil {
		return "", p, uerr(http.StatusUnauthorized, "bad token: policy is not URL-safe base64")
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return "", p, uerr(http.StatusUnauthorized, "bad token: policy: %v", err)
	}
	if p.Deadline <= 0 {
		return "", p, uerr(http.StatusUnauthorized, "bad token: policy has no deadline")
	}
	if h.cfg.Now().Unix() > p.Deadline {
		return "", p, uerr(http.StatusUnauthorized, "expired token")
	}
	if p.CallbackURL != "" {
		return "", p, uerr(http.StatusBadRequest, "callbackUrl is not supported")
	}
	return acct.ID, p, nil
}

// keyInScope says whether the policy's scope admits key.
func keyInScope(p PutPolicy, key string) bool {
	_, sk, hasKey := strings.Cut(p.Scope, ":")
	switch {
	case !hasKey:
		return true
	case p.IsPrefixalScope != 0:
		return strings.HasPrefix(key, sk)
	}
	return key == sk
}

// scopeKey checks key against the policy's scope and returns the bucket,
// the key to write (the scope's own when the form names none) and whether
// only a new key may be written.
func scopeKey(p PutPolicy, key string, keyGiven bool) (bucket, outKey string, insertOnly bool, _ *uploadError) {
	bucket, sk, hasKey := strings.Cut(p.Scope, ":")
	if bucket == "" {
		return "", "", false, uerr(http.StatusUnauthorized, "bad token: empty scope")
	}
	insertOnly = p.InsertOnly != 0
	switch {
	case !hasKey:
		insertOnly = true // scope "bucket": new keys only
	case p.IsPrefixalScope != 0:
		if !keyGiven || !strings.HasPrefix(key, sk) {
			return "", "", false, uerr(http.StatusForbidden, "key doesn't match with scope")
		}
	case !keyGiven:
		key, keyGiven = sk, true
	case key != sk:
		return "", "", false, uerr(http.StatusForbidden, "key doesn't match with scope")
	}
	return bucket, key, insertOnly, nil
}

// mimeAllowed applies a mimeLimit.
func mimeAllowed(limit, mt string) bool {
	if limit == "" {
		return true
	}
	mt = strings.ToLower(mt)
	deny := strings.HasPrefix(strings.TrimSpace(limit), "!")
	for pat := range strings.SplitSeq(limit, ";") {
		pat = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(pat), "!")))
		if pat == "" {
			continue
		}
		if ok, _ := path.Match(pat, mt); ok {
			return !deny
		}
	}
	return deny
}

// errTooLarge is what a capped upload body fails with.
var errTooLarge = qhttp.ErrTooLarge

// uploaded is what the reply template can name: magic holds the values
// of the variables it shares with saveKey (the saveKey's own $(uuid)).
type uploaded struct {
	bucket, key, etag, mimeType, fname, persistentID string
	fsize                                            int64
	magic                                            saveKeyValues
}

func (h *Handler) serveUpload(w http.ResponseWriter, r *http.Request, reqid string) int {
	if r.Method != http.MethodPost {
		return writeError(w, http.StatusMethodNotAllowed, "use POST")
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		return writeError(w, http.StatusBadRequest, "want a multipart/form-data body")
	}
	boundary := params["boundary"]
	if boundary == "" {
		return writeError(w, http.StatusBadRequest, "multipart: no multipart boundary param in Content-Type")
	}
	body := &closeWatch{r: http.MaxBytesReader(w, r.Body, h.cfg.MaxUploadBytes+1<<20), delim: []byte("\n--" + boundary + "--")}
	form := &uploadForm{mr: multipart.NewReader(body, boundary), body: body, fields: map[string]string{}}
	for {
		part, ue := form.next()
		if ue != nil {
			return writeError(w, ue.status, ue.msg)
		}
		if part == nil {
			return writeError(w, http.StatusBadRequest, "no file field")
		}
		if part.FormName() == "file" {
			t, up, ue := h.receiveFile(r.Context(), form, part)
			if ue != nil {
				return writeError(w, ue.status, ue.msg)
			}
			return h.replyUpload(w, r, reqid, t, up, form.fields, t.policy.ReturnURL)
		}
		if ue := form.field(part); ue != nil {
			return writeError(w, ue.status, ue.msg)
		}
	}
}

// uploadForm is the multipart body of a form upload, read part by part:
// the fields read so far (the last of a repeated name wins) and how many
// parts.
type uploadForm struct {
	mr     *multipart.Reader
	body   *closeWatch
	fields map[string]string
	parts  int
}

// next is the form's next part, nil at its end: the close delimiter, else
// the body stopped before the form was complete (400).
func (f *uploadForm) next() (*multipart.Part, *uploadError) {
	part, err := f.mr.NextPart()
	if err == io.EOF {
		if !f.body.seen {
			return nil, uerr(http.StatusBadRequest, "multipart: the body ends before the form's closing delimiter")
		}
		return nil, nil
	}
	if err != nil {
		return nil, bodyErr(err)
	}
	f.parts++
	if f.parts > maxFields+1 {
		part.Close()
		return nil, uerr(http.StatusBadRequest, "too many form fields")
	}
	return part, nil
}

// field reads a part that is not the file into fields.
func (f *uploadForm) field(part *multipart.Part) *uploadError {
	defer part.Close()
	name := part.FormName()
	b, err := io.ReadAll(io.LimitReader(part, maxFieldBytes+1))
	if err != nil {
		return bodyErr(err)
	}
	if len(b) > maxFieldBytes {
		return uerr(http.StatusBadRequest, "field %q over %d bytes", name, maxFieldBytes)
	}
	f.fields[name] = string(b)
	return nil
}

// bodyErr is the answer to a form whose body could not be read: 413 past
// the body's cap, else 400 (broken multipart, the body stopped).
func bodyErr(err error) *uploadError {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return uerr(http.StatusRequestEntityTooLarge, "request body too large")
	}
	return uerr(http.StatusBadRequest, "multipart: %v", err)
}

// closeWatch passes a multipart body through and notes whether its close
// delimiter ("--<boundary>--" at a line's start) went by: Go's
// multipart.Reader answers io.EOF, as at the form's end, when the body
// stops right after a delimiter line or inside a part's headers, so its
// io.EOF alone does not say the form was complete. (The delimiter cannot
// occur inside a part: the reader would end the part there.)
type closeWatch struct {
	r     io.Reader
	delim []byte // "\n--<boundary>--"
	tail  []byte // the last len(delim)-1 bytes read, "\n" at first
	join  []byte // scratch: tail + the start of a read
	seen  bool
}

func (c *closeWatch) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.seen || n == 0 {
		return n, err
	}
	if c.tail == nil {
		c.tail = []byte{'\n'} // a delimiter opening the body
	}
	k := len(c.delim) - 1
	c.join = append(append(c.join[:0], c.tail...), p[:min(n, k)]...)
	if bytes.Contains(c.join, c.delim) || bytes.Contains(p[:n], c.delim) {
		c.seen = true
		return n, err
	}
	c.join = append(append(c.join[:0], c.tail...), p[max(0, n-k):n]...)
	c.tail = append(c.tail[:0], c.join[max(0, len(c.join)-k):]...)
	return n, err
}

// replyUpload finishes a stored upload, whichever way it arrived (form,
// resumable v1 or v2): queues the policy's persistentOps and answers with
// the returnBody template, else {"hash","key"[,"persistentId"]}; with a
// returnURL (the form upload's returnUrl) that reply goes, in URL-safe
// base64, as upload_ret in a 303 See Other there.
func (h *Handler) replyUpload(w http.ResponseWriter, r *http.Request, reqid string, t uploadTarget, up *uploaded, vars map[string]string, returnURL string) int {
	pol := t.policy
	reply := map[string]any{"hash": up.etag, "key": up.key}
	if pol.PersistentOps != "" {
		// The file is stored: its job is queued even if the client has gone.
		j, err := h.Submit(context.WithoutCancel(r.Context()), Submission{
			Bucket: up.bucket, Key: up.key, Fops: pol.PersistentOps, NotifyURL: pol.PersistentNotifyURL,
			Pipeline: pol.PersistentPipeline, Type: pol.PersistentType, Owner: t.owner, Reqid: reqid,
		})
		if err != nil {
			return writeError(w, http.StatusServiceUnavailable, "file stored, but its persistentOps could not be queued: "+err.Error())
		}
		up.persistentID = j.ID
		reply["persistentId"] = j.ID
	}
	if returnURL != "" {
		var ret []byte
		if pol.ReturnBody != "" {
			ret = []byte(expandReturnBody(pol.ReturnBody, up, vars))
		} else {
			ret, _ = json.Marshal(reply)
		}
		sep := "?"
		if strings.Contains(returnURL, "?") {
			sep = "&"
		}
		w.Header().Set("Location", returnURL+sep+"upload_ret="+base64.URLEncoding.EncodeToString(ret))
		w.WriteHeader(http.StatusSeeOther)
		return http.StatusSeeOther
	}
	if pol.ReturnBody != "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, expandReturnBody(pol.ReturnBody, up, vars))
		return http.StatusOK
	}
	return writeJSON(w, http.StatusOK, reply)
}

// uploadTarget is where an upload token lets a file go: the token's
// account and policy, the bucket (and when its record was created: the
// bucket the upload was admitted to, see rs.Target), the key ("" when
// it is known only once the file is stored: the saveKey's expansion, else
// the file's etag) and whether only a new key may be written.
type uploadTarget struct {
	owner      string
	policy     PutPolicy
	bucket     string
	created    time.Time
	key        string
	saveKey    saveKey // the key's template, when key is ""
	insertOnly bool
}

// Bounds of the policy's deleteAfterDays (rs's) and fileType.
const (
	maxDeleteAfterDays = 100000
	maxFileType        = 3
)

// policyKey applies saveKey and forceSaveKey to the key the client names
// (Qiniu's rule: the client's key, else the scope's, else saveKey's, else
// the etag; forceSaveKey: saveKey's whatever the client names). It
// returns the parsed template when the key is saveKey's and has
// variables; a saveKey of literal text only is returned as the key, given.
func policyKey(pol PutPolicy, key string, keyGiven bool) (saveKey, string, bool, *uploadError) {
	if pol.SaveKey == "" {
		if pol.ForceSaveKey {
			return nil, "", false, uerr(http.StatusBadRequest, "forceSaveKey: the policy has no saveKey")
		}
		return nil, key, keyGiven, nil
	}
	tmpl, err := parseSaveKey(pol.SaveKey)
	if err != nil {
		return nil, "", false, uerr(http.StatusBadRequest, "saveKey: %v", err)
	}
	_, _, exact := strings.Cut(pol.Scope, ":")
	exact = exact && pol.IsPrefixalScope == 0
	if !bool(pol.ForceSaveKey) && (keyGiven || exact) {
		return nil, key, keyGiven, nil
	}
	if lit, ok := tmpl.static(); ok {
		if err := dora.ValidateKey(lit); err != nil {
			return nil, "", false, uerr(http.StatusBadRequest, "saveKey: invalid key: %v", err)
		}
		return nil, lit, true, nil
	}
	return tmpl, "", false, nil
}

// checkUpload verifies the token and applies its policy to the key the
// client names (keyGiven false: none): scope, the bucket's existence and
// owner, and persistentOps, refused before anything is stored. Every
// upload path (form, resumable v1 and v2) goes through it.
func (h *Handler) checkUpload(ctx context.Context, token, key string, keyGiven bool) (uploadTarget, *uploadError) {
	owner, pol, ue := h.verifyUploadToken(ctx, token)
	if ue != nil {
		return uploadTarget{}, ue
	}
	if pol.FileType < 0 || pol.FileType > maxFileType {
		return uploadTarget{}, uerr(http.StatusBadRequest, "fileType: 0 (standard), 1 (infrequent), 2 (archive) or 3 (deep archive), not %d", pol.FileType)
	}
	if pol.DeleteAfterDays < 0 || pol.DeleteAfterDays > maxDeleteAfterDays {
		return uploadTarget{}, uerr(http.StatusBadRequest, "deleteAfterDays: 0 (none) to %d, not %d", maxDeleteAfterDays, pol.DeleteAfterDays)
	}
	tmpl, key, keyGiven, ue := policyKey(pol, key, keyGiven)
	if ue != nil {
		return uploadTarget{}, ue
	}
	var bucket string
	var insertOnly bool
	if tmpl != nil { // the scope is checked against the expanded key
		bucket, _, _ = strings.Cut(pol.Scope, ":")
		if bucket == "" {
			return uploadTarget{}, uerr(http.StatusUnauthorized, "bad token: empty scope")
		}
		insertOnly = pol.InsertOnly != 0 || !strings.Contains(pol.Scope, ":")
	} else if bucket, key, insertOnly, ue = scopeKey(pol, key, keyGiven); ue != nil {
		return uploadTarget{}, ue
	}
	if keyGiven || key != "" {
		if key == "" || len(key) > MaxJobKeyByte {
			return uploadTarget{}, uerr(http.StatusBadRequest, "key must be 1 to %d bytes", MaxJobKeyByte)
		}
		if ue := reservedKey(key); ue != nil {
			return uploadTarget{}, ue
		}
	}
	if err := dora.ValidateBucketName(bucket); err != nil {
		return uploadTarget{}, uerr(StatusNoBucket, "no such bucket")
	}
	b, _, err := store.Get[dora.Bucket](ctx, h.cfg.Store, store.BucketKey(bucket))
	if errors.Is(err, store.ErrNotFound) {
		return uploadTarget{}, uerr(StatusNoBucket, "no such bucket")
	} else if err != nil {
		return uploadTarget{}, uerr(http.StatusServiceUnavailable, "metadata store: %v", err)
	}
	if b.Owner != owner {
		return uploadTarget{}, uerr(http.StatusForbidden, "bucket %q is not the token owner's", bucket)
	}
	if pol.PersistentOps != "" { // refuse before storing anything
		check := ParseFops
		if key != "" { // the job's input is known: plan its pipelines
			check = func(fops string) ([]string, error) { return planFops(bucket, key, fops) }
		}
		if _, err := check(pol.PersistentOps); err != nil {
			return uploadTarget{}, uerr(http.StatusBadRequest, "persistentOps: %v", err)
		}
		if pol.PersistentPipeline != "" {
			if err := ValidatePipeline(pol.PersistentPipeline); err != nil {
				return uploadTarget{}, uerr(http.StatusBadRequest, "persistentPipeline: %v", err)
			}
		}
		if pol.PersistentNotifyURL != "" {
			if err := h.notify.CheckURL(pol.PersistentNotifyURL); err != nil {
				return uploadTarget{}, uerr(http.StatusBadRequest, "persistentNotifyUrl: %v", err)
			}
		}
	}
	return uploadTarget{owner: owner, policy: pol, bucket: bucket, created: b.Created, key: key, saveKey: tmpl, insertOnly: insertOnly}, nil
}

// target is the bucket t's upload was admitted to (rs.Target): the
// guards of rs check it again before and after the object appears.
func (t uploadTarget) target() rs.Target {
	return rs.Target{Bucket: t.bucket, Owner: t.owner, Created: t.created}
}

// bucketErr is the answer to an error of rs's bucket guards (rs.Guard,
// rs.Target, rs.MoveTemp): 631 when the bucket went (rs.ErrBucketGone),
// 500 when a keyless upload's temporary went missing from a bucket still
// there (rs.ErrTempLost), 614 and 400 for an insert-only key holding
// other content and a bad key, else 503 (the metadata or object store
// failed; err says how).
func bucketErr(err error) *uploadError {
	switch {
	case errors.Is(err, rs.ErrBucketGone):
		return uerr(StatusNoBucket, "%v", err)
	case errors.Is(err, rs.ErrTempLost):
		return uerr(http.StatusInternalServerError, "%v: upload it again", err)
	case errors.Is(err, origin.ErrExists):
		return uerr(StatusFileExists, "file exists")
	case errors.Is(err, origin.ErrBadKey):
		return uerr(http.StatusBadRequest, "invalid key: %v", err)
	}
	return uerr(http.StatusServiceUnavailable, "%v", err)
}

// receiveFile checks the token and policy (fields before the file carry
// them) and streams the file into the bucket. The parts after the file
// are read before the store commits it (formFile): a form that turns out
// bad there stores nothing.
func (h *Handler) receiveFile(ctx context.Context, form *uploadForm, part *multipart.Part) (uploadTarget, *uploaded, *uploadError) {
	key, keyGiven := form.fields["key"]
	t, ue := h.checkUpload(ctx, form.fields["token"], key, keyGiven)
	if ue != nil {
		return t, nil, ue
	}
	if ru := t.policy.ReturnURL; ru != "" {
		if u, err := url.Parse(ru); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
			return t, nil, uerr(http.StatusBadRequest, "returnUrl: want an http or https URL without a fragment, not %q", ru)
		}
	}
	f := &formFile{part: part, form: form, crc: crc32.NewIEEE(), token: form.fields["token"], key: key, keyGiven: keyGiven}
	if v := form.fields["crc32"]; v != "" { // the SDKs send the file's CRC32 (IEEE, decimal)
		want, ue := parseCRC32(v)
		if ue != nil {
			return t, nil, ue
		}
		f.crcBefore, f.crcWanted = want, true
	}
	up, ue := h.storeUpload(ctx, t, f, part.Header.Get("Content-Type"), part.FileName(), form.fields)
	if f.failed != nil { // the form's own fault, whatever the store made of it
		return t, nil, f.failed
	}
	return t, up, ue
}

func parseCRC32(v string) (uint32, *uploadError) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, uerr(http.StatusBadRequest, "crc32: %q is not a decimal CRC32", v)
	}
	return uint32(n), nil
}

// formFile is the file part of a form upload as the store reads it. At
// the file's end it reads the rest of the form (fields only, up to the
// close delimiter) and checks the file's CRC32 against the crc32 fields
// before and after it; only then does it answer io.EOF, which lets the
// store commit the object (origin.Writer.Put makes an object visible only
// once r is read to its end). Any fault, in the file or after it, ends the
// file with that error instead, and the store keeps nothing. A token or
// key after the file must repeat the one the file was checked against.
type formFile struct {
	part      *multipart.Part
	form      *uploadForm
	crc       hash.Hash32
	crcBefore uint32 // the crc32 field before the file, when crcWanted
	crcWanted bool
	token     string // the token and key the upload was checked with
	key       string
	keyGiven  bool
	end       error        // what every Read answers once set
	failed    *uploadError // the fault, when end is not io.EOF
}

func (f *formFile) Read(p []byte) (int, error) {
	if f.end != nil {
		return 0, f.end
	}
	n, err := f.part.Read(p)
	f.crc.Write(p[:n])
	switch {
	case err == io.EOF:
		f.failed = f.finish()
	case err != nil:
		f.failed = bodyErr(err)
	default:
		return n, nil
	}
	if f.failed != nil {
		f.end = f.failed
	} else {
		f.end = io.EOF
	}
	return n, f.end
}

// finish checks the form once the file has ended.
func (f *formFile) finish() *uploadError {
	sum := f.crc.Sum32()
	if f.crcWanted && sum != f.crcBefore {
		return uerr(http.StatusNotAcceptable, "crc32 not match")
	}
	for {
		part, ue := f.form.next()
		if ue != nil {
			return ue
		}
		if part == nil {
			break
		}
		if part.FormName() == "file" {
			part.Close()
			return uerr(http.StatusBadRequest, "more than one file")
		}
		if ue := f.form.field(part); ue != nil {
			return ue
		}
	}
	fields := f.form.fields
	if fields["token"] != f.token {
		return uerr(http.StatusBadRequest, "the token must come before the file")
	}
	if key, given := fields["key"]; given != f.keyGiven || key != f.key {
		return uerr(http.StatusBadRequest, "the key must come before the file")
	}
	if v := fields["crc32"]; v != "" {
		want, ue := parseCRC32(v)
		if ue != nil {
			return ue
		}
		if sum != want {
			return uerr(http.StatusNotAcceptable, "crc32 not match")
		}
	}
	return nil
}

// storeUpload streams src into the target under the policy's mimeLimit,
// fsizeLimit and fsizeMin: declared is the client's MIME type (sniffed
// from the first 512 bytes of content, then fname, when empty or
// application/octet-stream, or always under detectMime), vars the
// upload's x: variables (read once src has ended). A keyless target is
// written to a temporary object, then stored under its saveKey's
// expansion, else its etag; the stored object gets the policy's fileType
// and deleteAfterDays (an overwritten object's are replaced).
func (h *Handler) storeUpload(ctx context.Context, t uploadTarget, src io.Reader, declared, fname string, vars map[string]string) (*uploaded, *uploadError) {
	pol := t.policy
	br := bufio.NewReaderSize(src, 512)
	head, _ := br.Peek(512)
	mt := declared
	base, _, err := mime.ParseMediaType(mt)
	unknown := err != nil || base == "" || base == "application/octet-stream"
	if pol.DetectMime > 0 || (pol.DetectMime == 0 && unknown) || strings.TrimSpace(declared) == "" {
		mt = http.DetectContentType(head)
		if byExt := mime.TypeByExtension(path.Ext(fname)); byExt != "" && strings.HasPrefix(mt, "application/octet-stream") {
			mt = byExt
		}
	}
	if !mimeAllowed(pol.MimeLimit, mediaType(mt)) {
		return nil, uerr(http.StatusForbidden, "limited mimeType: %s", mediaType(mt))
	}
	limit := h.uploadLimit(pol)
	lr := qhttp.Cap(br, limit)
	key := t.key
	if key != "" {
		if ue := metaFits(pol, t.bucket, key); ue != nil {
			return nil, ue
		}
	}
	target := key
	if target == "" { // the key (saveKey's, else the etag) is known only once stored
		// Hidden from listings; one a crash leaves behind is removed by
		// the leader's rs.Expirer (rs.DecideTemp).
		target = rs.TempKey()
	}
	var body io.Reader = lr
	if pol.FsizeMin > 0 {
		body = &minSizeReader{r: lr, min: pol.FsizeMin}
	}
	var sent *local.Hasher // insert-only: the etag of what was sent
	if t.insertOnly && key != "" {
		sent = local.NewHasher()
		body = io.TeeReader(body, sent)
	}
	var g *rs.Guard // a keyed upload writes its key: checked at the file's end
	if key != "" {
		g = rs.NewGuard(ctx, h.cfg.Store, t.target(), body)
		body = g
	}
	obj, err := h.cfg.Objects.Put(ctx, t.bucket, target, body, origin.PutOptions{MimeType: mt, InsertOnly: t.insertOnly})
	unchanged := false // an insert-only upload of what the key holds: nothing written
	if errors.Is(err, origin.ErrExists) && sent != nil {
		// Qiniu's insert-only mode fails only on other content: the same
		// bytes again (a retry whose first reply was lost) succeed.
		obj, err = h.sameContent(ctx, t.bucket, key, body, sent, err)
		unchanged = err == nil
		if unchanged {
			if err := g.Verify(); err != nil { // read to its end: checked already
				return nil, bucketErr(err)
			}
		}
	}
	switch {
	case g != nil && g.Failed() != nil:
		return nil, bucketErr(g.Failed())
	case errors.Is(err, errTooLarge):
		return nil, uerr(http.StatusRequestEntityTooLarge, "exceed FsizeLimit of %d bytes", limit)
	case errors.Is(err, errTooSmall):
		return nil, uerr(http.StatusForbidden, "fsize too small: fsizeMin is %d bytes", pol.FsizeMin)
	case errors.Is(err, origin.ErrExists):
		return nil, uerr(StatusFileExists, "file exists")
	case errors.Is(err, origin.ErrBadKey):
		return nil, uerr(http.StatusBadRequest, "invalid key: %v", err)
	case err != nil:
		return nil, uerr(http.StatusServiceUnavailable, "store the file: %v", err)
	}
	magic := saveKeyValues{
		bucket: t.bucket, etag: obj.ETag, fname: fname, mimeType: mediaType(mt), endUser: pol.EndUser,
		fsize: obj.Size, now: h.cfg.Now(), vars: vars,
	}
	if key == "" {
		defer h.cfg.Objects.Delete(context.WithoutCancel(ctx), t.bucket, target)
		key = obj.ETag
		if t.saveKey != nil {
			var ue *uploadError
			if key, ue = h.expandSaveKey(t, &magic); ue != nil {
				return nil, ue
			}
		}
		// Copied through a guard: the bucket is checked at the copy's
		// end, before the key can appear. A temporary gone before it is
		// copied is 631 when the bucket went with it (a bucket's delete
		// removes its temporaries), else 500: nothing is stored.
		if unchanged, err = rs.MoveTemp(ctx, h.cfg.Store, h.cfg.Objects, t.target(), target, key, obj.ETag, mt, t.insertOnly); err != nil {
			if errors.Is(err, rs.ErrTempLost) {
				h.log.Warn("upload: its temporary went missing before it was stored under its key", "bucket", t.bucket, "err", err)
			}
			return nil, bucketErr(err)
		}
	}
	// The bucket was checked at the file's end, before the object could
	// appear (rs.Guard); one deleted (and created again) between that
	// check and the store's commit has the object now: it is removed, and
	// the upload fails as though it had been deleted before
	// (rs.Target.CheckStored).
	if !unchanged {
		if err := t.target().CheckStored(context.WithoutCancel(ctx), h.cfg.Store, h.cfg.Objects, h.log, key, obj.ETag); err != nil {
			return nil, bucketErr(err)
		}
	}
	// The object an insert-only upload left as it was keeps its own
	// storage class and lifecycle. The object is stored: its record is
	// written even if the client has gone meanwhile.
	if !unchanged {
		meta := rs.ObjectMeta{Type: pol.FileType, DeleteAfterDays: pol.DeleteAfterDays, ETag: obj.ETag}
		if err := rs.SetObjectMeta(context.WithoutCancel(ctx), h.cfg.Store, t.bucket, key, meta, h.cfg.Now()); err != nil {
			return nil, uerr(http.StatusServiceUnavailable, "file stored as %q, but its fileType and deleteAfterDays could not be recorded: %v", key, err)
		}
	}
	return &uploaded{bucket: t.bucket, key: key, etag: obj.ETag, fsize: obj.Size, mimeType: mt, fname: fname, magic: magic}, nil
}

// expandSaveKey is the key of a stored upload whose target has a
// saveKey template: 400 when it expands to an invalid key (or one the
// policy's persistentOps cannot be planned on), 403 when the scope does
// not admit it.
func (h *Handler) expandSaveKey(t uploadTarget, v *saveKeyValues) (string, *uploadError) {
	key := t.saveKey.expandValues(v)
	if err := dora.ValidateKey(key); err != nil {
		return "", uerr(http.StatusBadRequest, "saveKey: invalid key: %v", err)
	}
	if ue := reservedKey(key); ue != nil {
		return "", ue
	}
	if !keyInScope(t.policy, key) {
		return "", uerr(http.StatusForbidden, "key doesn't match with scope: saveKey gives %q", key)
	}
	if ue := metaFits(t.policy, t.bucket, key); ue != nil {
		return "", ue
	}
	if ops := t.policy.PersistentOps; ops != "" { // as checkUpload does for a key known there
		if _, err := planFops(t.bucket, key, ops); err != nil {
			return "", uerr(http.StatusBadRequest, "persistentOps: %v", err)
		}
	}
	return key, nil
}

// reservedKey refuses a key in the namespace of the upload temporaries
// (rs.UploadTempPrefix): an object there could take a temporary's place,
// or, named as the prefix's directory, make every keyless upload fail.
func reservedKey(key string) *uploadError {
	if err := dora.CheckUserKey(key); err != nil {
		return uerr(http.StatusBadRequest, "%v", err)
	}
	return nil
}

// metaFits refuses a fileType or deleteAfterDays for a key too long for
// its record (rs.ObjectMetaKeyOK): 400, before the object is stored.
func metaFits(pol PutPolicy, bucket, key string) *uploadError {
	if (pol.FileType != 0 || pol.DeleteAfterDays != 0) && !rs.ObjectMetaKeyOK(bucket, key) {
		return uerr(http.StatusBadRequest, "fileType, deleteAfterDays: the key is too long for its metadata record (%d bytes with the bucket name; the most is %d)",
			len(store.ObjectMetaKey(bucket, key)), store.MaxKeyBytes)
	}
	return nil
}

// errTooSmall is what a file under the policy's fsizeMin ends with.
var errTooSmall = errors.New("fsize too small")

// minSizeReader passes r through and, at its end, answers errTooSmall
// instead of io.EOF when fewer than min bytes went by: the store then
// keeps nothing.
type minSizeReader struct {
	r      io.Reader
	min, n int64
}

func (m *minSizeReader) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	m.n += int64(n)
	if err == io.EOF && m.n < m.min {
		err = errTooSmall
	}
	return n, err
}

// sameContent is the existing object when the upload refused with
// exists (the insert-only Put's error) holds the same bytes: it reads the
// rest of the upload (body, which tees into sent; Put may have stopped
// early) and compares etags. Otherwise it returns exists, or the error
// met on the way (errTooLarge past the cap).
func (h *Handler) sameContent(ctx context.Context, bucket, key string, body io.Reader, sent *local.Hasher, exists error) (origin.Object, error) {
	if _, err := io.Copy(io.Discard, body); err != nil {
		return origin.Object{}, err
	}
	cur, err := h.cfg.Objects.Stat(ctx, bucket, key)
	if err != nil || cur.ETag != sent.ETag() {
		return origin.Object{}, exists
	}
	return cur, nil
}

// uploadLimit is the most bytes a file may have under pol.
func (h *Handler) uploadLimit(pol PutPolicy) int64 {
	limit := h.cfg.MaxUploadBytes
	if pol.FsizeLimit > 0 && pol.FsizeLimit < limit {
		limit = pol.FsizeLimit
	}
	return limit
}

func mediaType(mt string) string {
	if base, _, err := mime.ParseMediaType(mt); err == nil {
		return base
	}
	return mt
}

var returnVarRE = regexp.MustCompile(`\$\(([A-Za-z0-9_:.-]+)\)`)

// expandReturnBody substitutes the template's variables with JSON-escaped
// values (the template quotes strings itself, as in Qiniu): $(key),
// $(hash), $(persistentId) and those saveKey takes (saveKeyValues.value).
func expandReturnBody(tmpl string, up *uploaded, fields map[string]string) string {
	return returnVarRE.ReplaceAllStringFunc(tmpl, func(m string) string {
		name := m[2 : len(m)-1]
		var v string
		switch name {
		case "key":
			v = up.key
		case "etag", "hash":
			v = up.etag
		case "fsize":
			v = strconv.FormatInt(up.fsize, 10)
		case "mimeType":
			v = up.mimeType
		case "bucket":
			v = up.bucket
		case "fname":
			v = up.fname
		case "persistentId":
			v = up.persistentID
		default:
			if saveKeyVars[name] {
				v = up.magic.value(name)
			} else if strings.HasPrefix(name, "x:") {
				v = fields[name]
			}
		}
		b, _ := json.Marshal(v)
		return string(b[1 : len(b)-1])
	})
}
