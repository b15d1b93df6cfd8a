package pfop

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"

	dora "github.com/doraproject/dora"
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
	// ReturnBody is the reply template: $(key) $(etag) $(fsize)
	// $(mimeType) $(bucket) $(fname) $(persistentId) $(x:<name>).
	ReturnBody string `json:"returnBody,omitempty"`
	// FsizeLimit bounds the file's size in bytes (413 beyond it).
	FsizeLimit int64 `json:"fsizeLimit,omitempty"`
	// MimeLimit is "a/b;c/*" (allowed types) or "!a/b;!c/*" (refused types).
	MimeLimit string `json:"mimeLimit,omitempty"`
	// PersistentOps queues a pfop on the uploaded object.
	PersistentOps       string `json:"persistentOps,omitempty"`
	PersistentNotifyURL string `json:"persistentNotifyUrl,omitempty"`
	PersistentPipeline  string `json:"persistentPipeline,omitempty"`
	PersistentType      int    `json:"persistentType,omitempty"`
	CallbackURL         string `json:"callbackUrl,omitempty"`
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
	maxFieldBytes   = 64 << 10
	maxFields       = 256
	maxTokenBytes   = 16 << 10
	uploadTmpPrefix = ".dora-upload/"
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
	acct, err := h.accountByAK(ctx, ak)
	if err != nil {
		return "", p, uerr(http.StatusUnauthorized, "bad token: %v", err)
	}
	want := auth.HMACSHA1(acct.SecretKey, []byte(enc))
	if !hmac.Equal([]byte(want), []byte(sign)) {
		return "", p, uerr(http.StatusUnauthorized, "bad token: signature mismatch")
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

// uploaded is what the reply template can name.
type uploaded struct {
	bucket, key, etag, mimeType, fname, persistentID string
	fsize                                            int64
}

func (h *Handler) serveUpload(w http.ResponseWriter, r *http.Request, reqid string) int {
	if r.Method != http.MethodPost {
		return writeError(w, http.StatusMethodNotAllowed, "use POST")
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		return writeError(w, http.StatusBadRequest, "want a multipart/form-data body")
	}
	r.Body = http.MaxBytesReader(w, r.Body, h.cfg.MaxUploadBytes+1<<20)
	mr, err := r.MultipartReader()
	if err != nil {
		return writeError(w, http.StatusBadRequest, "multipart: "+err.Error())
	}
	fields := map[string]string{}
	var up *uploaded
	var t uploadTarget
	for n := 0; ; n++ {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return writeError(w, http.StatusBadRequest, "multipart: "+err.Error())
		}
		if n > maxFields {
			return writeError(w, http.StatusBadRequest, "too many form fields")
		}
		name := part.FormName()
		if name == "file" {
			if up != nil {
				return writeError(w, http.StatusBadRequest, "more than one file")
			}
			var ue *uploadError
			t, up, ue = h.receiveFile(r.Context(), part, fields)
			part.Close()
			if ue != nil {
				return writeError(w, ue.status, ue.msg)
			}
			continue
		}
		b, err := io.ReadAll(io.LimitReader(part, maxFieldBytes+1))
		part.Close()
		if err != nil {
			return writeError(w, http.StatusBadRequest, "multipart: "+err.Error())
		}
		if len(b) > maxFieldBytes {
			return writeError(w, http.StatusBadRequest, fmt.Sprintf("field %q over %d bytes", name, maxFieldBytes))
		}
		fields[name] = string(b)
	}
	if up == nil {
		return writeError(w, http.StatusBadRequest, "no file field")
	}
	return h.replyUpload(w, r, reqid, t, up, fields)
}

// replyUpload finishes a stored upload, whichever way it arrived (form,
// resumable v1 or v2): queues the policy's persistentOps and answers with
// the returnBody template, else {"hash","key"[,"persistentId"]}.
func (h *Handler) replyUpload(w http.ResponseWriter, r *http.Request, reqid string, t uploadTarget, up *uploaded, vars map[string]string) int {
	pol := t.policy
	reply := map[string]any{"hash": up.etag, "key": up.key}
	if pol.PersistentOps != "" {
		j, err := h.Submit(r.Context(), Submission{
			Bucket: up.bucket, Key: up.key, Fops: pol.PersistentOps, NotifyURL: pol.PersistentNotifyURL,
			Pipeline: pol.PersistentPipeline, Type: pol.PersistentType, Owner: t.owner, Reqid: reqid,
		})
		if err != nil {
			return writeError(w, http.StatusServiceUnavailable, "file stored, but its persistentOps could not be queued: "+err.Error())
		}
		up.persistentID = j.ID
		reply["persistentId"] = j.ID
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
// account and policy, the bucket, the key ("" when the key is to be the
// file's etag) and whether only a new key may be written.
type uploadTarget struct {
	owner      string
	policy     PutPolicy
	bucket     string
	key        string
	insertOnly bool
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
	bucket, key, insertOnly, ue := scopeKey(pol, key, keyGiven)
	if ue != nil {
		return uploadTarget{}, ue
	}
	if keyGiven || key != "" {
		if key == "" || len(key) > MaxJobKeyByte {
			return uploadTarget{}, uerr(http.StatusBadRequest, "key must be 1 to %d bytes", MaxJobKeyByte)
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
	return uploadTarget{owner: owner, policy: pol, bucket: bucket, key: key, insertOnly: insertOnly}, nil
}

// receiveFile checks the token and policy (fields before the file carry
// them) and streams the file into the bucket.
func (h *Handler) receiveFile(ctx context.Context, part *multipart.Part, fields map[string]string) (uploadTarget, *uploaded, *uploadError) {
	key, keyGiven := fields["key"]
	t, ue := h.checkUpload(ctx, fields["token"], key, keyGiven)
	if ue != nil {
		return t, nil, ue
	}
	var src io.Reader = part
	if v := fields["crc32"]; v != "" { // the SDKs send the file's CRC32 (IEEE, decimal)
		want, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return t, nil, uerr(http.StatusBadRequest, "crc32: %q is not a decimal CRC32", v)
		}
		src = &crcReader{r: part, h: crc32.NewIEEE(), want: uint32(want)}
	}
	up, ue := h.storeUpload(ctx, t, src, part.Header.Get("Content-Type"), part.FileName())
	return t, up, ue
}

// errCRC32 ends a file whose content does not match the form's crc32.
var errCRC32 = errors.New("crc32 not match")

// crcReader passes r through and, at its end, fails with errCRC32 in
// place of io.EOF when the content's CRC32 is not want: the object store
// then keeps nothing.
type crcReader struct {
	r    io.Reader
	h    hash.Hash32
	want uint32
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	if err == io.EOF && c.h.Sum32() != c.want {
		err = errCRC32
	}
	return n, err
}

// storeUpload streams src into the target under the policy's mimeLimit
// and fsizeLimit: declared is the client's MIME type (sniffed from the
// content and fname when empty or application/octet-stream). A keyless
// target is stored under the file's etag.
func (h *Handler) storeUpload(ctx context.Context, t uploadTarget, src io.Reader, declared, fname string) (*uploaded, *uploadError) {
	pol := t.policy
	br := bufio.NewReaderSize(src, 512)
	head, _ := br.Peek(512)
	mt := declared
	if base, _, err := mime.ParseMediaType(mt); err != nil || base == "" || base == "application/octet-stream" {
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
	target := key
	if target == "" { // no key: the key is the etag, known only once stored
		var rnd [12]byte
		_, _ = rand.Read(rnd[:])
		target = uploadTmpPrefix + hex.EncodeToString(rnd[:])
	}
	var body io.Reader = lr
	var sent *local.Hasher // insert-only: the etag of what was sent
	if t.insertOnly && key != "" {
		sent = local.NewHasher()
		body = io.TeeReader(lr, sent)
	}
	obj, err := h.cfg.Objects.Put(ctx, t.bucket, target, body, origin.PutOptions{MimeType: mt, InsertOnly: t.insertOnly})
	if errors.Is(err, origin.ErrExists) && sent != nil {
		// Qiniu's insert-only mode fails only on other content: the same
		// bytes again (a retry whose first reply was lost) succeed.
		obj, err = h.sameContent(ctx, t.bucket, key, body, sent, err)
	}
	switch {
	case errors.Is(err, errTooLarge):
		return nil, uerr(http.StatusRequestEntityTooLarge, "exceed FsizeLimit of %d bytes", limit)
	case errors.Is(err, errCRC32):
		return nil, uerr(http.StatusNotAcceptable, "crc32 not match")
	case errors.Is(err, origin.ErrExists):
		return nil, uerr(StatusFileExists, "file exists")
	case errors.Is(err, origin.ErrBadKey):
		return nil, uerr(http.StatusBadRequest, "invalid key: %v", err)
	case err != nil:
		return nil, uerr(http.StatusServiceUnavailable, "store the file: %v", err)
	}
	if key == "" {
		key = obj.ETag
		if ue := h.moveTemp(ctx, t.bucket, target, key, mt); ue != nil {
			return nil, ue
		}
	}
	return &uploaded{bucket: t.bucket, key: key, etag: obj.ETag, fsize: obj.Size, mimeType: mt, fname: fname}, nil
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

// moveTemp stores a keyless upload under its etag (insert-only, as scope
// "bucket" wants; the same content already there is success).
func (h *Handler) moveTemp(ctx context.Context, bucket, tmp, key, mt string) *uploadError {
	defer h.cfg.Objects.Delete(context.WithoutCancel(ctx), bucket, tmp)
	rc, _, err := h.cfg.Objects.Open(ctx, bucket, tmp, 0, -1)
	if err != nil {
		return uerr(http.StatusServiceUnavailable, "store the file: %v", err)
	}
	defer rc.Close()
	_, err = h.cfg.Objects.Put(ctx, bucket, key, rc, origin.PutOptions{MimeType: mt, InsertOnly: true})
	if err != nil && !errors.Is(err, origin.ErrExists) { // same etag: the same content
		return uerr(http.StatusServiceUnavailable, "store the file: %v", err)
	}
	return nil
}

func mediaType(mt string) string {
	if base, _, err := mime.ParseMediaType(mt); err == nil {
		return base
	}
	return mt
}

var returnVarRE = regexp.MustCompile(`\$\(([A-Za-z0-9_:.-]+)\)`)

// expandReturnBody substitutes the template's variables with JSON-escaped
// values (the template quotes strings itself, as in Qiniu).
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
			if strings.HasPrefix(name, "x:") {
				v = fields[name]
			}
		}
		b, _ := json.Marshal(v)
		return string(b[1 : len(b)-1])
	})
}
