// Package rs serves the bucket APIs Qiniu's SDKs call on their rs, rsf,
// io and uc hosts (BucketManager: stat, delete, move, copy, chgm, chtype,
// deleteAfterDays, batch, list, fetch, buckets; the region query made
// before the first call and uc /regions), on the admin API's address: a
// user points the SDK's hosts (or its uc host, whose region query then
// names this server for every service and the router for downloads) at
// the admin API. Every call but the region query is signed as the SDKs
// sign it, QBox or Qiniu form (admin/auth); the caller must own the
// buckets it names. Qiniu's calls that Dora does not serve are answered
// 501 naming the call. Wire formats and codes: docs/api.md.
package rs

import (
	"context"
	"encoding/base64"
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
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/internal/qhttp"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/netguard"
	"github.com/doraproject/dora/router/origin"
)

// ObjectMeta is the stored part of an object's metadata beyond the object
// store's (store.ObjectMetaKey): what the object store does not keep.
type ObjectMeta struct {
	// Type is the storage class: 0 standard, 1 infrequent, 2 archive,
	// 3 deep archive. Accepted and reported, with no effect on storage.
	Type int `json:"type,omitempty"`
	// DeleteAfterDays is the lifecycle set by deleteAfterDays (0: none):
	// stat reports it as "expiration" (Expiration) and the admin's leader
	// deletes the object once it falls due (Expirer).
	DeleteAfterDays int       `json:"deleteAfterDays,omitempty"`
	Set             time.Time `json:"set"`
	// ETag is the etag of the object the record was set on; empty in
	// records written before it was kept (and by callers that do not know
	// it), which are taken to describe an object put no later than Set.
	// An object overwritten with other content since is not the one the
	// lifecycle was set on: stat shows no expiration and Expirer keeps it.
	ETag string `json:"etag,omitempty"`
}

// Objects is what the APIs need of the object store.
type Objects interface {
	origin.Reader
	origin.Writer
	origin.Lister
}

// keyLister is the optional fast path of list: keys without metadata
// (router/origin/local implements it).
type keyLister interface {
	Keys(ctx context.Context, bucket, prefix string) ([]string, error)
}

// Qiniu's codes, as the SDKs read them.
const (
	StatusPartial    = 298 // batch: some operations failed
	StatusNoEntry    = 612 // no such file or directory
	StatusFileExists = 614
	StatusNoBucket   = 631
)

// Limits.
const (
	MaxBatchOps     = 1000
	MaxListLimit    = 1000
	maxFormBytes    = 4 << 20
	DefaultMaxFetch = 1 << 30
	fetchTimeout    = 10 * time.Minute
)

// Config configures Handler. Store and Objects are required.
type Config struct {
	Store   store.Store
	Objects Objects
	// MaxSkew is the X-Qiniu-Date tolerance; auth.DefaultMaxSkew when 0.
	MaxSkew time.Duration
	// IOHost is the router's host:port. The region query's io_src (the
	// host SDKs download from) is the bucket's domain at the router,
	// <bucket>.<DomainSuffix>, with IOHost's port; its io (the host of
	// fetch and prefetch) is the admin API like every other service.
	IOHost string
	// DomainSuffix is the router's: buckets answer at <bucket>.<suffix>
	// (DefaultDomainSuffix when empty).
	DomainSuffix string
	// Region names the region in the query's answer (dora.DefaultRegion).
	Region string
	// AllowPrivateFetch lets fetch reach loopback and private addresses
	// (development); off, fetch goes through router/netguard, as mirrors do.
	AllowPrivateFetch bool
	// MaxFetchBytes bounds a fetched file; DefaultMaxFetch when 0.
	MaxFetchBytes int64
	// FetchTransport makes fetch's requests; nil: one that dials through
	// router/netguard (AllowPrivateFetch). Tests that must not reach the
	// network set their own.
	FetchTransport http.RoundTripper
	Logger         *slog.Logger
	Now            func() time.Time
}

// Handler serves the rs/rsf/uc paths and passes everything else on.
type Handler struct {
	cfg    Config
	ops    map[string]opFunc
	verify auth.Verifier
	fetch  *http.Client
	log    *slog.Logger
}

// New checks cfg and returns the handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Objects == nil {
		return nil, errors.New("rs: Store and Objects are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Region == "" {
		cfg.Region = dora.DefaultRegion
	}
	if cfg.DomainSuffix == "" {
		cfg.DomainSuffix = DefaultDomainSuffix
	}
	if cfg.MaxFetchBytes <= 0 {
		cfg.MaxFetchBytes = DefaultMaxFetch
	}
	h := &Handler{cfg: cfg, log: cfg.Logger}
	h.ops = map[string]opFunc{
		"stat":            h.opStat,
		"delete":          h.opDelete,
		"move":            h.opMove,
		"copy":            h.opCopy,
		"chgm":            h.opChgm,
		"chtype":          h.opChtype,
		"deleteAfterDays": h.opDeleteAfterDays,
	}
	h.verify = auth.Verifier{Lookup: func(ctx context.Context, ak string) (string, error) {
		a, err := accounts.ByAK(ctx, cfg.Store, ak)
		return a.SecretKey, err
	}, MaxSkew: cfg.MaxSkew, Now: cfg.Now}
	tr := cfg.FetchTransport
	if tr == nil {
		tr = &http.Transport{
			Proxy:                 nil, // the guard, not a proxy, resolves the name
			DialContext:           netguard.Dialer(30*time.Second, cfg.AllowPrivateFetch).DialContext,
			TLSHandshakeTimeout:   30 * time.Second,
			ResponseHeaderTimeout: time.Minute,
			MaxIdleConnsPerHost:   4,
		}
	}
	h.fetch = &http.Client{Transport: tr, Timeout: fetchTimeout}
	return h, nil
}

// opFunc is one rs operation, by its first path segment.
type opFunc func(ctx context.Context, acct dora.Account, args []string) (int, any)

// Match reports whether the request is one of Handler's.
func (h *Handler) Match(r *http.Request) bool {
	p := r.URL.Path
	switch p {
	case "/batch", "/list", "/buckets", "/regions":
		return true
	}
	if queryVersion(p) != 0 || unservedAPI(p) != "" {
		return true
	}
	if strings.HasPrefix(p, "/fetch/") {
		return true
	}
	name, _, ok := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	_, isOp := h.ops[name]
	return ok && isOp
}

// Wrap serves Handler's paths and passes every other request to next.
func (h *Handler) Wrap(next http.Handler) http.Handler { return qhttp.Front(h.Match, h, next) }

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqid := newReqid()
	w.Header().Set("X-Reqid", reqid)
	start := h.cfg.Now()
	status := h.serve(w, r)
	h.log.Info("rs api", "reqid", reqid, "method", r.Method, "path", r.URL.Path, "status", status, "duration", h.cfg.Now().Sub(start))
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) int {
	p := r.URL.Path
	if v := queryVersion(p); v != 0 {
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			return writeError(w, http.StatusMethodNotAllowed, "use GET")
		}
		return h.serveQuery(w, r, v)
	}
	if call := unservedAPI(p); call != "" {
		return serveUnserved(w, r, call)
	}
	// The reads also answer GET: list, buckets, regions, and stat (the Go
	// SDK's storagev2 StatObject, which BucketManager.Stat calls, sends GET).
	if r.Method != http.MethodPost && !(r.Method == http.MethodGet && (p == "/list" || p == "/buckets" || p == "/regions" || strings.HasPrefix(p, "/stat/"))) {
		return writeError(w, http.StatusMethodNotAllowed, "use POST")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxFormBytes+1))
	if err != nil {
		return writeError(w, http.StatusBadRequest, "read body: "+err.Error())
	}
	if len(body) > maxFormBytes {
		return writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxFormBytes))
	}
	authz, ctype := r.Header.Get("Authorization"), r.Header.Get("Content-Type")
	signed := auth.BodySigned(authz, ctype)
	var sigBody []byte
	if signed {
		sigBody = body
	}
	vr := r
	if len(body) == 0 && strings.TrimSpace(ctype) == "" && strings.HasPrefix(authz, auth.SchemeQBox+" ") {
		// Qiniu's Go SDK (v7 BucketManager.Fetch) signs with QBox a POST
		// with neither a body nor a Content-Type. Its signed data,
		// "<path>[?<query>]\n", is that of an empty form, and every rs
		// route acts alike on GET and POST: the signature covers the whole
		// request, so verify it as the empty form it is.
		vr = r.Clone(r.Context())
		vr.Header.Set("Content-Type", auth.ContentTypeForm)
	}
	ak, err := h.verify.VerifyHTTP(r.Context(), vr, sigBody)
	if errors.Is(err, accounts.ErrLookup) {
		return writeError(w, http.StatusServiceUnavailable, "metadata store unavailable, retry later")
	}
	if err != nil {
		return writeError(w, http.StatusUnauthorized, "bad token: "+err.Error())
	}
	if len(body) > 0 && !signed {
		return writeError(w, http.StatusBadRequest, "the body must be a signed application/x-www-form-urlencoded form")
	}
	acct, err := accounts.ByAK(r.Context(), h.cfg.Store, ak)
	if err != nil {
		return writeError(w, http.StatusUnauthorized, "bad token: "+err.Error())
	}
	ctx := r.Context()
	switch {
	case p == "/batch":
		return h.serveBatch(w, ctx, acct, body)
	case p == "/list":
		return h.serveList(w, ctx, acct, r, body)
	case p == "/buckets" && r.URL.Query().Get("apiVersion") == "v4":
		return h.serveBucketsV4(w, ctx, acct, r.URL.Query())
	case p == "/buckets":
		return h.serveBuckets(w, ctx, acct)
	case p == "/regions":
		return h.serveRegions(w, r)
	case strings.HasPrefix(p, "/fetch/"):
		code, v := h.opFetch(ctx, acct, strings.TrimPrefix(p, "/fetch/"))
		return writeJSON(w, code, v)
	}
	code, v := h.runOp(ctx, acct, p)
	return writeJSON(w, code, v)
}

// runOp runs one "/<op>/<args...>" (a path or a batch op).
func (h *Handler) runOp(ctx context.Context, acct dora.Account, op string) (int, any) {
	segs := strings.Split(strings.TrimPrefix(op, "/"), "/")
	fn, ok := h.ops[segs[0]]
	if !ok {
		return http.StatusBadRequest, errBody("unknown op %q", segs[0])
	}
	return fn(ctx, acct, segs[1:])
}

func errBody(format string, args ...any) map[string]string {
	return map[string]string{"error": fmt.Sprintf(format, args...)}
}

// entry is a decoded EncodedEntryURI.
type entry struct{ bucket, key string }

// decodeEntry reads urlsafe_base64("<bucket>:<key>"); keyOptional lets a
// bare bucket through (fetch).
func decodeEntry(s string, keyOptional bool) (entry, error) {
	raw, err := decodeB64(s)
	if err != nil {
		return entry{}, errors.New("invalid EncodedEntryURI: not URL-safe base64")
	}
	b, k, hasKey := strings.Cut(raw, ":")
	if b == "" || (!hasKey && !keyOptional) || (hasKey && k == "") {
		return entry{}, fmt.Errorf("invalid EncodedEntryURI %q: want <bucket>:<key>", raw)
	}
	return entry{b, k}, nil
}

func decodeB64(s string) (string, error) {
	b, err := base64.URLEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.RawURLEncoding.DecodeString(s)
	}
	return string(b), err
}

// ownBucket checks acct owns bucket: 631 when it does not exist, 403 when
// someone else's.
func (h *Handler) ownBucket(ctx context.Context, acct dora.Account, bucket string) (int, any) {
	_, code, v := h.ownedBucket(ctx, acct, bucket)
	return code, v
}

// ownedBucket is ownBucket that also returns the bucket's record.
func (h *Handler) ownedBucket(ctx context.Context, acct dora.Account, bucket string) (dora.Bucket, int, any) {
	var b dora.Bucket
	if dora.ValidateBucketName(bucket) != nil {
		return b, StatusNoBucket, errBody("no such bucket")
	}
	kv, err := h.cfg.Store.Get(ctx, store.BucketKey(bucket))
	if errors.Is(err, store.ErrNotFound) {
		return b, StatusNoBucket, errBody("no such bucket")
	}
	if err != nil {
		return b, http.StatusServiceUnavailable, errBody("metadata store: %v", err)
	}
	if err := json.Unmarshal(kv.Value, &b); err != nil {
		return b, http.StatusInternalServerError, errBody("bucket record: %v", err)
	}
	if b.Owner != acct.ID {
		return b, http.StatusForbidden, errBody("bucket %q is not yours", bucket)
	}
	return b, 0, nil
}

// entryArg decodes args[0] as an entry of one of acct's buckets.
func (h *Handler) entryArg(ctx context.Context, acct dora.Account, args []string) (entry, int, any) {
	e, _, code, v := h.ownedEntryArg(ctx, acct, args)
	return e, code, v
}

// ownedEntryArg is entryArg that also returns the bucket's record: the
// Target of a write into it.
func (h *Handler) ownedEntryArg(ctx context.Context, acct dora.Account, args []string) (entry, dora.Bucket, int, any) {
	if len(args) < 1 {
		return entry{}, dora.Bucket{}, http.StatusBadRequest, errBody("missing EncodedEntryURI")
	}
	e, err := decodeEntry(args[0], false)
	if err != nil {
		return e, dora.Bucket{}, http.StatusBadRequest, errBody("%v", err)
	}
	if err := dora.CheckUserKey(e.key); err != nil {
		return e, dora.Bucket{}, http.StatusBadRequest, errBody("%v", err)
	}
	b, code, v := h.ownedBucket(ctx, acct, e.bucket)
	return e, b, code, v
}

// originCode maps object-store errors to Qiniu's codes.
func originCode(err error) (int, any) {
	switch {
	case errors.Is(err, origin.ErrNotFound):
		return StatusNoEntry, errBody("no such file or directory")
	case errors.Is(err, origin.ErrExists):
		return StatusFileExists, errBody("file exists")
	case errors.Is(err, origin.ErrBadKey):
		return http.StatusBadRequest, errBody("invalid key: %v", err)
	case errors.Is(err, origin.ErrReadOnly):
		return http.StatusServiceUnavailable, errBody("object storage is read-only")
	}
	return 599, errBody("%v", err)
}

// metaKey is where an object's ObjectMeta lives (store.ObjectMetaKey).
func metaKey(e entry) string { return store.ObjectMetaKey(e.bucket, e.key) }

func (h *Handler) meta(ctx context.Context, e entry) (ObjectMeta, error) {
	var m ObjectMeta
	kv, err := h.cfg.Store.Get(ctx, metaKey(e))
	if errors.Is(err, store.ErrNotFound) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	err = json.Unmarshal(kv.Value, &m)
	return m, err
}

func (h *Handler) putMeta(ctx context.Context, e entry, m ObjectMeta) error {
	return SetObjectMeta(ctx, h.cfg.Store, e.bucket, e.key, m, h.cfg.Now())
}

// SetObjectMeta records m as the object's ObjectMeta (Set = now), or
// drops the record when m sets nothing: what chtype and deleteAfterDays
// change, and what an upload whose policy has fileType or
// deleteAfterDays sets (admin/pfop). An object whose record key would be
// over store.MaxKeyBytes (ObjectMetaKeyOK) has no record to drop.
func SetObjectMeta(ctx context.Context, st store.Store, bucket, key string, m ObjectMeta, now time.Time) error {
	mk := store.ObjectMetaKey(bucket, key)
	if m.Type == 0 && m.DeleteAfterDays == 0 {
		if !ObjectMetaKeyOK(bucket, key) {
			return nil
		}
		err := st.Delete(ctx, mk)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	}
	m.Set = now.UTC()
	b, _ := json.Marshal(m)
	_, err := st.Put(ctx, mk, b)
	return err
}

// ObjectMetaKeyOK says whether the object can have an ObjectMeta: its
// record's key (store.ObjectMetaKey) is a valid store key.
func ObjectMetaKeyOK(bucket, key string) bool {
	return store.ValidateKey(store.ObjectMetaKey(bucket, key)) == nil
}

// statReply is Qiniu's stat answer (putTime in units of 100 ns).
type statReply struct {
	Fsize      int64  `json:"fsize"`
	Hash       string `json:"hash"`
	MimeType   string `json:"mimeType"`
	PutTime    int64  `json:"putTime"`
	Type       int    `json:"type"`
	Status     int    `json:"status"`
	Expiration int64  `json:"expiration,omitempty"`
}

func putTime(t time.Time) int64 { return t.UnixNano() / 100 }

func (h *Handler) opStat(ctx context.Context, acct dora.Account, args []string) (int, any) {
	e, code, v := h.entryArg(ctx, acct, args)
	if code != 0 {
		return code, v
	}
	obj, err := h.cfg.Objects.Stat(ctx, e.bucket, e.key)
	if err != nil {
		return originCode(err)
	}
	m, err := h.meta(ctx, e)
	if err != nil {
		return http.StatusServiceUnavailable, errBody("metadata store: %v", err)
	}
	rep := statReply{Fsize: obj.Size, Hash: obj.ETag, MimeType: obj.MimeType, PutTime: putTime(obj.Modified), Type: m.Type}
	if exp, ok := Expiration(m, obj); ok {
		rep.Expiration = exp.Unix()
	}
	return http.StatusOK, rep
}

func (h *Handler) opDelete(ctx context.Context, acct dora.Account, args []string) (int, any) {
	e, code, v := h.entryArg(ctx, acct, args)
	if code != 0 {
		return code, v
	}
	if err := deleteObject(ctx, h.cfg.Store, h.cfg.Objects, h.log, e.bucket, e.key, 0); err != nil {
		return originCode(err)
	}
	return http.StatusOK, nil
}

// deleteObject is rs delete's (and Expirer's) removal of an object: the
// object from the object store, then its ObjectMeta record. With
// recVersion > 0 the record goes only if it is still at that version (the
// one the caller decided on): a record an upload wrote meanwhile stays.
// A record that cannot be dropped is logged, not an error: the object is
// gone.
func deleteObject(ctx context.Context, st store.Store, objs origin.Writer, log *slog.Logger, bucket, key string, recVersion uint64) error {
	if err := objs.Delete(ctx, bucket, key); err != nil {
		return err
	}
	var err error
	if recVersion == 0 {
		err = SetObjectMeta(ctx, st, bucket, key, ObjectMeta{}, time.Time{})
	} else {
		err = st.Txn(ctx, []store.Op{{Kind: store.OpDelete, Key: store.ObjectMetaKey(bucket, key), Version: recVersion}})
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			err = nil
		}
	}
	if err != nil {
		log.Warn("rs: dropping object metadata", "bucket", bucket, "key", key, "err", err)
	}
	return nil
}

// forceArg reads the trailing "/force/<true|false>" of move and copy.
func forceArg(args []string) (bool, error) {
	switch len(args) {
	case 0:
		return false, nil
	case 2:
		if args[0] == "force" {
			switch args[1] {
			case "true":
				return true, nil
			case "false":
				return false, nil
			}
		}
	}
	return false, errors.New("want [/force/<true|false>] after the entries")
}

// transfer copies src to dst (streamed), honouring force; with move it
// then removes src.
func (h *Handler) transfer(ctx context.Context, acct dora.Account, args []string, move bool) (int, any) {
	if len(args) < 2 {
		return http.StatusBadRequest, errBody("want /<EncodedEntryURISrc>/<EncodedEntryURIDest>")
	}
	src, code, v := h.entryArg(ctx, acct, args[:1])
	if code != 0 {
		return code, v
	}
	dst, dstBucket, code, v := h.ownedEntryArg(ctx, acct, args[1:2])
	if code != 0 {
		return code, v
	}
	force, err := forceArg(args[2:])
	if err != nil {
		return http.StatusBadRequest, errBody("%v", err)
	}
	if src == dst {
		if _, err := h.cfg.Objects.Stat(ctx, src.bucket, src.key); err != nil {
			return originCode(err)
		}
		if !force {
			return StatusFileExists, errBody("file exists")
		}
		return http.StatusOK, nil // onto itself: nothing to do
	}
	rc, obj, err := h.cfg.Objects.Open(ctx, src.bucket, src.key, 0, -1)
	if err != nil {
		return originCode(err)
	}
	// The copy streams the whole object: the destination bucket may be
	// deleted (and created again) meanwhile, as under an upload.
	target := TargetOf(dstBucket)
	g := NewGuard(ctx, h.cfg.Store, target, rc)
	put, err := h.cfg.Objects.Put(ctx, dst.bucket, dst.key, g, origin.PutOptions{MimeType: obj.MimeType, InsertOnly: !force})
	rc.Close()
	if g.Failed() != nil {
		return guardCode(g.Failed())
	}
	if err != nil {
		return originCode(err)
	}
	if err := target.CheckStored(context.WithoutCancel(ctx), h.cfg.Store, h.cfg.Objects, h.log, dst.key, put.ETag); err != nil {
		return guardCode(err)
	}
	m, err := h.meta(ctx, src)
	if err == nil {
		if m.ETag == "" { // an older record: it follows the content copied
			m.ETag = obj.ETag
		}
		err = h.putMeta(ctx, dst, m)
	}
	if err != nil {
		h.log.Warn("rs: copying object metadata", "src", src, "dst", dst, "err", err)
	}
	if move {
		if err := h.cfg.Objects.Delete(ctx, src.bucket, src.key); err != nil && !errors.Is(err, origin.ErrNotFound) {
			return originCode(err)
		}
		if err := h.putMeta(ctx, src, ObjectMeta{}); err != nil {
			h.log.Warn("rs: dropping object metadata", "entry", src, "err", err)
		}
	}
	return http.StatusOK, nil
}

func (h *Handler) opMove(ctx context.Context, acct dora.Account, args []string) (int, any) {
	return h.transfer(ctx, acct, args, true)
}

func (h *Handler) opCopy(ctx context.Context, acct dora.Account, args []string) (int, any) {
	return h.transfer(ctx, acct, args, false)
}

// opChgm changes the MIME type: /chgm/<entry>/mime/<EncodedMime> (other
// pairs, x-qn-meta-* and cond, are accepted and ignored, with or without
// mime: the Go SDK's ChangeMeta sends no mime). The object is rewritten
// through the store's writer with the new type.
func (h *Handler) opChgm(ctx context.Context, acct dora.Account, args []string) (int, any) {
	e, code, v := h.entryArg(ctx, acct, args)
	if code != 0 {
		return code, v
	}
	rest := args[1:]
	if len(rest)%2 != 0 {
		return http.StatusBadRequest, errBody("want /chgm/<EncodedEntryURI>/mime/<EncodedMimeType>")
	}
	mt := ""
	for i := 0; i < len(rest); i += 2 {
		if rest[i] == "mime" {
			m, err := decodeB64(rest[i+1])
			if err != nil || m == "" || strings.ContainsAny(m, "\r\n") {
				return http.StatusBadRequest, errBody("mime: not URL-safe base64 of a MIME type")
			}
			mt = m
		}
	}
	if len(rest) == 0 {
		return http.StatusBadRequest, errBody("want /chgm/<EncodedEntryURI>/mime/<EncodedMimeType>")
	}
	if mt == "" { // x-qn-meta-* (or cond) only: accepted, not stored
		if _, err := h.cfg.Objects.Stat(ctx, e.bucket, e.key); err != nil {
			return originCode(err)
		}
		return http.StatusOK, nil
	}
	rc, obj, err := h.cfg.Objects.Open(ctx, e.bucket, e.key, 0, -1)
	if err != nil {
		return originCode(err)
	}
	defer rc.Close()
	if _, err := h.cfg.Objects.Put(ctx, e.bucket, e.key, rc, origin.PutOptions{MimeType: mt}); err != nil {
		return originCode(err)
	}
	// The rewrite gets a new put time: an older record without an etag,
	// taken to describe an object put before it was set, would no longer
	// describe this one. Its lifecycle stays with the content.
	if m, err := h.meta(ctx, e); err == nil && m.ETag == "" && (m.Type != 0 || m.DeleteAfterDays != 0) {
		m.ETag = obj.ETag
		if err := h.putMeta(ctx, e, m); err != nil {
			h.log.Warn("rs: keeping object metadata across chgm", "bucket", e.bucket, "key", e.key, "err", err)
		}
	}
	return http.StatusOK, nil
}

func (h *Handler) opChtype(ctx context.Context, acct dora.Account, args []string) (int, any) {
	e, code, v := h.entryArg(ctx, acct, args)
	if code != 0 {
		return code, v
	}
	if len(args) != 3 || args[1] != "type" {
		return http.StatusBadRequest, errBody("want /chtype/<EncodedEntryURI>/type/<0|1|2|3>")
	}
	t, err := strconv.Atoi(args[2])
	if err != nil || t < 0 || t > 3 {
		return http.StatusBadRequest, errBody("type: 0, 1, 2 or 3")
	}
	return h.updateMeta(ctx, e, func(m *ObjectMeta) { m.Type = t })
}

func (h *Handler) opDeleteAfterDays(ctx context.Context, acct dora.Account, args []string) (int, any) {
	e, code, v := h.entryArg(ctx, acct, args)
	if code != 0 {
		return code, v
	}
	if len(args) != 2 {
		return http.StatusBadRequest, errBody("want /deleteAfterDays/<EncodedEntryURI>/<days>")
	}
	days, err := strconv.Atoi(args[1])
	if err != nil || days < 0 || days > 100000 {
		return http.StatusBadRequest, errBody("days: a whole number, 0 (none) to 100000")
	}
	return h.updateMeta(ctx, e, func(m *ObjectMeta) { m.DeleteAfterDays = days })
}

// updateMeta applies fn to the stored metadata of an existing object and
// records the object's etag with it (the object the lifecycle is set on).
// A record set on other content (the object was overwritten since) is
// not carried over.
func (h *Handler) updateMeta(ctx context.Context, e entry, fn func(*ObjectMeta)) (int, any) {
	obj, err := h.cfg.Objects.Stat(ctx, e.bucket, e.key)
	if err != nil {
		return originCode(err)
	}
	m, err := h.meta(ctx, e)
	if err != nil {
		return http.StatusServiceUnavailable, errBody("metadata store: %v", err)
	}
	if m.ETag != "" && m.ETag != obj.ETag {
		m = ObjectMeta{}
	}
	m.ETag = obj.ETag
	fn(&m)
	if err := h.putMeta(ctx, e, m); err != nil {
		return http.StatusServiceUnavailable, errBody("metadata store: %v", err)
	}
	return http.StatusOK, nil
}

// batchResult is one entry of the batch reply.
type batchResult struct {
	Code int `json:"code"`
	Data any `json:"data,omitempty"`
}

// serveBatch runs "op=/<op>/...&op=..." in order: 200 when every op
// succeeded, 298 when some failed, each op's own code in the array.
func (h *Handler) serveBatch(w http.ResponseWriter, ctx context.Context, acct dora.Account, body []byte) int {
	form, err := parseForm(body)
	if err != nil {
		return writeError(w, http.StatusBadRequest, "batch: "+err.Error())
	}
	ops := form["op"]
	if len(ops) == 0 {
		return writeError(w, http.StatusBadRequest, "batch: no op")
	}
	if len(ops) > MaxBatchOps {
		return writeError(w, http.StatusBadRequest, fmt.Sprintf("batch: at most %d ops", MaxBatchOps))
	}
	out := make([]batchResult, len(ops))
	status := http.StatusOK
	for i, op := range ops {
		code, v := h.runOp(ctx, acct, op)
		out[i] = batchResult{Code: code, Data: v}
		if code != http.StatusOK {
			status = StatusPartial
		}
	}
	return writeJSON(w, status, out)
}

// listItem is one object of a list reply.
type listItem struct {
	Key      string `json:"key"`
	Hash     string `json:"hash"`
	Fsize    int64  `json:"fsize"`
	MimeType string `json:"mimeType"`
	PutTime  int64  `json:"putTime"`
	Type     int    `json:"type"`
	Status   int    `json:"status"`
}

// listMarker is what the opaque marker carries: the last key listed (K)
// or the last common prefix (P), whose keys all come before the next page.
type listMarker struct {
	C int    `json:"c"`
	K string `json:"k"`
	P string `json:"p,omitempty"`
}

// serveList is list v1 (rsf): ?bucket=&marker=&limit=&prefix=&delimiter=
// (query, or a signed form body) → {"marker","commonPrefixes","items"};
// an empty marker means the end.
func (h *Handler) serveList(w http.ResponseWriter, ctx context.Context, acct dora.Account, r *http.Request, body []byte) int {
	q := r.URL.Query()
	if len(body) > 0 {
		form, err := parseForm(body)
		if err != nil {
			return writeError(w, http.StatusBadRequest, "list: "+err.Error())
		}
		for k, v := range form {
			if _, ok := q[k]; !ok {
				q[k] = v
			}
		}
	}
	bucket, prefix, delim := q.Get("bucket"), q.Get("prefix"), q.Get("delimiter")
	limit := MaxListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return writeError(w, http.StatusBadRequest, "limit: 1 to 1000")
		}
		if n > 0 {
			limit = min(n, MaxListLimit)
		}
	}
	var mk listMarker
	if v := q.Get("marker"); v != "" {
		raw, err := decodeB64(v)
		if err != nil || json.Unmarshal([]byte(raw), &mk) != nil {
			return writeError(w, http.StatusBadRequest, "marker: not one this server gave")
		}
	}
	if code, v := h.ownBucket(ctx, acct, bucket); code != 0 {
		return writeJSON(w, code, v)
	}
	keys, err := h.keys(ctx, bucket, prefix)
	if err != nil {
		code, v := originCode(err)
		return writeJSON(w, code, v)
	}
	items := []listItem{}
	prefixes := []string{}
	var last listMarker
	more := false
	for _, k := range keys {
		if k <= mk.K || (mk.P != "" && strings.HasPrefix(k, mk.P)) {
			continue
		}
		cp := ""
		if delim != "" {
			if i := strings.Index(k[len(prefix):], delim); i >= 0 {
				cp = k[:len(prefix)+i+len(delim)]
			}
		}
		if cp != "" && len(prefixes) > 0 && prefixes[len(prefixes)-1] == cp {
			last.K = k
			continue
		}
		if len(items)+len(prefixes) == limit {
			more = true
			break
		}
		if cp != "" {
			prefixes = append(prefixes, cp)
			last = listMarker{K: k, P: cp}
			continue
		}
		obj, err := h.cfg.Objects.Stat(ctx, bucket, k)
		if errors.Is(err, origin.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			code, v := originCode(err)
			return writeJSON(w, code, v)
		}
		m, _ := h.meta(ctx, entry{bucket, k})
		items = append(items, listItem{Key: k, Hash: obj.ETag, Fsize: obj.Size, MimeType: obj.MimeType, PutTime: putTime(obj.Modified), Type: m.Type})
		last = listMarker{K: k}
	}
	marker := ""
	if more {
		b, _ := json.Marshal(last)
		marker = base64.URLEncoding.EncodeToString(b)
	}
	rep := map[string]any{"marker": marker, "items": items}
	if delim != "" {
		rep["commonPrefixes"] = prefixes
	}
	return writeJSON(w, http.StatusOK, rep)
}

// keys lists the sorted keys under prefix that users see: those under
// UploadTempPrefix left out (before a page is cut, so that a page is
// never made of them alone and no common prefix stands for them).
func (h *Handler) keys(ctx context.Context, bucket, prefix string) ([]string, error) {
	keys, err := listKeys(ctx, h.cfg.Objects, bucket, prefix)
	if err != nil {
		return nil, err
	}
	out := keys[:0]
	for _, k := range keys {
		if !ReservedKey(k) {
			out = append(out, k)
		}
	}
	return out, nil
}

// listKeys lists the sorted keys of bucket under prefix, all of them.
func listKeys(ctx context.Context, objs Objects, bucket, prefix string) ([]string, error) {
	if kl, ok := objs.(keyLister); ok {
		return kl.Keys(ctx, bucket, prefix)
	}
	list, err := objs.List(ctx, bucket, prefix, 0)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(list))
	for i, o := range list {
		keys[i] = o.Key
	}
	return keys, nil
}

// serveBuckets is uc's GET /buckets: the caller's bucket names.
func (h *Handler) serveBuckets(w http.ResponseWriter, ctx context.Context, acct dora.Account) int {
	kvs, err := h.cfg.Store.List(ctx, store.PrefixBuckets)
	if err != nil {
		return writeError(w, http.StatusServiceUnavailable, "metadata store: "+err.Error())
	}
	names := []string{}
	for _, kv := range kvs {
		var b dora.Bucket
		if json.Unmarshal(kv.Value, &b) == nil && b.Owner == acct.ID {
			names = append(names, b.Name)
		}
	}
	return writeJSON(w, http.StatusOK, names)
}

// opFetch is /fetch/<EncodedURL>/to/<EncodedEntryURI>: the URL is fetched
// through router/netguard (no loopback, private or link-local address,
// after DNS, unless AllowPrivateFetch) and streamed into the bucket; a bare
// bucket entry stores the file under its etag (through a temporary,
// TempKey, copied to it: MoveTemp). Like an upload's (admin/pfop), the
// file is checked at its end, before its object can appear, to still go
// to the bucket the fetch was admitted to (Guard, Target.CheckStored): a
// bucket deleted meanwhile, or deleted and created again by anyone, gets
// nothing, and the fetch 631.
func (h *Handler) opFetch(ctx context.Context, acct dora.Account, rest string) (int, any) {
	encURL, encEntry, ok := strings.Cut(rest, "/to/")
	if !ok {
		return http.StatusBadRequest, errBody("want /fetch/<EncodedURL>/to/<EncodedEntryURI>")
	}
	raw, err := decodeB64(encURL)
	if err != nil || !(strings.HasPrefix(raw, "http://") || strings.HasPrefix(raw, "https://")) {
		return http.StatusBadRequest, errBody("fetch: the URL must be URL-safe base64 of an http(s) URL")
	}
	e, err := decodeEntry(encEntry, true)
	if err != nil {
		return http.StatusBadRequest, errBody("%v", err)
	}
	if err := dora.CheckUserKey(e.key); err != nil {
		return http.StatusBadRequest, errBody("%v", err)
	}
	b, code, v := h.ownedBucket(ctx, acct, e.bucket)
	if code != 0 {
		return code, v
	}
	t := TargetOf(b)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return http.StatusBadRequest, errBody("fetch: %v", err)
	}
	resp, err := h.fetch.Do(req)
	if err != nil {
		if errors.Is(err, netguard.ErrNotPublic) {
			return http.StatusForbidden, errBody("fetch: %v", err)
		}
		return 478, errBody("fetch: %v", err) // Qiniu: source fetch failed
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode == http.StatusNotFound {
			return 404, errBody("fetch: source answered 404")
		}
		return 478, errBody("fetch: source answered %d", resp.StatusCode)
	}
	if resp.ContentLength > h.cfg.MaxFetchBytes {
		return http.StatusRequestEntityTooLarge, errBody("fetch: over %d bytes", h.cfg.MaxFetchBytes)
	}
	mt := resp.Header.Get("Content-Type")
	if mt == "application/octet-stream" {
		mt = ""
	}
	var body io.Reader = qhttp.Cap(resp.Body, h.cfg.MaxFetchBytes)
	target := e.key
	var g *Guard // a keyed fetch writes its key: checked at the file's end
	if target == "" {
		// Hidden from listings; the bucket's delete removes it, the
		// leader's sweep one a crash leaves behind.
		target = TempKey()
	} else {
		g = NewGuard(ctx, h.cfg.Store, t, body)
		body = g
	}
	obj, err := h.cfg.Objects.Put(ctx, e.bucket, target, body, origin.PutOptions{MimeType: mt})
	switch {
	case g != nil && g.Failed() != nil:
		return guardCode(g.Failed())
	case errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge, errBody("fetch: over %d bytes", h.cfg.MaxFetchBytes)
	case err != nil:
		return originCode(err)
	}
	if e.key == "" {
		defer h.cfg.Objects.Delete(context.WithoutCancel(ctx), e.bucket, target)
		if _, err := MoveTemp(ctx, h.cfg.Store, h.cfg.Objects, t, target, obj.ETag, obj.ETag, obj.MimeType, false); err != nil {
			if errors.Is(err, ErrTempLost) {
				h.log.Warn("rs: fetch: its temporary went missing before it was stored under its key", "bucket", e.bucket, "err", err)
			}
			return guardCode(err)
		}
		obj.Key = obj.ETag
	}
	if err := t.CheckStored(context.WithoutCancel(ctx), h.cfg.Store, h.cfg.Objects, h.log, obj.Key, obj.ETag); err != nil {
		return guardCode(err)
	}
	return http.StatusOK, map[string]any{"fsize": obj.Size, "hash": obj.ETag, "key": obj.Key, "mimeType": obj.MimeType}
}

// guardCode maps the errors of a guarded write (Guard, MoveTemp,
// Target.CheckStored) to Qiniu's codes: 631 when the bucket went, 500
// when a temporary went missing from a bucket still there, 503 when the
// metadata store could not say, else the object store's (originCode).
func guardCode(err error) (int, any) {
	switch {
	case errors.Is(err, ErrBucketGone):
		return StatusNoBucket, errBody("%v", err)
	case errors.Is(err, ErrTempLost):
		return http.StatusInternalServerError, errBody("fetch: %v: fetch it again", err)
	case errors.Is(err, ErrBucketUnchecked):
		return http.StatusServiceUnavailable, errBody("%v", err)
	}
	return originCode(err)
}

var errTooLarge = qhttp.ErrTooLarge

// parseForm parses a form body; repeated keys keep their order.
func parseForm(body []byte) (map[string][]string, error) {
	return url.ParseQuery(string(body))
}

func newReqid() string { return qhttp.NewReqid() }

func writeJSON(w http.ResponseWriter, status int, v any) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v == nil {
		io.WriteString(w, "{}\n")
		return status
	}
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"error":"encode reply"}`)
	}
	w.Write(append(b, '\n'))
	return status
}

func writeError(w http.ResponseWriter, status int, msg string) int {
	return writeJSON(w, status, map[string]string{"error": msg})
}
