package pfop

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Resumable uploads, as Qiniu's SDKs send them (docs/api.md):
//
//	v1  POST /mkblk/<blockSize>            first chunk of a block → {"ctx",...}
//	    POST /bput/<ctx>/<offset>          next chunk of that block
//	    POST /mkfile/<fsize>[/key/<EncodedKey>][/fname/..][/mimeType/..][/x:var/..]
//	                                       body: the blocks' last ctxs, comma-separated
//	v2  POST   /buckets/<b>/objects/<EncodedKey|~>/uploads              → {"uploadId","expireAt"}
//	    PUT    /buckets/<b>/objects/<EncodedKey|~>/uploads/<id>/<n>     a part (Content-MD5 optional)
//	    POST   /buckets/<b>/objects/<EncodedKey|~>/uploads/<id>         complete: {"parts":[...]}
//	    DELETE /buckets/<b>/objects/<EncodedKey|~>/uploads/<id>         abort
//	    GET    /buckets/<b>/objects/<EncodedKey|~>/uploads/<id>         list parts
//
// Every request carries "Authorization: UpToken <upload token>". Blocks and
// parts are spooled to files under HandlerConfig.SpoolDir as they arrive
// and concatenated, one file open at a time, into the object store's
// writer at completion: no file is ever held in memory. The completion goes
// through the form upload's own checks (checkUpload, storeUpload,
// replyUpload): scope, deadline, insertOnly, fsizeLimit, mimeLimit,
// returnBody and persistentOps apply exactly as they do there. Unfinished
// uploads expire after UploadExpiry and are swept.
const (
	pathMkblk   = "/mkblk/"
	pathBput    = "/bput/"
	pathMkfile  = "/mkfile/"
	pathBuckets = "/buckets/"

	// BlockSize is the v1 block size (the last block of a file may be smaller).
	BlockSize = 4 << 20
	// MaxPartBytes bounds one v2 part.
	MaxPartBytes = 1 << 30
	// MaxParts bounds the part numbers of a v2 upload (1 to MaxParts).
	MaxParts = 10000
	// DefaultUploadExpiry is how long unfinished blocks and parts are kept
	// (Qiniu keeps them 7 days).
	DefaultUploadExpiry = 7 * 24 * time.Hour

	// StatusBadCtx is Qiniu's answer to an unknown or expired v1 ctx.
	StatusBadCtx = 701
	// StatusNoUpload is the answer to an unknown or expired v2 uploadId.
	StatusNoUpload = 612

	maxCtxListBytes = 4 << 20
	sweepEvery      = time.Minute
	sessionMeta     = "meta.json"
	kindBlock       = "blk"
	kindUpload      = "up"
	nSessionLocks   = 64
)

// session is one v1 block or one v2 upload waiting in the spool.
type session struct {
	Kind    string    `json:"kind"`
	Owner   string    `json:"owner"`
	Created time.Time `json:"created"`
	// v1: the block's declared size.
	BlockSize int64 `json:"blockSize,omitempty"`
	// v2: the object the upload was initiated for.
	Bucket string `json:"bucket,omitempty"`
	Key    string `json:"key,omitempty"`
	HasKey bool   `json:"hasKey,omitempty"`
}

// partInfo describes a stored v2 part.
type partInfo struct {
	PartNumber int    `json:"partNumber"`
	ETag       string `json:"etag"`
	MD5        string `json:"md5"`
	Size       int64  `json:"size"`
	PutTime    int64  `json:"putTime"`
}

// resumable is the resumable-upload state of a Handler.
type resumable struct {
	locks     [nSessionLocks]sync.Mutex
	sweepMu   sync.Mutex
	lastSweep time.Time
}

func (rs *resumable) lock(id string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(id))
	return &rs.locks[h.Sum32()%nSessionLocks]
}

// matchResumable reports whether path is one of the resumable endpoints.
func matchResumable(p string) bool {
	return strings.HasPrefix(p, pathMkblk) || strings.HasPrefix(p, pathBput) ||
		strings.HasPrefix(p, pathMkfile) ||
		(strings.HasPrefix(p, pathBuckets) && strings.Contains(p, "/objects/") && strings.Contains(p, "/uploads"))
}

func (h *Handler) serveResumable(w http.ResponseWriter, r *http.Request, reqid string) int {
	if h.cfg.SpoolDir == "" {
		return writeError(w, http.StatusServiceUnavailable, "resumable uploads are not configured (no spool directory)")
	}
	token, ok := upToken(r)
	if !ok {
		return writeError(w, http.StatusUnauthorized, `resumable uploads take "Authorization: UpToken <upload token>"`)
	}
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, pathMkblk):
		return h.serveMkblk(w, r, token, strings.TrimPrefix(p, pathMkblk))
	case strings.HasPrefix(p, pathBput):
		return h.serveBput(w, r, token, strings.TrimPrefix(p, pathBput))
	case strings.HasPrefix(p, pathMkfile):
		return h.serveMkfile(w, r, reqid, token, strings.TrimPrefix(p, pathMkfile))
	}
	return h.serveUploadV2(w, r, reqid, token, strings.TrimPrefix(p, pathBuckets))
}

// upToken reads "Authorization: UpToken <token>".
func upToken(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || scheme != "UpToken" || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// decodeB64 decodes URL-safe base64, padded or not.
func decodeB64(s string) (string, error) {
	b, err := base64.URLEncoding.DecodeString(s)
	if err != nil {
		b, err = base64.RawURLEncoding.DecodeString(s)
	}
	return string(b), err
}

func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// validSessionID accepts only what newSessionID makes, so an id never
// names a path outside the spool.
func validSessionID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}

func (h *Handler) sessionDir(id string) string { return filepath.Join(h.cfg.SpoolDir, id) }

// newSession creates the spool directory of a new session.
func (h *Handler) newSession(s session) (string, error) {
	if err := os.MkdirAll(h.cfg.SpoolDir, 0o700); err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	id := newSessionID()
	dir := h.sessionDir(id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("spool: %w", err)
	}
	b, _ := json.Marshal(s)
	if err := os.WriteFile(filepath.Join(dir, sessionMeta), b, 0o600); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("spool: %w", err)
	}
	return id, nil
}

// loadSession reads a live session of kind: ok false when unknown, of
// another kind or expired.
func (h *Handler) loadSession(id, kind string) (session, bool) {
	var s session
	if !validSessionID(id) {
		return s, false
	}
	b, err := os.ReadFile(filepath.Join(h.sessionDir(id), sessionMeta))
	if err != nil || json.Unmarshal(b, &s) != nil || s.Kind != kind {
		return s, false
	}
	if h.cfg.Now().Sub(s.Created) > h.cfg.UploadExpiry {
		return s, false
	}
	return s, true
}

// maybeSweep runs SweepUploads at most once a minute, on the requests that
// start new sessions.
func (h *Handler) maybeSweep() {
	now := h.cfg.Now()
	h.rs.sweepMu.Lock()
	due := now.Sub(h.rs.lastSweep) >= sweepEvery
	if due {
		h.rs.lastSweep = now
	}
	h.rs.sweepMu.Unlock()
	if due {
		if n, err := h.SweepUploads(now); err != nil {
			h.log.Warn("sweeping expired uploads", "err", err)
		} else if n > 0 {
			h.log.Info("swept expired uploads", "removed", n)
		}
	}
}

// SweepUploads removes the spooled blocks and parts of uploads started
// more than UploadExpiry before now (and any spool entry it cannot read
// that is that old) and returns how many it removed.
func (h *Handler) SweepUploads(now time.Time) (int, error) {
	if h.cfg.SpoolDir == "" {
		return 0, nil
	}
	ents, err := os.ReadDir(h.cfg.SpoolDir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sweep uploads: %w", err)
	}
	n := 0
	for _, e := range ents {
		dir := filepath.Join(h.cfg.SpoolDir, e.Name())
		created := time.Time{}
		var s session
		if b, err := os.ReadFile(filepath.Join(dir, sessionMeta)); err == nil && json.Unmarshal(b, &s) == nil {
			created = s.Created
		} else if fi, err := e.Info(); err == nil {
			created = fi.ModTime()
		}
		if now.Sub(created) <= h.cfg.UploadExpiry {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			return n, fmt.Errorf("sweep uploads: %w", err)
		}
		n++
	}
	return n, nil
}

// spoolBody writes r to file name in dir (through a temporary file renamed
// into place), at most limit bytes (errTooLarge beyond), and returns its
// size, MD5 and CRC32.
func spoolBody(dir, name string, r io.Reader, limit int64) (int64, []byte, uint32, error) {
	f, err := os.CreateTemp(dir, name+".tmp-*")
	if err != nil {
		return 0, nil, 0, err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	md := md5.New()
	crc := crc32.NewIEEE()
	n, err := io.Copy(io.MultiWriter(f, md, crc), io.LimitReader(r, limit+1))
	if err == nil && n > limit {
		err = errTooLarge
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, nil, 0, err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return n, nil, 0, err
	}
	return n, md.Sum(nil), crc.Sum32(), nil
}

// blkputRet is the reply of mkblk and bput (Qiniu's BlkputRet).
type blkputRet struct {
	Ctx       string `json:"ctx"`
	Checksum  string `json:"checksum"`
	Crc32     uint32 `json:"crc32"`
	Offset    int64  `json:"offset"`
	Host      string `json:"host"`
	ExpiredAt int64  `json:"expired_at"`
}

// selfURL is how the client reached this server (bput goes to the "host"
// mkblk answers).
func selfURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (h *Handler) serveMkblk(w http.ResponseWriter, r *http.Request, token, rest string) int {
	if r.Method != http.MethodPost {
		return writeError(w, http.StatusMethodNotAllowed, "use POST")
	}
	size, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || size < 1 || size > BlockSize {
		return writeError(w, http.StatusBadRequest, fmt.Sprintf("mkblk/<blockSize>: a block is 1 to %d bytes", BlockSize))
	}
	owner, _, ue := h.verifyUploadToken(r.Context(), token)
	if ue != nil {
		return writeError(w, ue.status, ue.msg)
	}
	h.maybeSweep()
	now := h.cfg.Now().UTC()
	id, err := h.newSession(session{Kind: kindBlock, Owner: owner, Created: now, BlockSize: size})
	if err != nil {
		return writeError(w, http.StatusServiceUnavailable, err.Error())
	}
	return h.writeChunk(w, r, id, size, 0)
}

func (h *Handler) serveBput(w http.ResponseWriter, r *http.Request, token, rest string) int {
	if r.Method != http.MethodPost {
		return writeError(w, http.StatusMethodNotAllowed, "use POST")
	}
	id, off, ok := strings.Cut(rest, "/")
	offset, err := strconv.ParseInt(off, 10, 64)
	if !ok || err != nil || offset < 0 {
		return writeError(w, http.StatusBadRequest, "bput/<ctx>/<offset>: bad offset")
	}
	owner, _, ue := h.verifyUploadToken(r.Context(), token)
	if ue != nil {
		return writeError(w, ue.status, ue.msg)
	}
	s, ok := h.loadSession(id, kindBlock)
	if !ok || s.Owner != owner {
		return writeError(w, StatusBadCtx, "invalid or expired ctx")
	}
	return h.writeChunk(w, r, id, s.BlockSize, offset)
}

// writeChunk appends the request body to block id at offset (a retried
// chunk rewrites from its offset) and answers the block's state. The chunk
// is spooled before the block's lock is taken, so that a client whose
// chunk trickles in, or stops, holds up no other block sharing the lock's
// stripe, nor a retry of its own chunk.
func (h *Handler) writeChunk(w http.ResponseWriter, r *http.Request, id string, blockSize, offset int64) int {
	if offset > blockSize {
		return writeError(w, http.StatusBadRequest, fmt.Sprintf("offset %d is past the block's declared %d bytes", offset, blockSize))
	}
	tmp, err := os.CreateTemp(h.sessionDir(id), "chunk.tmp-*")
	if err != nil {
		return writeError(w, StatusBadCtx, "invalid or expired ctx")
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	crc := crc32.NewIEEE()
	room := blockSize - offset
	n, err := io.Copy(io.MultiWriter(tmp, crc), io.LimitReader(r.Body, room+1))
	if err == nil && n > room {
		return writeError(w, http.StatusBadRequest, fmt.Sprintf("chunk overflows the block's declared %d bytes", blockSize))
	}
	if err != nil {
		return writeError(w, http.StatusBadRequest, "read chunk: "+err.Error())
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return writeError(w, http.StatusServiceUnavailable, "spool: "+err.Error())
	}

	l := h.rs.lock(id)
	l.Lock()
	defer l.Unlock()
	name := filepath.Join(h.sessionDir(id), "data")
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return writeError(w, StatusBadCtx, "invalid or expired ctx")
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return writeError(w, http.StatusServiceUnavailable, "spool: "+err.Error())
	}
	if offset > fi.Size() {
		return writeError(w, http.StatusBadRequest, fmt.Sprintf("offset %d: the block holds only %d bytes", offset, fi.Size()))
	}
	if err := f.Truncate(offset); err != nil {
		return writeError(w, http.StatusServiceUnavailable, "spool: "+err.Error())
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return writeError(w, http.StatusServiceUnavailable, "spool: "+err.Error())
	}
	if _, err := io.Copy(f, tmp); err != nil {
		f.Truncate(offset)
		return writeError(w, http.StatusServiceUnavailable, "spool: "+err.Error())
	}
	s, _ := h.loadSession(id, kindBlock)
	return writeJSON(w, http.StatusOK, blkputRet{
		Ctx: id, Checksum: hex.EncodeToString(crc.Sum(nil)), Crc32: crc.Sum32(), Offset: offset + n,
		Host: selfURL(r), ExpiredAt: s.Created.Add(h.cfg.UploadExpiry).Unix(),
	})
}

// mkfileParams reads /<fsize>[/<name>/<EncodedValue>]...: key, fname,
// mimeType, x:<var> and x-qn-meta-<name> (kept, not stored), anything else
// ignored as Qiniu does.
func mkfileParams(rest string) (fsize int64, key string, hasKey bool, fname, mt string, vars map[string]string, err error) {
	segs := strings.Split(rest, "/")
	fsize, err = strconv.ParseInt(segs[0], 10, 64)
	if err != nil || fsize < 0 {
		return 0, "", false, "", "", nil, fmt.Errorf("mkfile/<fsize>: bad size %q", segs[0])
	}
	segs = segs[1:]
	if len(segs)%2 != 0 {
		return 0, "", false, "", "", nil, errors.New("mkfile: parameters come in /<name>/<EncodedValue> pairs")
	}
	vars = map[string]string{}
	for i := 0; i < len(segs); i += 2 {
		v, derr := decodeB64(segs[i+1])
		if derr != nil {
			return 0, "", false, "", "", nil, fmt.Errorf("mkfile: %s: not URL-safe base64", segs[i])
		}
		switch name := segs[i]; {
		case name == "key":
			key, hasKey = v, true
		case name == "fname":
			fname = v
		case name == "mimeType":
			mt = v
		case strings.HasPrefix(name, "x:"):
			vars[name] = v
		}
	}
	return fsize, key, hasKey, fname, mt, vars, nil
}

func (h *Handler) serveMkfile(w http.ResponseWriter, r *http.Request, reqid, token, rest string) int {
	if r.Method != http.MethodPost {
		return writeError(w, http.StatusMethodNotAllowed, "use POST")
	}
	fsize, key, hasKey, fname, mt, vars, err := mkfileParams(rest)
	if err != nil {
		return writeError(w, http.StatusBadRequest, err.Error())
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxCtxListBytes+1))
	if err != nil || len(body) > maxCtxListBytes {
		return writeError(w, http.StatusBadRequest, "mkfile: the ctx list is unreadable or too long")
	}
	t, ue := h.checkUpload(r.Context(), token, key, hasKey)
	if ue != nil {
		return writeError(w, ue.status, ue.msg)
	}
	if limit := h.uploadLimit(t.policy); fsize > limit {
		return writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("exceed FsizeLimit of %d bytes", limit))
	}
	var ids, files []string
	var total int64
	if s := strings.TrimSpace(string(body)); s != "" {
		ids = strings.Split(s, ",")
	}
	for i, id := range ids {
		id = strings.TrimSpace(id)
		s, ok := h.loadSession(id, kindBlock)
		if !ok || s.Owner != t.owner {
			return writeError(w, StatusBadCtx, fmt.Sprintf("ctx %d: invalid or expired", i))
		}
		fi, err := os.Stat(filepath.Join(h.sessionDir(id), "data"))
		if err != nil || fi.Size() != s.BlockSize {
			return writeError(w, http.StatusBadRequest, fmt.Sprintf("block %d is incomplete", i))
		}
		total += fi.Size()
		ids[i] = id
		files = append(files, filepath.Join(h.sessionDir(id), "data"))
	}
	if total != fsize {
		return writeError(w, http.StatusBadRequest, fmt.Sprintf("fsize %d, but the blocks hold %d bytes", fsize, total))
	}
	src := &spoolReader{files: files}
	defer src.Close()
	up, ue := h.storeUpload(r.Context(), t, src, mt, fname, vars)
	if ue != nil {
		return writeError(w, ue.status, ue.msg)
	}
	for _, id := range ids {
		os.RemoveAll(h.sessionDir(id))
	}
	return h.replyUpload(w, r, reqid, t, up, vars, "")
}

// spoolReader reads files one after the other, one open at a time.
type spoolReader struct {
	files []string
	cur   *os.File
}

func (s *spoolReader) Read(p []byte) (int, error) {
	for {
		if s.cur == nil {
			if len(s.files) == 0 {
				return 0, io.EOF
			}
			f, err := os.Open(s.files[0])
			if err != nil {
				return 0, fmt.Errorf("spooled upload: %w", err)
			}
			s.cur, s.files = f, s.files[1:]
		}
		n, err := s.cur.Read(p)
		if err == io.EOF {
			s.cur.Close()
			s.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

// Close closes the open file.
func (s *spoolReader) Close() error {
	if s.cur != nil {
		return s.cur.Close()
	}
	return nil
}

// v2Path splits "<bucket>/objects/<EncodedKey|~>/uploads[/<id>[/<n>]]".
func v2Path(rest string) (bucket, key string, hasKey bool, id string, part int, err error) {
	bucket, rest, ok := strings.Cut(rest, "/objects/")
	if !ok || bucket == "" {
		return "", "", false, "", 0, errors.New("want /buckets/<bucket>/objects/<EncodedKey>/uploads")
	}
	enc, rest, ok := strings.Cut(rest, "/uploads")
	if !ok || (rest != "" && rest[0] != '/') {
		return "", "", false, "", 0, errors.New("want /buckets/<bucket>/objects/<EncodedKey>/uploads")
	}
	if enc != "~" {
		if key, err = decodeB64(enc); err != nil || key == "" {
			return "", "", false, "", 0, errors.New("object name: not URL-safe base64 (~ for none)")
		}
		hasKey = true
	}
	rest = strings.TrimPrefix(rest, "/")
	if rest == "" {
		return bucket, key, hasKey, "", 0, nil
	}
	id, n, hasPart := strings.Cut(rest, "/")
	if hasPart {
		part, err = strconv.Atoi(n)
		if err != nil || part < 1 || part > MaxParts {
			return "", "", false, "", 0, fmt.Errorf("part number: 1 to %d", MaxParts)
		}
	}
	return bucket, key, hasKey, id, part, nil
}

func (h *Handler) serveUploadV2(w http.ResponseWriter, r *http.Request, reqid, token, rest string) int {
	bucket, key, hasKey, id, part, err := v2Path(rest)
	if err != nil {
		return writeError(w, http.StatusBadRequest, err.Error())
	}
	method := r.Method
	switch {
	case id == "" && method == http.MethodPost:
		return h.initiateV2(w, r, token, bucket, key, hasKey)
	case id == "":
		return writeError(w, http.StatusMethodNotAllowed, "use POST to initiate an upload")
	case part > 0 && method == http.MethodPut:
		return h.putPartV2(w, r, token, bucket, key, hasKey, id, part)
	case part > 0:
		return writeError(w, http.StatusMethodNotAllowed, "use PUT to upload a part")
	case method == http.MethodPost:
		return h.completeV2(w, r, reqid, token, bucket, key, hasKey, id)
	case method == http.MethodDelete:
		return h.abortV2(w, r, token, bucket, key, hasKey, id)
	case method == http.MethodGet:
		return h.listPartsV2(w, r, token, bucket, key, hasKey, id)
	}
	return writeError(w, http.StatusMethodNotAllowed, "use POST (complete), DELETE (abort) or GET (list parts)")
}

// targetV2 checks the token against the bucket and key of the path.
func (h *Handler) targetV2(ctx context.Context, token, bucket, key string, hasKey bool) (uploadTarget, *uploadError) {
	t, ue := h.checkUpload(ctx, token, key, hasKey)
	if ue != nil {
		return t, ue
	}
	if t.bucket != bucket {
		return t, uerr(http.StatusForbidden, "bucket %q is not the token's scope", bucket)
	}
	return t, nil
}

// sessionV2 finds upload id, started for the same account, bucket and key.
func (h *Handler) sessionV2(ctx context.Context, token, bucket, key string, hasKey bool, id string) (uploadTarget, session, *uploadError) {
	t, ue := h.targetV2(ctx, token, bucket, key, hasKey)
	if ue != nil {
		return t, session{}, ue
	}
	s, ok := h.loadSession(id, kindUpload)
	if !ok || s.Owner != t.owner || s.Bucket != bucket || s.Key != key || s.HasKey != hasKey {
		return t, s, uerr(StatusNoUpload, "no such uploadId")
	}
	return t, s, nil
}

func (h *Handler) initiateV2(w http.ResponseWriter, r *http.Request, token, bucket, key string, hasKey bool) int {
	t, ue := h.targetV2(r.Context(), token, bucket, key, hasKey)
	if ue != nil {
		return writeError(w, ue.status, ue.msg)
	}
	h.maybeSweep()
	now := h.cfg.Now().UTC()
	id, err := h.newSession(session{Kind: kindUpload, Owner: t.owner, Created: now, Bucket: bucket, Key: key, HasKey: hasKey})
	if err != nil {
		return writeError(w, http.StatusServiceUnavailable, err.Error())
	}
	return writeJSON(w, http.StatusOK, map[string]any{"uploadId": id, "expireAt": now.Add(h.cfg.UploadExpiry).Unix()})
}

func partName(n int) string { return fmt.Sprintf("part-%05d", n) }

func (h *Handler) putPartV2(w http.ResponseWriter, r *http.Request, token, bucket, key string, hasKey bool, id string, n int) int {
	t, _, ue := h.sessionV2(r.Context(), token, bucket, key, hasKey, id)
	if ue != nil {
		return writeError(w, ue.status, ue.msg)
	}
	limit := min(int64(MaxPartBytes), h.uploadLimit(t.policy))
	dir := h.sessionDir(id)
	size, sum, _, err := spoolBody(dir, partName(n)+".new", r.Body, limit)
	defer os.Remove(filepath.Join(dir, partName(n)+".new"))
	switch {
	case errors.Is(err, errTooLarge):
		return writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("a part is at most %d bytes", limit))
	case errors.Is(err, fs.ErrNotExist):
		return writeError(w, StatusNoUpload, "no such uploadId")
	case err != nil:
		return writeError(w, http.StatusBadRequest, "read part: "+err.Error())
	}
	md := hex.EncodeToString(sum)
	if want := strings.TrimSpace(r.Header.Get("Content-MD5")); want != "" {
		b64 := base64.StdEncoding.EncodeToString(sum)
		if !strings.EqualFold(want, md) && want != b64 {
			return writeError(w, http.StatusBadRequest, "Content-MD5 does not match the part")
		}
	}
	info := partInfo{PartNumber: n, ETag: partETag(sum, size), MD5: md, Size: size, PutTime: h.cfg.Now().Unix()}
	b, _ := json.Marshal(info)
	l := h.rs.lock(id)
	l.Lock()
	defer l.Unlock()
	if _, ok := h.loadSession(id, kindUpload); !ok { // aborted meanwhile
		return writeError(w, StatusNoUpload, "no such uploadId")
	}
	if err := os.Rename(filepath.Join(dir, partName(n)+".new"), filepath.Join(dir, partName(n))); err != nil {
		return writeError(w, http.StatusServiceUnavailable, "spool: "+err.Error())
	}
	if err := os.WriteFile(filepath.Join(dir, partName(n)+".json"), b, 0o600); err != nil {
		return writeError(w, http.StatusServiceUnavailable, "spool: "+err.Error())
	}
	return writeJSON(w, http.StatusOK, map[string]string{"etag": info.ETag, "md5": md})
}

// partETag names a part's content for the complete call (MD5 and size:
// the client hands it back, the server compares).
func partETag(sum []byte, size int64) string {
	return base64.RawURLEncoding.EncodeToString(sum) + "-" + strconv.FormatInt(size, 36)
}

// parts reads the stored parts of upload id, by part number.
func (h *Handler) parts(id string) ([]partInfo, error) {
	dir := h.sessionDir(id)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ps []partInfo
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "part-") || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var p partInfo
		if err := json.Unmarshal(b, &p); err != nil {
			return nil, fmt.Errorf("part record %s: %w", e.Name(), err)
		}
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b partInfo) int { return a.PartNumber - b.PartNumber })
	return ps, nil
}

func (h *Handler) listPartsV2(w http.ResponseWriter, r *http.Request, token, bucket, key string, hasKey bool, id string) int {
	_, s, ue := h.sessionV2(r.Context(), token, bucket, key, hasKey, id)
	if ue != nil {
		return writeError(w, ue.status, ue.msg)
	}
	q := r.URL.Query()
	maxParts := 1000
	if v := q.Get("max-parts"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return writeError(w, http.StatusBadRequest, "max-parts: 1 to 1000")
		}
		maxParts = n
	}
	marker := 0
	if v := q.Get("part-number-marker"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return writeError(w, http.StatusBadRequest, "part-number-marker: a part number")
		}
		marker = n
	}
	ps, err := h.parts(id)
	if err != nil {
		return writeError(w, StatusNoUpload, "no such uploadId")
	}
	out := []map[string]any{}
	next := 0
	for _, p := range ps {
		if p.PartNumber <= marker {
			continue
		}
		if len(out) == maxParts {
			next = out[len(out)-1]["partNumber"].(int)
			break
		}
		out = append(out, map[string]any{"partNumber": p.PartNumber, "etag": p.ETag, "size": p.Size, "putTime": p.PutTime})
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"uploadId": id, "expireAt": s.Created.Add(h.cfg.UploadExpiry).Unix(),
		"partNumberMarker": next, "parts": out,
	})
}

func (h *Handler) abortV2(w http.ResponseWriter, r *http.Request, token, bucket, key string, hasKey bool, id string) int {
	if _, _, ue := h.sessionV2(r.Context(), token, bucket, key, hasKey, id); ue != nil {
		return writeError(w, ue.status, ue.msg)
	}
	l := h.rs.lock(id)
	l.Lock()
	defer l.Unlock()
	if err := os.RemoveAll(h.sessionDir(id)); err != nil {
		return writeError(w, http.StatusServiceUnavailable, "spool: "+err.Error())
	}
	return writeJSON(w, http.StatusOK, map[string]any{})
}

// completeBody is the complete call's JSON.
type completeBody struct {
	Parts []struct {
		PartNumber int    `json:"partNumber"`
		ETag       string `json:"etag"`
	} `json:"parts"`
	Fname      string            `json:"fname"`
	MimeType   string            `json:"mimeType"`
	Metadata   map[string]string `json:"metadata"`
	CustomVars map[string]string `json:"customVars"`
}

func (h *Handler) completeV2(w http.ResponseWriter, r *http.Request, reqid, token, bucket, key string, hasKey bool, id string) int {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxCtxListBytes+1))
	if err != nil || len(raw) > maxCtxListBytes {
		return writeError(w, http.StatusBadRequest, "complete: the body is unreadable or too long")
	}
	var body completeBody
	if err := json.Unmarshal(raw, &body); err != nil {
		return writeError(w, http.StatusBadRequest, "complete: bad JSON: "+err.Error())
	}
	if len(body.Parts) == 0 {
		return writeError(w, http.StatusBadRequest, "complete: no parts")
	}
	t, _, ue := h.sessionV2(r.Context(), token, bucket, key, hasKey, id)
	if ue != nil {
		return writeError(w, ue.status, ue.msg)
	}
	l := h.rs.lock(id)
	l.Lock()
	defer l.Unlock()
	stored, err := h.parts(id)
	if err != nil {
		return writeError(w, StatusNoUpload, "no such uploadId")
	}
	byNum := map[int]partInfo{}
	for _, p := range stored {
		byNum[p.PartNumber] = p
	}
	var files []string
	var total int64
	prev := 0
	for _, p := range body.Parts {
		if p.PartNumber <= prev {
			return writeError(w, http.StatusBadRequest, "complete: parts must be in ascending partNumber order, each once")
		}
		prev = p.PartNumber
		sp, ok := byNum[p.PartNumber]
		if !ok || sp.ETag != p.ETag {
			return writeError(w, http.StatusBadRequest, fmt.Sprintf("complete: part %d: not uploaded, or its etag differs", p.PartNumber))
		}
		total += sp.Size
		files = append(files, filepath.Join(h.sessionDir(id), partName(p.PartNumber)))
	}
	if limit := h.uploadLimit(t.policy); total > limit {
		return writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("exceed FsizeLimit of %d bytes", limit))
	}
	src := &spoolReader{files: files}
	defer src.Close()
	vars := map[string]string{}
	for k, v := range body.CustomVars {
		if strings.HasPrefix(k, "x:") {
			vars[k] = v
		}
	}
	up, ue := h.storeUpload(r.Context(), t, src, body.MimeType, body.Fname, vars)
	if ue != nil {
		return writeError(w, ue.status, ue.msg)
	}
	os.RemoveAll(h.sessionDir(id))
	return h.replyUpload(w, r, reqid, t, up, vars, "")
}
