// Package registry is the platform's OCI distribution registry, mounted by
// the admin process at /v2/: `qdoractl push ufopdemo:v1` writes
// <account id>/ufopdemo:v1 here and releases then name the image
// "ufopdemo:v1".
//
// It wraps go-containerregistry's pkg/registry and adds what a shared,
// restartable registry needs:
//
//   - HTTP Basic authentication on every /v2/ request (user AK, password
//     SK, checked by Config.Authenticate); an account may only push and pull
//     repositories under its own account id (403 otherwise);
//   - blobs on disk, content-addressed, each linked to the accounts that
//     uploaded it (a digest alone does not give access to another account's
//     layer);
//   - blob uploads (POST/PATCH/PUT) streamed to temporary files here rather
//     than buffered in memory as pkg/registry does, with a size cap;
//   - manifests persisted: pkg/registry keeps them in memory only, so every
//     accepted manifest PUT is also written to disk (its bytes as a blob,
//     plus a small record under manifests/<repo>/_refs/<tag or digest>) and
//     replayed into pkg/registry when New starts. Tags are also recorded in
//     the metadata store under images/<owner>/<name:tag> for ListImages.
package registry

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/doraproject/dora/internal/store"
)

// Defaults of Config.
const (
	DefaultMaxBlobBytes     = 8 << 30
	DefaultMaxManifestBytes = 4 << 20
	// uploadTTL: an upload session idle longer than this is dropped.
	uploadTTL = time.Hour
	// maxUploadsPerAccount bounds the upload sessions an account has open
	// at once (each holds a file descriptor and a temporary file); one
	// more is answered 429 TOOMANYREQUESTS.
	maxUploadsPerAccount = 16
	// defaultSweepEvery: how often idle uploads are looked for.
	defaultSweepEvery = 5 * time.Minute
)

// errTooManyUploads: the account has maxUploadsPerAccount uploads open.
var errTooManyUploads = errors.New("too many uploads in progress")

// Config configures the registry.
type Config struct {
	// Dir holds blobs, uploads in progress and manifest records.
	Dir string
	// Store receives images/<owner>/<name:tag> records.
	Store store.Store
	// Authenticate maps Basic credentials (AK, SK) to an account id; any
	// error means 401.
	Authenticate func(ctx context.Context, user, pass string) (accountID string, err error)
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// MaxBlobBytes caps one blob (DefaultMaxBlobBytes when 0).
	MaxBlobBytes int64
	// MaxManifestBytes caps one manifest (DefaultMaxManifestBytes when 0).
	MaxManifestBytes int64
	// Now stamps image records; time.Now when nil.
	Now func() time.Time
	// PullUser and PullPassword, when both set, are the platform's own
	// read-only credentials: the runtime pulling a deployment's image
	// (podman, Nomad's docker driver) may GET and HEAD manifests and blobs
	// of every repository with them, and do nothing else.
	PullUser, PullPassword string
	// Context bounds the registry's background work, the periodic sweep
	// of upload sessions idle longer than an hour: it stops when Context
	// is done. context.Background() (for the life of the process) when
	// nil.
	Context context.Context

	// sweepEvery is the period of that sweep (defaultSweepEvery when 0).
	sweepEvery time.Duration
}

// ImageRecord is the value stored under images/<owner>/<name:tag>.
type ImageRecord struct {
	Name       string    `json:"name"`       // "ufopdemo:v1", without the owner
	Repository string    `json:"repository"` // "<owner>/ufopdemo"
	Tag        string    `json:"tag"`
	Digest     string    `json:"digest"` // manifest digest
	MediaType  string    `json:"mediaType"`
	Size       int64     `json:"size"` // manifest size
	Created    time.Time `json:"created"`
	Ref        string    `json:"ref,omitempty"`
}

// Image is one pushed image as GET /v1/images lists it (JSON-compatible
// with the admin's image listing).
type Image struct {
	Name    string    `json:"name"`
	Kind    string    `json:"kind"` // always "oci"
	Digest  string    `json:"digest,omitempty"`
	Created time.Time `json:"created"`
	Ref     string    `json:"ref,omitempty"`
}

// ListImages lists the images owner pushed, from the store records, sorted
// by name.
func ListImages(ctx context.Context, st store.Store, owner string) ([]Image, error) {
	if !validOwner(owner) {
		return nil, fmt.Errorf("list images: bad owner %q", owner)
	}
	prefix := store.ImagesOf(owner)
	kvs, err := st.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("list images of %s: %w", owner, err)
	}
	out := make([]Image, 0, len(kvs))
	for _, kv := range kvs {
		var rec ImageRecord
		_ = json.Unmarshal(kv.Value, &rec) // an unreadable record still names an image
		out = append(out, Image{Name: strings.TrimPrefix(kv.Key, prefix), Kind: "oci", Digest: rec.Digest, Created: rec.Created, Ref: rec.Ref})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

var (
	ownerRE     = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	componentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)
	tagRE       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

func validOwner(s string) bool { return ownerRE.MatchString(s) }

// Registry is the handler New returns.
type Registry struct {
	cfg   Config
	log   *slog.Logger
	blobs *diskBlobs
	inner http.Handler

	mu      sync.Mutex
	uploads map[string]*upload
	// manifestMu serialises manifest PUTs and DELETEs: each changes
	// pkg/registry's memory and the records on disk together.
	manifestMu sync.Mutex
	// sweepDone is closed when the sweep of idle uploads has stopped.
	sweepDone chan struct{}
}

// upload is a blob upload session.
type upload struct {
	mu      sync.Mutex
	repo    string
	account string // the repository's owner, whose bound it counts in
	path    string
	f       *os.File
	h       hash.Hash
	size    int64
	touched time.Time
	// gone is set when the session has been dropped: a request that
	// found it before then answers BLOB_UPLOAD_UNKNOWN.
	gone atomic.Bool
}

// New builds the registry handler over cfg.Dir and replays the persisted
// manifests.
func New(cfg Config) (http.Handler, error) {
	if cfg.Dir == "" || cfg.Store == nil || cfg.Authenticate == nil {
		return nil, errors.New("registry: Dir, Store and Authenticate are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBlobBytes <= 0 {
		cfg.MaxBlobBytes = DefaultMaxBlobBytes
	}
	if cfg.MaxManifestBytes <= 0 {
		cfg.MaxManifestBytes = DefaultMaxManifestBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Context == nil {
		cfg.Context = context.Background()
	}
	if cfg.sweepEvery <= 0 {
		cfg.sweepEvery = defaultSweepEvery
	}
	blobs, err := newDiskBlobs(cfg.Dir, cfg.MaxBlobBytes)
	if err != nil {
		return nil, err
	}
	r := &Registry{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "registry"),
		blobs:   blobs,
		uploads: map[string]*upload{},
	}
	r.inner = ggcr.New(ggcr.WithBlobHandler(blobs), ggcr.Logger(slog.NewLogLogger(r.log.Handler(), slog.LevelDebug)))
	if err := r.replay(); err != nil {
		return nil, err
	}
	r.sweepDone = make(chan struct{})
	go r.sweepUploads(cfg.Context, cfg.sweepEvery)
	return r, nil
}

// sweepUploads drops, every period until ctx is done, the upload sessions
// idle longer than uploadTTL, whether or not another upload starts.
func (r *Registry) sweepUploads(ctx context.Context, every time.Duration) {
	defer close(r.sweepDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.mu.Lock()
			stale := r.expiredLocked(r.cfg.Now())
			r.mu.Unlock()
			closeUploads(stale)
		}
	}
}

// ociError writes the distribution spec's error body.
func ociError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

// route is a parsed /v2/ path.
type route struct {
	kind   string // "base", "catalog", "blob", "upload", "manifest", "tags", "other"
	repo   string
	target string // digest, tag, upload id
}

func parseRoute(p string) (route, bool) {
	if p == "/v2" || p == "/v2/" {
		return route{kind: "base"}, true
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return route{}, false
	}
	rest = strings.TrimSuffix(rest, "/")
	if rest == "_catalog" {
		return route{kind: "catalog"}, true
	}
	e := strings.Split(rest, "/")
	n := len(e)
	switch {
	case n >= 3 && e[n-2] == "blobs" && e[n-1] == "uploads":
		return route{kind: "upload", repo: strings.Join(e[:n-2], "/")}, true
	case n >= 4 && e[n-3] == "blobs" && e[n-2] == "uploads":
		return route{kind: "upload", repo: strings.Join(e[:n-3], "/"), target: e[n-1]}, true
	case n >= 3 && e[n-2] == "blobs":
		return route{kind: "blob", repo: strings.Join(e[:n-2], "/"), target: e[n-1]}, true
	case n >= 3 && e[n-2] == "manifests":
		return route{kind: "manifest", repo: strings.Join(e[:n-2], "/"), target: e[n-1]}, true
	case n >= 3 && e[n-2] == "tags" && e[n-1] == "list":
		return route{kind: "tags", repo: strings.Join(e[:n-2], "/")}, true
	}
	return route{kind: "other"}, true
}

// validRepo checks "<owner>/<name>[/<name>...]".
func validRepo(repo string) bool {
	parts := strings.Split(repo, "/")
	if len(parts) < 2 || !validOwner(parts[0]) || len(repo) > 255 {
		return false
	}
	for _, c := range parts[1:] {
		if !componentRE.MatchString(c) {
			return false
		}
	}
	return true
}

// ServeHTTP authenticates, authorises and dispatches a /v2/ request.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	rt, ok := parseRoute(req.URL.Path)
	if !ok {
		ociError(w, http.StatusNotFound, "NAME_UNKNOWN", "not a registry path")
		return
	}
	user, pass, hasAuth := req.BasicAuth()
	if hasAuth && r.isPuller(user, pass) {
		r.servePuller(w, req, rt)
		return
	}
	var account string
	var err error
	if hasAuth {
		account, err = r.cfg.Authenticate(req.Context(), user, pass)
	}
	if !hasAuth || err != nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="dora"`)
		msg := "authentication required: basic auth with your access key and secret key"
		if err != nil {
			msg = "authentication failed"
		}
		ociError(w, http.StatusUnauthorized, "UNAUTHORIZED", msg)
		return
	}
	switch rt.kind {
	case "base":
		w.WriteHeader(http.StatusOK)
		return
	case "catalog":
		r.catalog(w, req, account)
		return
	case "other":
		ociError(w, http.StatusNotFound, "UNSUPPORTED", "unknown registry path")
		return
	}
	if !validRepo(rt.repo) {
		ociError(w, http.StatusBadRequest, "NAME_INVALID", fmt.Sprintf("repository %q: want <account id>/<name>", rt.repo))
		return
	}
	if ownerOf(rt.repo) != account {
		ociError(w, http.StatusForbidden, "DENIED", fmt.Sprintf("repository %s belongs to another account; push to %s/<name>", rt.repo, account))
		return
	}
	switch rt.kind {
	case "upload":
		r.handleUpload(w, req, rt)
	case "manifest":
		r.handleManifest(w, req, rt)
	case "tags":
		r.handleTags(w, req)
	case "blob":
		r.serveBlob(w, req, rt)
	default:
		r.inner.ServeHTTP(w, req)
	}
}

// serveBlob answers GET and HEAD of a blob with http.ServeContent, which
// honours byte ranges as RFC 9110 has them: pkg/registry served other
// bytes than asked for a reversed range, a cut body for a negative start,
// and refused the open-ended range ("bytes=<offset>-") a client resuming a
// pull sends. Other methods go to pkg/registry.
func (r *Registry) serveBlob(w http.ResponseWriter, req *http.Request, rt route) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		r.inner.ServeHTTP(w, req)
		return
	}
	h, err := v1.NewHash(rt.target)
	if err != nil {
		ociError(w, http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("digest %q: %v", rt.target, err))
		return
	}
	f, err := r.blobs.open(rt.repo, h)
	if errors.Is(err, ggcr.ErrNotFound) {
		ociError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
		return
	}
	if err != nil {
		r.log.Error("open blob", "repo", rt.repo, "digest", h.String(), "err", err)
		ociError(w, http.StatusInternalServerError, "UNKNOWN", "reading the blob failed")
		return
	}
	defer f.Close()
	w.Header().Set("Docker-Content-Digest", h.String())
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Etag", `"`+h.String()+`"`)
	http.ServeContent(w, req, "", time.Time{}, f)
}

// handleTags serves tags/list: pkg/registry lists every tag and the page
// the query asks for (n, last) is cut here, since pkg/registry panics on a
// negative n and answers the first page again for a last past every tag.
func (r *Registry) handleTags(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet {
		r.inner.ServeHTTP(w, req)
		return
	}
	q := req.URL.Query()
	n := -1
	if ns := q.Get("n"); ns != "" {
		v, err := strconv.Atoi(ns)
		if err != nil || v < 0 {
			ociError(w, http.StatusBadRequest, "PAGINATION_NUMBER_INVALID", fmt.Sprintf("n=%q: want a number of tags, 0 or more", ns))
			return
		}
		n = v
	}
	in := req.Clone(req.Context())
	in.URL.RawQuery = ""
	rec := httptest.NewRecorder()
	r.inner.ServeHTTP(rec, in)
	if rec.Code != http.StatusOK {
		copyRecorded(w, rec)
		return
	}
	var list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
		ociError(w, http.StatusInternalServerError, "UNKNOWN", fmt.Sprintf("listing tags: %v", err))
		return
	}
	tags := list.Tags
	sort.Strings(tags)
	if last := q.Get("last"); last != "" {
		tags = tags[sort.Search(len(tags), func(i int) bool { return tags[i] > last }):]
	}
	if n >= 0 && n < len(tags) {
		tags = tags[:n]
	}
	if tags == nil {
		tags = []string{}
	}
	list.Tags = tags
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(list)
}

// PullUserName is the user name of the pull credentials PullCredentials
// derives.
const PullUserName = "dora-pull"

// PullCredentials derives the platform's read-only pull credentials
// (Config.PullUser, PullPassword) from the root secret key: every admin of
// a platform shares the root keys, so every admin (and every Nomad job
// one of them rendered) agrees on them without another secret to
// distribute. The password is HMAC-SHA256(rootSK, "dora registry pull v1"):
// it reveals nothing of the root key, and changes when the root key does.
func PullCredentials(rootSK string) (user, password string) {
	m := hmac.New(sha256.New, []byte(rootSK))
	m.Write([]byte("dora registry pull v1"))
	return PullUserName, hex.EncodeToString(m.Sum(nil))
}

// isPuller reports whether user/pass are Config's pull credentials.
func (r *Registry) isPuller(user, pass string) bool {
	if r.cfg.PullUser == "" || r.cfg.PullPassword == "" {
		return false
	}
	u := subtle.ConstantTimeCompare([]byte(user), []byte(r.cfg.PullUser))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(r.cfg.PullPassword))
	return u&p == 1
}

// servePuller serves the platform's pull credentials: reads of manifests
// and blobs of any repository, 403 for everything else.
func (r *Registry) servePuller(w http.ResponseWriter, req *http.Request, rt route) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		ociError(w, http.StatusForbidden, "DENIED", "the platform's pull credentials only read")
		return
	}
	switch rt.kind {
	case "base":
		w.WriteHeader(http.StatusOK)
	case "manifest", "blob":
		if !validRepo(rt.repo) {
			ociError(w, http.StatusBadRequest, "NAME_INVALID", fmt.Sprintf("repository %q: want <account id>/<name>", rt.repo))
			return
		}
		if rt.kind == "manifest" {
			r.handleManifest(w, req, rt)
			return
		}
		r.serveBlob(w, req, rt)
	default:
		ociError(w, http.StatusForbidden, "DENIED", "the platform's pull credentials only read manifests and blobs")
	}
}

func (r *Registry) catalog(w http.ResponseWriter, req *http.Request, account string) {
	imgs, err := ListImages(req.Context(), r.cfg.Store, account)
	if err != nil {
		ociError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	seen := map[string]bool{}
	repos := []string{}
	for _, im := range imgs {
		name, _, _ := strings.Cut(im.Name, ":")
		if repo := account + "/" + name; !seen[repo] {
			seen[repo] = true
			repos = append(repos, repo)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"repositories": repos})
}

// handleUpload serves the blob upload protocol, streaming to disk.
func (r *Registry) handleUpload(w http.ResponseWriter, req *http.Request, rt route) {
	defer req.Body.Close()
	switch {
	case req.Method == http.MethodPost && rt.target == "":
		if d := req.URL.Query().Get("digest"); d != "" {
			r.monolithic(w, req, rt, d)
			return
		}
		_, id, err := r.newSession(rt.repo)
		if err != nil {
			sessionFailed(w, err)
			return
		}
		r.uploadAccepted(w, rt.repo, id, 0, http.StatusAccepted)
	case rt.target == "":
		ociError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "start an upload with POST")
	case req.Method == http.MethodPatch:
		u, ok := r.lockSession(w, rt)
		if !ok {
			return
		}
		defer u.mu.Unlock()
		if cr := req.Header.Get("Content-Range"); cr != "" {
			start, _, _ := strings.Cut(cr, "-")
			if s, err := strconv.ParseInt(strings.TrimSpace(start), 10, 64); err != nil || s != u.size {
				ociError(w, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID", fmt.Sprintf("Content-Range %q does not continue at %d", cr, u.size))
				return
			}
		}
		if err := r.appendTo(u, req.Body); err != nil {
			r.uploadFailed(w, rt.target, err)
			return
		}
		r.uploadAccepted(w, rt.repo, rt.target, u.size, http.StatusAccepted)
	case req.Method == http.MethodPut:
		u, ok := r.lockSession(w, rt)
		if !ok {
			return
		}
		defer u.mu.Unlock()
		h, err := v1.NewHash(req.URL.Query().Get("digest"))
		if err != nil || checkHash(h) != nil {
			ociError(w, http.StatusBadRequest, "DIGEST_INVALID", "digest must be sha256:<64 hex>")
			return
		}
		if err := r.appendTo(u, req.Body); err != nil {
			r.uploadFailed(w, rt.target, err)
			return
		}
		// The session ends here whatever happens; a committed file has been
		// renamed away before dropSession removes the temporary path.
		defer r.dropSession(rt.target)
		r.commitUpload(w, rt.repo, h, u)
	case req.Method == http.MethodGet:
		u, ok := r.lockSession(w, rt)
		if !ok {
			return
		}
		size := u.size
		u.mu.Unlock()
		r.uploadAccepted(w, rt.repo, rt.target, size, http.StatusNoContent)
	case req.Method == http.MethodDelete:
		if _, ok := r.openSession(w, rt); !ok {
			return
		}
		r.dropSession(rt.target)
		w.WriteHeader(http.StatusNoContent)
	default:
		ociError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", req.Method+" on an upload")
	}
}

// monolithic handles POST ...?digest=: the whole blob in one request.
func (r *Registry) monolithic(w http.ResponseWriter, req *http.Request, rt route, digest string) {
	h, err := v1.NewHash(digest)
	if err != nil || checkHash(h) != nil {
		ociError(w, http.StatusBadRequest, "DIGEST_INVALID", "digest must be sha256:<64 hex>")
		return
	}
	u, id, err := r.newSession(rt.repo)
	if err != nil {
		sessionFailed(w, err)
		return
	}
	defer r.dropSession(id)
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := r.appendTo(u, req.Body); err != nil {
		r.uploadFailed(w, id, err)
		return
	}
	r.commitUpload(w, rt.repo, h, u)
}

// sessionFailed answers a POST that could not start an upload.
func sessionFailed(w http.ResponseWriter, err error) {
	if errors.Is(err, errTooManyUploads) {
		w.Header().Set("Retry-After", "60")
		ociError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS",
			fmt.Sprintf("%d blob uploads of this account are in progress; finish or cancel (DELETE) one, or wait: an upload idle for %s is dropped", maxUploadsPerAccount, uploadTTL))
		return
	}
	ociError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
}

// openSession is the upload session rt names; when there is none it
// answers 404 BLOB_UPLOAD_UNKNOWN and returns false.
func (r *Registry) openSession(w http.ResponseWriter, rt route) (*upload, bool) {
	u, ok := r.session(rt.repo, rt.target)
	if !ok {
		ociError(w, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "no such upload")
	}
	return u, ok
}

// lockSession is openSession, returning the session locked; a session
// dropped while this request waited for it is unknown too.
func (r *Registry) lockSession(w http.ResponseWriter, rt route) (*upload, bool) {
	u, ok := r.openSession(w, rt)
	if !ok {
		return nil, false
	}
	u.mu.Lock()
	if u.gone.Load() {
		u.mu.Unlock()
		ociError(w, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "no such upload")
		return nil, false
	}
	return u, true
}

// commitUpload ends an upload whose bytes have all been appended to u: the
// content must have digest h; the file is closed and stored as the blob h
// of repo, and the reply is 201 with its location (the last chunk of a
// chunked upload and a monolithic POST end the same way).
func (r *Registry) commitUpload(w http.ResponseWriter, repo string, h v1.Hash, u *upload) {
	if got := "sha256:" + hex.EncodeToString(u.h.Sum(nil)); got != h.String() {
		ociError(w, http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("uploaded content has digest %s, not %s", got, h))
		return
	}
	if err := r.blobs.commit(repo, h, u.f); err != nil {
		ociError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	r.blobCreated(w, repo, h)
}

func (r *Registry) blobCreated(w http.ResponseWriter, repo string, h v1.Hash) {
	w.Header().Set("Location", "/v2/"+repo+"/blobs/"+h.String())
	w.Header().Set("Docker-Content-Digest", h.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

func (r *Registry) uploadAccepted(w http.ResponseWriter, repo, id string, size int64, status int) {
	w.Header().Set("Location", "/v2/"+repo+"/blobs/uploads/"+id)
	w.Header().Set("Docker-Upload-UUID", id)
	end := size - 1
	if end < 0 {
		end = 0
	}
	w.Header().Set("Range", fmt.Sprintf("0-%d", end))
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(status)
}

func (r *Registry) uploadFailed(w http.ResponseWriter, id string, err error) {
	r.dropSession(id)
	if errors.Is(err, ErrTooLarge) {
		ociError(w, http.StatusRequestEntityTooLarge, "SIZE_INVALID", err.Error())
		return
	}
	ociError(w, http.StatusBadRequest, "BLOB_UPLOAD_INVALID", err.Error())
}

// appendTo streams body to the session's file, hashing it, within the cap.
func (r *Registry) appendTo(u *upload, body io.Reader) error {
	// Idle time counts from the end of a request: a chunk that took long
	// to arrive does not leave its session already expired.
	defer func() { u.touched = r.cfg.Now() }()
	remaining := r.cfg.MaxBlobBytes - u.size
	n, err := io.Copy(io.MultiWriter(u.f, u.h), io.LimitReader(body, remaining+1))
	u.size += n
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	if u.size > r.cfg.MaxBlobBytes {
		return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, r.cfg.MaxBlobBytes)
	}
	return nil
}

// newSession starts an upload to repo, within its owner's bound of
// maxUploadsPerAccount sessions (sessions idle longer than uploadTTL are
// dropped first); errTooManyUploads over it.
func (r *Registry) newSession(repo string) (*upload, string, error) {
	account := ownerOf(repo)
	now := r.cfg.Now()
	r.mu.Lock()
	stale := r.expiredLocked(now)
	n := 0
	for _, s := range r.uploads {
		if s.account == account {
			n++
		}
	}
	if n >= maxUploadsPerAccount {
		r.mu.Unlock()
		closeUploads(stale)
		return nil, "", errTooManyUploads
	}
	f, err := r.blobs.newUpload()
	if err != nil {
		r.mu.Unlock()
		closeUploads(stale)
		return nil, "", fmt.Errorf("upload: %w", err)
	}
	id := filepath.Base(f.Name())
	u := &upload{repo: repo, account: account, path: f.Name(), f: f, h: sha256.New(), touched: now}
	r.uploads[id] = u
	r.mu.Unlock()
	closeUploads(stale)
	return u, id, nil
}

// expiredLocked takes out of r.uploads, and returns, the sessions idle
// longer than uploadTTL at now; a session a request holds is in use, not
// idle. r.mu is held.
func (r *Registry) expiredLocked(now time.Time) []*upload {
	var stale []*upload
	for id, u := range r.uploads {
		if !u.mu.TryLock() {
			continue
		}
		if now.Sub(u.touched) > uploadTTL {
			u.gone.Store(true)
			delete(r.uploads, id)
			stale = append(stale, u)
		}
		u.mu.Unlock()
	}
	return stale
}

// closeUploads closes and removes the files of dropped sessions.
func closeUploads(us []*upload) {
	for _, u := range us {
		u.f.Close()
		os.Remove(u.path)
	}
}

func (r *Registry) session(repo, id string) (*upload, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u, ok := r.uploads[id]
	if !ok || u.repo != repo {
		return nil, false
	}
	return u, true
}

// dropSession forgets an upload and removes its file (a committed file has
// been renamed away already).
func (r *Registry) dropSession(id string) {
	r.mu.Lock()
	u, ok := r.uploads[id]
	delete(r.uploads, id)
	r.mu.Unlock()
	if ok {
		u.gone.Store(true)
		closeUploads([]*upload{u})
	}
}

// manifestRecord is the on-disk record of one manifest reference.
type manifestRecord struct {
	ContentType string `json:"contentType"`
	Digest      string `json:"digest"`
}

func (r *Registry) refPath(repo, ref string) string {
	return filepath.Join(r.cfg.Dir, "manifests", filepath.FromSlash(repo), "_refs", ref)
}

// handleManifest passes manifest calls to pkg/registry and persists PUTs
// and DELETEs it accepted.
func (r *Registry) handleManifest(w http.ResponseWriter, req *http.Request, rt route) {
	isDigest := strings.HasPrefix(rt.target, "sha256:")
	if isDigest {
		if h, err := v1.NewHash(rt.target); err != nil || checkHash(h) != nil {
			ociError(w, http.StatusBadRequest, "DIGEST_INVALID", "bad manifest digest")
			return
		}
	} else if !tagRE.MatchString(rt.target) {
		ociError(w, http.StatusBadRequest, "TAG_INVALID", fmt.Sprintf("tag %q", rt.target))
		return
	}
	switch req.Method {
	case http.MethodPut:
		body, err := io.ReadAll(io.LimitReader(req.Body, r.cfg.MaxManifestBytes+1))
		if err != nil {
			ociError(w, http.StatusBadRequest, "MANIFEST_INVALID", err.Error())
			return
		}
		if int64(len(body)) > r.cfg.MaxManifestBytes {
			ociError(w, http.StatusRequestEntityTooLarge, "SIZE_INVALID", fmt.Sprintf("manifest larger than %d bytes", r.cfg.MaxManifestBytes))
			return
		}
		ct := req.Header.Get("Content-Type")
		sum := sha256.Sum256(body)
		digest := "sha256:" + hex.EncodeToString(sum[:])
		if isDigest && rt.target != digest {
			ociError(w, http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("manifest has digest %s, not %s", digest, rt.target))
			return
		}
		r.manifestMu.Lock()
		defer r.manifestMu.Unlock()
		rec := r.forward(req, body)
		if rec.Code == http.StatusCreated {
			if err := r.persist(req.Context(), rt, ct, digest, body); err != nil {
				r.log.Error("persist manifest", "repo", rt.repo, "ref", rt.target, "err", err)
				ociError(w, http.StatusInternalServerError, "UNKNOWN", "storing the manifest failed; push again")
				return
			}
			r.log.Info("manifest pushed", "repo", rt.repo, "ref", rt.target, "digest", digest)
		}
		copyRecorded(w, rec)
	case http.MethodDelete:
		r.manifestMu.Lock()
		defer r.manifestMu.Unlock()
		head := r.innerDo(http.MethodHead, "/v2/"+rt.repo+"/manifests/"+rt.target)
		if head.Code != http.StatusOK {
			copyRecorded(w, r.forward(req, nil)) // pkg/registry's 404
			return
		}
		digest := head.Header().Get("Docker-Content-Digest")
		var err error
		if isDigest {
			err = r.deleteDigest(req.Context(), rt.repo, digest)
		} else {
			err = r.untag(req.Context(), rt.repo, rt.target, digest, head.Header().Get("Content-Type"))
		}
		if err != nil {
			r.log.Error("delete manifest", "repo", rt.repo, "ref", rt.target, "err", err)
			ociError(w, http.StatusInternalServerError, "UNKNOWN", "deleting the manifest failed; delete again")
			return
		}
		r.log.Info("manifest deleted", "repo", rt.repo, "ref", rt.target, "digest", digest)
		w.WriteHeader(http.StatusAccepted)
	default:
		r.inner.ServeHTTP(w, req)
	}
}

// deleteDigest deletes the manifest digest of repo and, as the
// distribution spec has it, every tag that points to it: their records on
// disk and in the store first (the digest's last, so that a crash between
// leaves no tag to recreate it at the next start), then pkg/registry's.
// On an error pkg/registry still has them all, and a DELETE again finds
// them.
func (r *Registry) deleteDigest(ctx context.Context, repo, digest string) error {
	tags, err := r.tagsOf(repo, digest)
	if err != nil {
		return err
	}
	for _, tag := range tags {
		if err := r.removeRef(repo, tag); err != nil {
			return err
		}
		if err := r.cfg.Store.Delete(ctx, imageKey(repo, tag)); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("delete image record %s:%s: %w", repo, tag, err)
		}
	}
	if err := r.removeRef(repo, digest); err != nil {
		return err
	}
	for _, ref := range append(tags, digest) {
		r.innerDo(http.MethodDelete, "/v2/"+repo+"/manifests/"+ref)
	}
	return nil
}

// untag deletes tag of repo; the manifest it pointed to stays, by digest,
// as the distribution spec has it (a deployment may pull it by digest).
// A manifest pushed by tag only has no record of its digest, from which
// the next start would bring it back: one is written before the tag's is
// removed.
func (r *Registry) untag(ctx context.Context, repo, tag, digest, contentType string) error {
	if _, err := os.Stat(r.refPath(repo, digest)); errors.Is(err, os.ErrNotExist) {
		if err := r.writeRef(repo, digest, manifestRecord{ContentType: contentType, Digest: digest}); err != nil {
			return err
		}
	}
	if err := r.removeRef(repo, tag); err != nil {
		return err
	}
	if err := r.cfg.Store.Delete(ctx, imageKey(repo, tag)); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("delete image record %s:%s: %w", repo, tag, err)
	}
	r.innerDo(http.MethodDelete, "/v2/"+repo+"/manifests/"+tag)
	return nil
}

// tagsOf lists the tags of repo that point to digest, as pkg/registry has
// them.
func (r *Registry) tagsOf(repo, digest string) ([]string, error) {
	rec := r.innerDo(http.MethodGet, "/v2/"+repo+"/tags/list")
	if rec.Code == http.StatusNotFound {
		return nil, nil
	}
	var list struct {
		Tags []string `json:"tags"`
	}
	if rec.Code != http.StatusOK {
		return nil, fmt.Errorf("list tags of %s: status %d", repo, rec.Code)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", repo, err)
	}
	var out []string
	for _, tag := range list.Tags {
		if h := r.innerDo(http.MethodHead, "/v2/"+repo+"/manifests/"+tag); h.Code == http.StatusOK && h.Header().Get("Docker-Content-Digest") == digest {
			out = append(out, tag)
		}
	}
	return out, nil
}

// removeRef removes the record of a reference (durably: the directory is
// synced).
func (r *Registry) removeRef(repo, ref string) error {
	p := r.refPath(repo, ref)
	if err := os.Remove(p); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("delete manifest record: %w", err)
	}
	if err := r.blobs.syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("delete manifest record: %w", err)
	}
	return nil
}

// innerDo sends pkg/registry a request of the registry's own, without a
// body, and records its (small) reply.
func (r *Registry) innerDo(method, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	r.inner.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

// forward sends a request with the given body to pkg/registry and records
// its (small) reply.
func (r *Registry) forward(req *http.Request, body []byte) *httptest.ResponseRecorder {
	in := req.Clone(req.Context())
	in.Body = io.NopCloser(bytes.NewReader(body))
	in.ContentLength = int64(len(body))
	rec := httptest.NewRecorder()
	r.inner.ServeHTTP(rec, in)
	return rec
}

func copyRecorded(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func imageKey(repo, tag string) string {
	owner, name, _ := strings.Cut(repo, "/")
	return store.ImageKey(owner, name, tag)
}

// persist writes the manifest bytes and its reference record to disk, and
// the image record to the store for a tag.
func (r *Registry) persist(ctx context.Context, rt route, contentType, digest string, body []byte) error {
	h, _ := v1.NewHash(digest)
	f, err := r.blobs.newUpload()
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(body); err != nil {
		f.Close()
		return err
	}
	if err := r.blobs.commit(rt.repo, h, f); err != nil {
		return err
	}
	if err := r.writeRef(rt.repo, rt.target, manifestRecord{ContentType: contentType, Digest: digest}); err != nil {
		return err
	}
	if strings.HasPrefix(rt.target, "sha256:") {
		return nil
	}
	_, name, _ := strings.Cut(rt.repo, "/")
	img := ImageRecord{Name: name + ":" + rt.target, Repository: rt.repo, Tag: rt.target, Digest: digest,
		MediaType: contentType, Size: int64(len(body)), Created: r.cfg.Now().UTC()}
	val, _ := json.Marshal(img)
	if _, err := r.cfg.Store.Put(ctx, imageKey(rt.repo, rt.target), val); err != nil {
		return fmt.Errorf("record image %s: %w", img.Name, err)
	}
	return nil
}

// writeRef writes, durably, the record of reference ref (a tag or a
// digest) of repo.
func (r *Registry) writeRef(repo, ref string, rec manifestRecord) error {
	recBytes, _ := json.Marshal(rec)
	p := r.refPath(repo, ref)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	// The temporary name starts with a dot, which no tag or digest does:
	// it never overwrites another reference's record (tag "v1.tmp" while
	// "v1" is written), and concurrent PUTs of one tag do not share it.
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(recBytes); err != nil {
		tmp.Close()
		return err
	}
	if err := r.blobs.syncFile(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return err
	}
	return r.blobs.syncDir(filepath.Dir(p))
}

// replay feeds the persisted manifests back into pkg/registry: digest
// references before tags, plain manifests before indexes, and an index
// again after the indexes it names (an index needs its children present).
func (r *Registry) replay() error {
	root := filepath.Join(r.cfg.Dir, "manifests")
	type entry struct {
		repo, ref string
		rec       manifestRecord
		index     bool
	}
	var entries []entry
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if d.IsDir() || filepath.Base(filepath.Dir(p)) != "_refs" || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		rel, err := filepath.Rel(root, filepath.Dir(filepath.Dir(p)))
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var rec manifestRecord
		if err := json.Unmarshal(b, &rec); err != nil {
			r.log.Warn("skipping unreadable manifest record", "path", p, "err", err)
			return nil
		}
		entries = append(entries, entry{repo: filepath.ToSlash(rel), ref: d.Name(), rec: rec, index: types.MediaType(rec.ContentType).IsIndex()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: read manifests: %w", err)
	}
	sort.SliceStable(entries, func(i, j int) bool {
		a, b := entries[i], entries[j]
		ad, bd := strings.HasPrefix(a.ref, "sha256:"), strings.HasPrefix(b.ref, "sha256:")
		if ad != bd {
			return ad
		}
		return !a.index && b.index
	})
	// pkg/registry refuses an index before its children: one whose child
	// is an index replayed later in this order (an index of indexes) is
	// replayed again once that child is in, in rounds until none is.
	type failed struct {
		e    entry
		code int
		body string
	}
	pending := entries
	for len(pending) > 0 {
		var retry []entry
		var fails []failed
		for _, e := range pending {
			h, err := v1.NewHash(e.rec.Digest)
			if err != nil {
				r.log.Warn("skipping manifest record", "repo", e.repo, "ref", e.ref, "err", err)
				continue
			}
			body, err := r.blobs.readBlob(h, r.cfg.MaxManifestBytes)
			if err != nil {
				r.log.Warn("manifest bytes missing", "repo", e.repo, "ref", e.ref, "err", err)
				continue
			}
			req := httptest.NewRequest(http.MethodPut, "/v2/"+e.repo+"/manifests/"+e.ref, bytes.NewReader(body))
			req.Header.Set("Content-Type", e.rec.ContentType)
			rec := httptest.NewRecorder()
			r.inner.ServeHTTP(rec, req)
			if rec.Code != http.StatusCreated {
				retry = append(retry, e)
				fails = append(fails, failed{e, rec.Code, rec.Body.String()})
			}
		}
		if len(retry) == len(pending) {
			for _, f := range fails {
				r.log.Warn("replaying manifest failed", "repo", f.e.repo, "ref", f.e.ref, "status", f.code, "body", f.body)
			}
			break
		}
		pending = retry
	}
	return nil
}
