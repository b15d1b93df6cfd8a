package pfop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/admin/accounts"
	"github.com/doraproject/dora/internal/api"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/qhttp"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
)

// The paths Handler serves (everything else goes to the wrapped handler):
//
//	POST /pfop, POST /pfop/      submit a job (signed, form body) → {"persistentId"}
//	GET  /status/get/prefop?id=  a job's status (no signature: ids are unguessable)
//	POST /                       Qiniu form upload (multipart, upload token)
//	/mkblk/ /bput/ /mkfile/ and /buckets/<b>/objects/<k>/uploads...
//	                             resumable uploads v1 and v2 (resumable.go)
const (
	PathPfop      = api.PathPfop
	PathPfopSlash = api.PathPfopSlash
	PathPrefop    = api.PathPrefop
	PathUpload    = api.PathUpload
)

// Defaults of HandlerConfig.
const (
	DefaultMaxFormBytes   = 64 << 10
	DefaultMaxUploadBytes = 1 << 30
)

// ObjectStore reads and writes objects; origin/local.Dir is one.
type ObjectStore interface {
	origin.Reader
	origin.Writer
}

// HandlerConfig configures Handler. Store, Queue and Objects are required.
type HandlerConfig struct {
	Store   store.Store
	Queue   Queue
	Objects ObjectStore
	// MaxSkew is the X-Qiniu-Date tolerance; auth.DefaultMaxSkew when 0.
	MaxSkew time.Duration
	// Notify decides which notifyURLs are accepted (AllowPrivate).
	Notify NotifyConfig
	// IDPrefix starts every job id ("z0" when empty): a region name.
	IDPrefix string
	// MaxUploadBytes bounds an uploaded file (before fsizeLimit).
	MaxUploadBytes int64
	// SpoolDir keeps the blocks and parts of resumable uploads until they
	// complete (a directory of the data dir); empty: resumable uploads
	// answer 503.
	SpoolDir string
	// UploadExpiry is how long unfinished resumable uploads are kept;
	// DefaultUploadExpiry when 0.
	UploadExpiry time.Duration
	Logger       *slog.Logger
	Now          func() time.Time
}

// Handler serves pfop, prefop and the form upload.
type Handler struct {
	cfg    HandlerConfig
	jobs   Jobs
	notify *Notifier
	verify auth.Verifier
	log    *slog.Logger
	rs     resumable
}

// NewHandler checks cfg and returns the handler.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	if cfg.Store == nil || cfg.Queue == nil || cfg.Objects == nil {
		return nil, errors.New("pfop handler: Store, Queue and Objects are required")
	}
	if cfg.IDPrefix == "" {
		cfg.IDPrefix = dora.DefaultRegion
	}
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.UploadExpiry <= 0 {
		cfg.UploadExpiry = DefaultUploadExpiry
	}
	h := &Handler{cfg: cfg, jobs: Jobs{Store: cfg.Store}, notify: NewNotifier(cfg.Notify), log: cfg.Logger}
	h.verify = auth.Verifier{Lookup: h.lookupSK, MaxSkew: cfg.MaxSkew, Now: cfg.Now}
	return h, nil
}

// Match reports whether the request is one of Handler's.
func (h *Handler) Match(r *http.Request) bool {
	switch r.URL.Path {
	case PathPfop, PathPfopSlash, PathPrefop:
		return true
	case PathUpload:
		return r.Method == http.MethodPost
	}
	return matchResumable(r.URL.Path) || strings.HasPrefix(r.URL.Path, pathPutb64)
}

// Wrap serves Handler's paths and passes every other request to next
// (the admin API).
func (h *Handler) Wrap(next http.Handler) http.Handler { return qhttp.Front(h.Match, h, next) }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqid := newReqid()
	w.Header().Set("X-Reqid", reqid)
	start := h.cfg.Now()
	var status int
	switch r.URL.Path {
	case PathPfop, PathPfopSlash:
		status = h.servePfop(w, r, reqid)
	case PathPrefop:
		status = h.servePrefop(w, r)
	case PathUpload:
		status = h.serveUpload(w, r, reqid)
	default:
		if strings.HasPrefix(r.URL.Path, pathPutb64) {
			status = h.servePutb64(w, r, reqid)
			break
		}
		if matchResumable(r.URL.Path) {
			status = h.serveResumable(w, r, reqid)
			break
		}
		status = writeError(w, http.StatusNotFound, "no such endpoint")
	}
	h.log.Info("pfop api", "reqid", reqid, "method", r.Method, "path", r.URL.Path, "status", status, "duration", h.cfg.Now().Sub(start))
}

func newReqid() string { return qhttp.NewReqid() }

func writeJSON(w http.ResponseWriter, status int, v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		return writeError(w, http.StatusInternalServerError, "encode reply")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
	return status
}

func writeError(w http.ResponseWriter, status int, msg string) int {
	return writeJSON(w, status, map[string]string{"error": msg})
}

// lookupSK is the Verifier's KeyLookup: enabled accounts only.
func (h *Handler) lookupSK(ctx context.Context, ak string) (string, error) {
	a, err := h.accountByAK(ctx, ak)
	if err != nil {
		return "", err
	}
	return a.SecretKey, nil
}

func (h *Handler) accountByAK(ctx context.Context, ak string) (dora.Account, error) {
	return accounts.ByAK(ctx, h.cfg.Store, ak)
}

// bucketOf returns the bucket when acct owns it: 631 when it does not
// exist, 403 when it is someone else's.
func (h *Handler) bucketOf(ctx context.Context, acct dora.Account, name string) (dora.Bucket, int, string) {
	var b dora.Bucket
	if err := dora.ValidateBucketName(name); err != nil {
		return b, 631, "no such bucket"
	}
	b, _, err := store.Get[dora.Bucket](ctx, h.cfg.Store, store.BucketKey(name))
	if errors.Is(err, store.ErrNotFound) {
		return b, 631, "no such bucket"
	}
	if err != nil {
		return b, http.StatusServiceUnavailable, "metadata store: " + err.Error()
	}
	if b.Owner != acct.ID {
		return b, http.StatusForbidden, fmt.Sprintf("bucket %q is not yours", name)
	}
	return b, 0, ""
}

// Submission is a job to create.
type Submission struct {
	Bucket, Key string
	Fops        string
	NotifyURL   string
	Force       bool
	Pipeline    string
	Type        int
	Owner       string
	Reqid       string
}

// reservedJobKey refuses a job on a key under dora.UploadTempPrefix: an
// upload's temporary is no user's input.
func reservedJobKey(key string) error {
	if err := dora.CheckUserKey(key); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Submit validates a submission, stores the job (waiting) and queues it.
func (h *Handler) Submit(ctx context.Context, s Submission) (Job, error) {
	if err := reservedJobKey(s.Key); err != nil {
		return Job{}, err
	}
	cmds, err := planFops(s.Bucket, s.Key, s.Fops)
	if err != nil {
		return Job{}, err
	}
	if s.Pipeline == "" {
		s.Pipeline = DefaultPipeline
	}
	if err := ValidatePipeline(s.Pipeline); err != nil {
		return Job{}, err
	}
	if s.Type != 0 && s.Type != 1 {
		return Job{}, fmt.Errorf("%w: type must be 0 or 1", ErrInvalid)
	}
	if s.NotifyURL != "" {
		if err := h.notify.CheckURL(s.NotifyURL); err != nil {
			return Job{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if s.Key == "" || len(s.Key) > MaxJobKeyByte {
		return Job{}, fmt.Errorf("%w: key must be 1 to %d bytes", ErrInvalid, MaxJobKeyByte)
	}
	id, err := NewID(h.cfg.IDPrefix)
	if err != nil {
		return Job{}, err
	}
	now := h.cfg.Now().UTC()
	j := Job{
		ID: id, Code: CodeWaiting, Bucket: s.Bucket, Key: s.Key, Pipeline: s.Pipeline, Type: s.Type,
		Reqid: s.Reqid, Owner: s.Owner, NotifyURL: s.NotifyURL, Force: s.Force, Created: now, Updated: now,
	}
	for _, c := range cmds {
		j.Items = append(j.Items, Item{Cmd: c, Code: CodeWaiting, Desc: Desc(CodeWaiting)})
	}
	if err := h.jobs.Create(ctx, j); err != nil {
		return Job{}, err
	}
	if err := h.cfg.Queue.Enqueue(ctx, j.Pipeline, j.ID, j.Type == 1); err != nil {
		// Not queued: say so in the job rather than leave it waiting forever.
		_, _ = h.jobs.Update(context.WithoutCancel(ctx), j.ID, func(j *Job) error {
			j.Code = CodeFailed
			for i := range j.Items {
				j.Items[i] = failed(j.Items[i].Cmd, "could not be queued", -1)
			}
			return nil
		})
		return Job{}, fmt.Errorf("queue job: %w", err)
	}
	return j, nil
}

func (h *Handler) servePfop(w http.ResponseWriter, r *http.Request, reqid string) int {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return writeError(w, http.StatusMethodNotAllowed, "use POST")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, DefaultMaxFormBytes+1))
	if err != nil {
		return writeError(w, http.StatusBadRequest, "read body: "+err.Error())
	}
	if len(body) > DefaultMaxFormBytes {
		return writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("form body over %d bytes", DefaultMaxFormBytes))
	}
	ctype := r.Header.Get("Content-Type")
	authz := r.Header.Get("Authorization")
	var signed []byte
	if auth.BodySigned(authz, ctype) {
		signed = body
	}
	ak, err := h.verify.VerifyHTTP(r.Context(), r, signed)
	if errors.Is(err, accounts.ErrLookup) {
		return writeError(w, http.StatusServiceUnavailable, "metadata store unavailable, retry later")
	}
	if err != nil {
		return writeError(w, http.StatusUnauthorized, err.Error())
	}
	// The body is parsed only when it is a form the signature covers; an
	// empty body leaves the fields to the (signed) query.
	if len(body) > 0 && (auth.MediaType(ctype) != auth.ContentTypeForm || signed == nil) {
		return writeError(w, http.StatusBadRequest, fmt.Sprintf("pfop takes a signed %s body, not Content-Type %q", auth.ContentTypeForm, ctype))
	}
	acct, err := h.accountByAK(r.Context(), ak)
	if err != nil {
		return writeError(w, http.StatusUnauthorized, err.Error())
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return writeError(w, http.StatusBadRequest, "form body: "+err.Error())
	}
	for k, v := range r.URL.Query() { // some clients put the fields in the query
		if _, ok := form[k]; !ok {
			form[k] = v
		}
	}
	typ := 0
	if t := form.Get("type"); t != "" {
		if typ, err = strconv.Atoi(t); err != nil {
			return writeError(w, http.StatusBadRequest, "type must be 0 or 1")
		}
	}
	force := form.Get("force")
	id, status, err := h.SubmitFor(r.Context(), acct, api.PfopRequest{
		Bucket: form.Get("bucket"), Key: form.Get("key"), Fops: form.Get("fops"), NotifyURL: form.Get("notifyURL"),
		Force: force == "1" || force == "true", Pipeline: form.Get("pipeline"), Type: typ,
	}, reqid)
	if err != nil {
		return writeError(w, status, err.Error())
	}
	return writeJSON(w, http.StatusOK, map[string]string{"persistentId": id})
}

// SubmitFor submits a job for acct, whom the caller has authenticated
// (POST /pfop checks the Qiniu signature; the admin API's POST /v1/pfop,
// which the web console uses, its own signature or session): the bucket
// must be acct's and hold the key (unless it mirrors an origin). It
// returns the persistentId, or the HTTP status and error to answer.
func (h *Handler) SubmitFor(ctx context.Context, acct dora.Account, req api.PfopRequest, reqid string) (string, int, error) {
	if req.Bucket == "" || req.Key == "" {
		return "", http.StatusBadRequest, errors.New("bucket and key are required")
	}
	if err := reservedJobKey(req.Key); err != nil { // before the stat: as if it were absent would tell less
		return "", http.StatusBadRequest, err
	}
	b, status, msg := h.bucketOf(ctx, acct, req.Bucket)
	if status != 0 {
		return "", status, errors.New(msg)
	}
	if b.Mirror == "" {
		if _, err := h.cfg.Objects.Stat(ctx, req.Bucket, req.Key); errors.Is(err, origin.ErrNotFound) || errors.Is(err, origin.ErrBadKey) {
			return "", CodeUnknownID, errors.New("no such file or directory")
		}
	}
	j, err := h.Submit(ctx, Submission{
		Bucket: req.Bucket, Key: req.Key, Fops: req.Fops, NotifyURL: req.NotifyURL,
		Force: req.Force, Pipeline: req.Pipeline, Type: req.Type, Owner: acct.ID, Reqid: reqid,
	})
	if errors.Is(err, ErrInvalid) {
		return "", http.StatusBadRequest, err
	}
	if err != nil {
		return "", http.StatusServiceUnavailable, err
	}
	return j.ID, http.StatusOK, nil
}

func (h *Handler) servePrefop(w http.ResponseWriter, r *http.Request) int {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET")
		return writeError(w, http.StatusMethodNotAllowed, "use GET")
	}
	j, _, err := h.jobs.Get(r.Context(), r.URL.Query().Get("id"))
	if errors.Is(err, ErrNotFound) {
		return writeError(w, CodeUnknownID, "no such persistentId")
	}
	if err != nil {
		return writeError(w, http.StatusServiceUnavailable, err.Error())
	}
	return writeJSON(w, http.StatusOK, j.Status())
}
