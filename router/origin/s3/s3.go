// Package s3 keeps the objects of buckets in an S3-compatible store (AWS
// S3, MinIO, Ceph RGW, SeaweedFS, Qiniu Kodo's S3 API): the production
// origin, shared by every router, admin and pfop worker on every host.
//
// Dora bucket b, key k is the S3 object "<prefix>/b/k" ("b/k" without a
// prefix) in one S3 bucket, so objects other tools write there are served
// and processed in place. Credentials come from the standard AWS chain
// (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the shared
// config files, instance roles), never from the URL, and are never logged.
//
// Streams both ways: Open streams the GET body (a byte range is an S3
// Range request); Put streams into a multipart upload of bounded part size
// (Config.PartSize, one part buffered at a time plus the upload's own
// pool), aborted on any failure so no half object and no orphaned upload
// remain. Small objects (under one part) are one PUT.
//
// The Qiniu etag of an object Dora wrote is computed while it streams and
// kept as the object's metadata (x-amz-meta-qetag): set on the PUT for a
// small object; for a multipart one, known only at the end, added by a
// server-side copy onto itself guarded by the upload's S3 ETag (objects
// over 5 GiB, which S3 cannot copy in one call, keep the S3 ETag). An
// object written by another tool has no such metadata: its S3 ETag stands
// in as its etag (stable, and the same on every host), and its type comes
// from its Content-Type or, when the writer set none, from its extension.
package s3

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	tm "github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/ctxio"
	"github.com/doraproject/dora/router/origin"
	"github.com/doraproject/dora/router/origin/local"
)

// Defaults of Config.
const (
	// DefaultPartSize is the multipart part size and the largest object
	// sent as one PUT. S3's minimum part size is 5 MiB.
	DefaultPartSize = 8 << 20
	// MinPartSize is S3's smallest part.
	MinPartSize = 5 << 20
	// DefaultTimeout bounds each call's wait for the store: a metadata call
	// (HEAD, LIST, DELETE) including its retries, and a GET until its
	// response headers. An unreachable or silent store fails within it
	// with origin.ErrUnavailable (503).
	DefaultTimeout = 15 * time.Second
	// DefaultMaxAttempts is how often a call is tried (throttling such as
	// 503 SlowDown, 5xx, connection errors), with jittered exponential
	// backoff between tries.
	DefaultMaxAttempts = 5
	// DefaultRegion signs requests when the URL names no region.
	DefaultRegion = "us-east-1"
	// listConcurrency bounds the HEADs List sends at once.
	listConcurrency = 16
	// maxCopyBytes is the largest object S3 copies in one CopyObject.
	maxCopyBytes = 5 << 30
	// metaETag is the user-metadata key holding the Qiniu etag
	// (x-amz-meta-qetag on the wire).
	metaETag = "qetag"
)

// Config configures a Store. Bucket is required.
type Config struct {
	// Bucket is the S3 bucket holding every Dora bucket.
	Bucket string
	// Prefix, without leading or trailing "/", is put before "b/k".
	Prefix string
	// Endpoint is the store's base URL (http(s)://host[:port]); empty
	// means AWS S3.
	Endpoint string
	// Region signs the requests (DefaultRegion when empty, unless the AWS
	// configuration names one).
	Region string
	// PathStyle addresses the bucket in the path (host/bucket/key) rather
	// than in the host name (bucket.host/key).
	PathStyle bool
	// PartSize is the multipart part size (DefaultPartSize when 0; at
	// least MinPartSize).
	PartSize int64
	// Timeout: see DefaultTimeout.
	Timeout time.Duration
	// MaxAttempts: see DefaultMaxAttempts.
	MaxAttempts int
	// Credentials replaces the standard AWS chain when set (tests).
	Credentials aws.CredentialsProvider
	// Logger receives warnings (a failed metadata copy); slog.Default()
	// when nil. Credentials never reach it.
	Logger *slog.Logger
}

// Store is an S3 bucket holding Dora buckets. It implements origin.Reader,
// Writer and Lister, and is safe for concurrent use.
type Store struct {
	cfg Config
	c   *awss3.Client
	up  *tm.Client
	log *slog.Logger
}

var (
	_ origin.Reader = (*Store)(nil)
	_ origin.Writer = (*Store)(nil)
	_ origin.Lister = (*Store)(nil)
)

// New builds the client and checks, within cfg.Timeout, that the bucket
// exists and the credentials may use it: wrong credentials, a missing
// bucket or an unreachable store fail here, at start, with a clear error.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if err := validBucket(cfg.Bucket); err != nil {
		return nil, fmt.Errorf("s3 objects: %w", err)
	}
	if cfg.Prefix != "" {
		if err := validPrefix(cfg.Prefix); err != nil {
			return nil, fmt.Errorf("s3 objects: %w", err)
		}
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < MinPartSize {
		return nil, fmt.Errorf("s3 objects: part size %d below S3's minimum %d", cfg.PartSize, MinPartSize)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	hc := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = min(5*time.Second, cfg.Timeout) }).
		WithTransportOptions(func(t *http.Transport) {
			t.TLSHandshakeTimeout = min(10*time.Second, cfg.Timeout)
			t.ResponseHeaderTimeout = max(cfg.Timeout, 30*time.Second) // a part upload's answer may take a while
			t.MaxIdleConns = 256
			t.MaxIdleConnsPerHost = 128
		})
	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(hc),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = cfg.MaxAttempts
				o.MaxBackoff = 2 * time.Second
			})
		}),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(cfg.Credentials))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3 objects: AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = DefaultRegion
	}
	c := awss3.NewFromConfig(awsCfg, func(o *awss3.Options) {
		o.UsePathStyle = cfg.PathStyle
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		// Checksums only where S3 requires them: S3-compatible stores
		// do not all accept the trailing checksums newer SDKs add, and
		// the Qiniu etag already covers the bytes end to end.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	up := tm.New(c, func(o *tm.Options) {
		o.PartSizeBytes = cfg.PartSize
		o.MultipartUploadThreshold = cfg.PartSize
		o.Concurrency = 2
		o.FailTimeout = cfg.Timeout // the abort runs even when the caller's context is gone
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	})
	s := &Store{cfg: cfg, c: c, up: up, log: cfg.Logger}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// check sends HeadBucket and explains a failure.
func (s *Store) check(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	_, err := s.c.HeadBucket(cctx, &awss3.HeadBucketInput{Bucket: aws.String(s.cfg.Bucket)})
	if err == nil {
		return nil
	}
	where := s.where()
	switch status(err) {
	case http.StatusForbidden, http.StatusUnauthorized:
		return fmt.Errorf("s3 objects: %s: access denied: check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and that they may use the bucket: %w", where, err)
	case http.StatusNotFound:
		return fmt.Errorf("s3 objects: %s: no such bucket: create it first: %w", where, err)
	case http.StatusMovedPermanently, http.StatusBadRequest:
		return fmt.Errorf("s3 objects: %s: the bucket is in another region or needs another addressing style (set region= or path-style=): %w", where, err)
	}
	if ctx.Err() == nil && cctx.Err() != nil {
		return fmt.Errorf("s3 objects: %s: no answer within %v: %w", where, s.cfg.Timeout, origin.ErrUnavailable)
	}
	if strings.Contains(err.Error(), "credentials") {
		return fmt.Errorf("s3 objects: %s: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE): %w", where, err)
	}
	return fmt.Errorf("s3 objects: %s: %w", where, s.mapErr(ctx, err))
}

// where names the bucket and endpoint for messages.
func (s *Store) where() string {
	ep := s.cfg.Endpoint
	if ep == "" {
		ep = "AWS S3"
	}
	return fmt.Sprintf("bucket %q at %s", s.cfg.Bucket, ep)
}

// Close releases nothing (the HTTP client's idle connections close on
// their own); it exists so callers can treat every origin alike.
func (s *Store) Close() error { return nil }

// String describes the store for logs (no credentials).
func (s *Store) String() string {
	p := s.cfg.Prefix
	if p != "" {
		p = "/" + p
	}
	return fmt.Sprintf("s3://%s%s at %s", s.cfg.Bucket, p, s.where())
}

// objectKey is the S3 key of bucket/key.
func (s *Store) objectKey(bucket, key string) string {
	if s.cfg.Prefix == "" {
		return bucket + "/" + key
	}
	return s.cfg.Prefix + "/" + bucket + "/" + key
}

func validate(bucket, key string) error {
	if err := dora.ValidateBucketName(bucket); err != nil {
		return fmt.Errorf("bucket: %v: %w", err, origin.ErrBadKey)
	}
	return dora.ValidateKey(key)
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// status returns the HTTP status of an S3 error response, 0 when there
// was none.
func status(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.HTTPStatusCode()
	}
	return 0
}

// mapErr turns an SDK error into an origin sentinel where one applies:
// 404 -> ErrNotFound; no answer (connection failures, timeouts, 5xx and
// throttling left after the retries) -> ErrUnavailable. The caller's own
// cancellation passes through.
func (s *Store) mapErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	var ae smithy.APIError
	code := ""
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	st := status(err)
	switch {
	case code == "KeyTooLongError":
		return fmt.Errorf("key longer than the store allows (1024 bytes with the prefix and bucket): %w", origin.ErrBadKey)
	case st == http.StatusNotFound || code == "NoSuchKey" || code == "NotFound":
		if code == "NoSuchBucket" {
			return fmt.Errorf("S3 bucket %q missing: %w", s.cfg.Bucket, err)
		}
		return origin.ErrNotFound
	case st >= 500 || st == http.StatusTooManyRequests || code == "SlowDown":
		return fmt.Errorf("%w: %v", origin.ErrUnavailable, err)
	case st == 0:
		// No response at all: refused, reset, DNS, timeout.
		return fmt.Errorf("%w: %v", origin.ErrUnavailable, err)
	}
	return err
}

// bounded runs a metadata call under cfg.Timeout; the bound passing (not
// the caller's context) becomes ErrUnavailable.
func (s *Store) bounded(ctx context.Context, f func(ctx context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	err := f(cctx)
	if err != nil && ctx.Err() == nil && cctx.Err() != nil {
		return fmt.Errorf("%w: no answer from %s within %v", origin.ErrUnavailable, s.where(), s.cfg.Timeout)
	}
	return s.mapErr(ctx, err)
}

// Stat returns an object's metadata (one HEAD); Size is -1 when the store
// tells no length.
func (s *Store) Stat(ctx context.Context, bucket, key string) (origin.Object, error) {
	if err := validate(bucket, key); err != nil {
		return origin.Object{}, err
	}
	obj, err := s.head(ctx, bucket, key)
	if err != nil {
		return origin.Object{}, fmt.Errorf("stat %s/%s: %w", bucket, truncate(key), err)
	}
	return obj, nil
}

func (s *Store) head(ctx context.Context, bucket, key string) (origin.Object, error) {
	var out *awss3.HeadObjectOutput
	err := s.bounded(ctx, func(ctx context.Context) error {
		var err error
		out, err = s.c.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.objectKey(bucket, key))})
		return err
	})
	if err != nil {
		return origin.Object{}, err
	}
	size := int64(-1) // unknown: a store that sent no Content-Length
	if out.ContentLength != nil {
		size = *out.ContentLength
	}
	return toObject(bucket, key, size, out.ETag, out.Metadata, out.ContentType, out.LastModified), nil
}

// toObject maps S3's fields to Dora's.
func toObject(bucket, key string, size int64, etag *string, meta map[string]string, ctype *string, modified *time.Time) origin.Object {
	obj := origin.Object{Bucket: bucket, Key: key, Size: size}
	obj.ETag = metaValue(meta, metaETag)
	if obj.ETag == "" {
		obj.ETag = strings.Trim(aws.ToString(etag), `"`)
	}
	obj.MimeType = aws.ToString(ctype)
	if obj.MimeType == "" || obj.MimeType == "binary/octet-stream" || obj.MimeType == "application/octet-stream" {
		// S3's types for an upload that named none: the extension may
		// say more (an octet-stream without one stays so).
		obj.MimeType = "application/octet-stream"
		if t := mime.TypeByExtension(path.Ext(key)); t != "" {
			obj.MimeType = t
		}
	}
	if modified != nil {
		obj.Modified = modified.UTC()
	}
	return obj
}

// metaValue reads user metadata whatever the case the store returns the
// key in.
func metaValue(meta map[string]string, k string) string {
	if v, ok := meta[k]; ok {
		return v
	}
	for mk, v := range meta {
		if strings.EqualFold(mk, k) {
			return v
		}
	}
	return ""
}

// ErrStreamBroken is wrapped by the error of a read of an object's stream
// that failed after Open succeeded: the store's connection broke, the body
// ended before its announced length, or the store stopped sending. It
// names the object and how far the read got; it is never a cancellation
// (the caller's own cancellation is reported as that), so callers answer
// it as the origin failing (502), not as the client having gone.
var ErrStreamBroken = errors.New("s3 origin: the object's stream broke")

// stopper is a timer's Stop; afterFunc is time.AfterFunc (tests replace
// it).
type stopper interface{ Stop() bool }

var afterFunc = func(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }

// errHeaderTimeout cancels a GET whose headers did not come in time.
var errHeaderTimeout = errors.New("s3: no response headers in time")

// Open streams the bytes [offset, offset+length) of an object (length < 0:
// to the end) with one GET, a Range request unless the whole object is
// asked for; the caller closes the stream. Offset equal to the size gives
// an empty stream; beyond it, an error. The Object's Size is -1 when the
// store tells no length (a chunked answer to a whole-object GET).
func (s *Store) Open(ctx context.Context, bucket, key string, offset, length int64) (io.ReadCloser, origin.Object, error) {
	return s.open(ctx, bucket, key, offset, length, nil)
}

// OpenIf is Open pinned to want (origin.ConditionalOpener): the GET carries
// If-Unmodified-Since: want.Modified, so S3 refuses (412) an object written
// after it, and the answer's etag must be want.ETag (which also catches an
// overwrite within the same second); either mismatch is origin.ErrChanged.
func (s *Store) OpenIf(ctx context.Context, bucket, key string, offset, length int64, want origin.Object) (io.ReadCloser, origin.Object, error) {
	return s.open(ctx, bucket, key, offset, length, &want)
}

var _ origin.ConditionalOpener = (*Store)(nil)

func (s *Store) open(ctx context.Context, bucket, key string, offset, length int64, want *origin.Object) (io.ReadCloser, origin.Object, error) {
	if err := validate(bucket, key); err != nil {
		return nil, origin.Object{}, err
	}
	fail := func(err error) (io.ReadCloser, origin.Object, error) {
		return nil, origin.Object{}, fmt.Errorf("open %s/%s: %w", bucket, truncate(key), err)
	}
	if offset < 0 {
		return fail(fmt.Errorf("negative offset %d", offset))
	}
	if length == 0 {
		obj, err := s.head(ctx, bucket, key)
		if err != nil {
			return fail(err)
		}
		if want != nil && changed(*want, obj) {
			return fail(origin.ErrChanged)
		}
		if obj.Size >= 0 && offset > obj.Size {
			return fail(fmt.Errorf("offset %d outside [0, %d]", offset, obj.Size))
		}
		return io.NopCloser(strings.NewReader("")), obj, nil
	}
	in := &awss3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.objectKey(bucket, key))}
	if want != nil && !want.Modified.IsZero() {
		in.IfUnmodifiedSince = aws.Time(want.Modified)
	}
	if offset > 0 || length > 0 {
		rng := "bytes=" + strconv.FormatInt(offset, 10) + "-"
		if length > 0 {
			rng += strconv.FormatInt(offset+length-1, 10)
		}
		in.Range = aws.String(rng)
	}
	// The body is read under gctx, so it cannot carry a deadline; a timer
	// bounds the wait for the headers instead. Once they are in, the
	// timer no longer cancels (it may fire before it is stopped): only a
	// GET it did cancel counts as timed out.
	gctx, cancel := context.WithCancelCause(ctx)
	var (
		mu       sync.Mutex
		answered bool
	)
	timer := afterFunc(s.cfg.Timeout, func() {
		mu.Lock()
		defer mu.Unlock()
		if !answered {
			cancel(errHeaderTimeout)
		}
	})
	out, err := s.c.GetObject(gctx, in)
	mu.Lock()
	answered = true
	mu.Unlock()
	timer.Stop()
	timedOut := context.Cause(gctx) == errHeaderTimeout
	if err == nil && timedOut {
		// Cancelled just as the headers came: the body is cut off.
		out.Body.Close()
		err = errHeaderTimeout
	}
	if err != nil {
		cancel(nil)
		if timedOut && ctx.Err() == nil {
			return fail(fmt.Errorf("%w: no answer from %s within %v", origin.ErrUnavailable, s.where(), s.cfg.Timeout))
		}
		if want != nil && status(err) == http.StatusPreconditionFailed {
			return fail(origin.ErrChanged)
		}
		if status(err) == http.StatusRequestedRangeNotSatisfiable {
			obj, herr := s.head(ctx, bucket, key)
			if herr != nil {
				return fail(herr)
			}
			if want != nil && changed(*want, obj) {
				return fail(origin.ErrChanged)
			}
			if offset == obj.Size {
				return io.NopCloser(strings.NewReader("")), obj, nil
			}
			return fail(fmt.Errorf("offset %d outside [0, %d]", offset, obj.Size))
		}
		return fail(s.mapErr(ctx, err))
	}
	size := int64(-1) // unknown: a chunked answer has no Content-Length
	if out.ContentLength != nil {
		size = *out.ContentLength
	}
	// sent: the bytes the answer carries from offset on, -1 if unknown.
	skip, sent := int64(0), size-offset
	if size < 0 {
		sent = -1
	}
	if cr := aws.ToString(out.ContentRange); cr != "" {
		// The range sent may start before the one asked for (skipped
		// here, as router/origin/httpmirror does), not after (those
		// bytes are missing), nor end before it unless at the object's
		// end.
		first, last, total, ok := parseContentRange(cr)
		short := length > 0 && last < offset+length-1 && (total < 0 || last < total-1)
		if !ok || first > offset || short {
			out.Body.Close()
			cancel(nil)
			asked := "the whole object"
			if in.Range != nil {
				asked = "bytes " + strings.TrimPrefix(*in.Range, "bytes=")
			}
			return fail(fmt.Errorf("asked for %s, the store answered range %q", asked, cr))
		}
		size, skip, sent = total, offset-first, last-offset+1
	} else if in.Range != nil {
		// A store that ignored the Range sent the whole object: skip to
		// the offset and cut the length here.
		skip = offset
	}
	if skip > 0 {
		if n, err := io.CopyN(io.Discard, out.Body, skip); err != nil {
			out.Body.Close()
			cancel(nil)
			if err == io.EOF && aws.ToString(out.ContentRange) == "" {
				// The whole object, which ends before the offset.
				return fail(fmt.Errorf("offset %d outside [0, %d]", offset, n))
			}
			return fail(fmt.Errorf("%w: %v", origin.ErrUnavailable, err))
		}
	}
	obj := toObject(bucket, key, size, out.ETag, out.Metadata, out.ContentType, out.LastModified)
	if want != nil && changed(*want, obj) {
		out.Body.Close()
		cancel(nil)
		return fail(origin.ErrChanged)
	}
	var r io.Reader = out.Body
	if length > 0 {
		r = io.LimitReader(out.Body, length)
		if sent < 0 || length < sent {
			sent = length
		}
	}
	return &body{Reader: r, c: out.Body, cancel: func() { cancel(nil) }, ctx: ctx, bucket: bucket, key: key, want: sent}, obj, nil
}

// parseContentRange reads "bytes first-last/total" (total -1 for "*").
func parseContentRange(cr string) (first, last, total int64, ok bool) {
	unit, rest, ok := strings.Cut(strings.TrimSpace(cr), " ")
	if !ok || !strings.EqualFold(unit, "bytes") {
		return 0, 0, 0, false
	}
	rng, tot, ok := strings.Cut(strings.TrimSpace(rest), "/")
	if !ok {
		return 0, 0, 0, false
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first {
		return 0, 0, 0, false
	}
	total = -1
	if tot != "*" {
		n, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || n <= last {
			return 0, 0, 0, false
		}
		total = n
	}
	return first, last, total, true
}

// changed reports whether got is not the object want described (another
// etag).
func changed(want, got origin.Object) bool {
	return want.ETag != "" && got.ETag != want.ETag
}

// body is a GET's stream; Close ends the request. A read error is wrapped
// (broken) with the object's name.
type body struct {
	io.Reader
	c      io.Closer
	cancel func()
	once   sync.Once
	// ctx is the caller's context; bucket and key name the object; n
	// counts the bytes read, want those the answer announced (-1:
	// unknown), which an end before them fails.
	ctx         context.Context
	bucket, key string
	n, want     int64
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	b.n += int64(n)
	switch {
	case err == io.EOF && b.want >= 0 && b.n < b.want:
		err = b.broken(fmt.Errorf("the body ended before the %d bytes announced: %w", b.want, io.ErrUnexpectedEOF))
	case err != nil && err != io.EOF:
		err = b.broken(err)
	}
	return n, err
}

// broken explains a read error: the caller's cancellation or deadline as
// itself; anything else, the store failing mid-stream (ErrStreamBroken),
// whose cause is kept as text only, so that a cancellation of the
// request's own context (its Close, its header timer) never reads as the
// caller's.
func (b *body) broken(err error) error {
	if cerr := b.ctx.Err(); cerr != nil {
		return fmt.Errorf("read %s/%s after %d bytes: %w (%v)", b.bucket, truncate(b.key), b.n, cerr, err)
	}
	return fmt.Errorf("%w: %s/%s: the store failed mid-stream after %d bytes: %v", ErrStreamBroken, b.bucket, truncate(b.key), b.n, err)
}

// Close closes the response body and releases the request's context.
func (b *body) Close() error {
	var err error
	b.once.Do(func() {
		err = b.c.Close()
		b.cancel()
	})
	return err
}

// Put streams r into bucket/key. Up to PartSize bytes it is one PUT;
// beyond, a multipart upload of PartSize parts, aborted when r or the
// store fails (the object is then untouched: S3 shows an object only
// once complete). The Qiniu etag is computed on the way and stored as
// metadata. With opts.InsertOnly an existing key fails with ErrExists
// (checked first, and enforced by If-None-Match on stores that honour it).
func (s *Store) Put(ctx context.Context, bucket, key string, r io.Reader, opts origin.PutOptions) (origin.Object, error) {
	if err := validate(bucket, key); err != nil {
		return origin.Object{}, err
	}
	fail := func(err error) (origin.Object, error) {
		return origin.Object{}, fmt.Errorf("put %s/%s: %w", bucket, truncate(key), err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	k := s.objectKey(bucket, key)
	if opts.InsertOnly {
		_, err := s.head(ctx, bucket, key)
		if err == nil {
			return fail(origin.ErrExists)
		}
		if !errors.Is(err, origin.ErrNotFound) {
			return fail(err)
		}
	}
	br := bufio.NewReaderSize(ctxio.Reader(ctx, r), 512)
	head, err := br.Peek(512)
	if err != nil && err != io.EOF {
		return fail(err)
	}
	mt := opts.MimeType
	if mt == "" {
		mt = detectMime(key, head)
	}
	h := local.NewHasher()
	src := io.TeeReader(br, h)
	var first bytes.Buffer
	if _, err := first.ReadFrom(io.LimitReader(src, s.cfg.PartSize)); err != nil {
		return fail(err)
	}
	var ifNoneMatch *string
	if opts.InsertOnly {
		ifNoneMatch = aws.String("*")
	}
	if _, err := br.Peek(1); err == io.EOF {
		// The whole object is in first: one PUT, etag in its metadata.
		_, err := s.c.PutObject(ctx, &awss3.PutObjectInput{
			Bucket:        aws.String(s.cfg.Bucket),
			Key:           aws.String(k),
			Body:          bytes.NewReader(first.Bytes()),
			ContentLength: aws.Int64(int64(first.Len())),
			ContentType:   aws.String(mt),
			Metadata:      map[string]string{metaETag: h.ETag()},
			IfNoneMatch:   ifNoneMatch,
		})
		if err != nil {
			return fail(s.putErr(ctx, err))
		}
	} else if err != nil {
		return fail(err)
	} else {
		out, err := s.up.UploadObject(ctx, &tm.UploadObjectInput{
			Bucket:      aws.String(s.cfg.Bucket),
			Key:         aws.String(k),
			Body:        io.MultiReader(&first, src),
			ContentType: aws.String(mt),
			IfNoneMatch: ifNoneMatch,
		})
		if err != nil {
			return fail(s.putErr(ctx, err))
		}
		s.stampETag(ctx, k, aws.ToString(out.ETag), mt, h)
	}
	return origin.Object{
		Bucket: bucket, Key: key, Size: h.Size(), ETag: h.ETag(), MimeType: mt,
		Modified: time.Now().UTC().Truncate(time.Second),
	}, nil
}

// putErr maps a failed write: 412 (If-None-Match lost a race) is ErrExists.
func (s *Store) putErr(ctx context.Context, err error) error {
	if status(err) == http.StatusPreconditionFailed {
		return origin.ErrExists
	}
	return s.mapErr(ctx, err)
}

// stampETag adds the Qiniu etag to a multipart object's metadata with a
// copy onto itself, only if the object is still the one just uploaded
// (CopySourceIfMatch). A failure leaves the object without it (its S3
// ETag then stands in) and is logged.
func (s *Store) stampETag(ctx context.Context, k, s3etag, mt string, h *local.Hasher) {
	if h.Size() > maxCopyBytes {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(s.cfg.Timeout, time.Duration(h.Size()>>20)*100*time.Millisecond))
	defer cancel()
	in := &awss3.CopyObjectInput{
		Bucket:            aws.String(s.cfg.Bucket),
		Key:               aws.String(k),
		CopySource:        aws.String(copySource(s.cfg.Bucket, k)),
		MetadataDirective: types.MetadataDirectiveReplace,
		Metadata:          map[string]string{metaETag: h.ETag()},
		ContentType:       aws.String(mt),
	}
	if s3etag != "" {
		in.CopySourceIfMatch = aws.String(s3etag)
	}
	if _, err := s.c.CopyObject(cctx, in); err != nil {
		s.log.Warn("s3 objects: could not store the etag of a multipart upload as metadata; its S3 ETag stands in",
			"key", truncate(k), "err", err)
	}
}

// copySource is the x-amz-copy-source value: bucket/key, URL-encoded
// except for "/".
func copySource(bucket, key string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.WriteString(bucket)
	b.WriteByte('/')
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.~/", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func detectMime(key string, head []byte) string {
	if ext := path.Ext(key); ext != "" {
		if t := mime.TypeByExtension(ext); t != "" {
			return t
		}
	}
	return http.DetectContentType(head)
}

// Delete removes an object; ErrNotFound when absent (S3's DELETE does not
// tell, so a HEAD asks first).
func (s *Store) Delete(ctx context.Context, bucket, key string) error {
	if err := validate(bucket, key); err != nil {
		return err
	}
	if _, err := s.head(ctx, bucket, key); err != nil {
		return fmt.Errorf("delete %s/%s: %w", bucket, truncate(key), err)
	}
	err := s.bounded(ctx, func(ctx context.Context) error {
		_, err := s.c.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.objectKey(bucket, key))})
		return err
	})
	if err != nil {
		return fmt.Errorf("delete %s/%s: %w", bucket, truncate(key), err)
	}
	return nil
}

// List returns the objects of bucket whose keys start with prefix, sorted
// by key, at most limit of them (limit <= 0: all).
func (s *Store) List(ctx context.Context, bucket, prefix string, limit int) ([]origin.Object, error) {
	p, err := s.ListPage(ctx, bucket, ListOptions{Prefix: prefix, Limit: limit})
	if err != nil {
		return nil, err
	}
	return p.Objects, nil
}

// ListOptions select a page of a listing.
type ListOptions struct {
	// Prefix keeps the keys that start with it.
	Prefix string
	// Marker keeps the keys after it (the previous page's NextMarker).
	Marker string
	// Delimiter, when set, rolls the keys that hold it after the prefix
	// up into Page.Prefixes (S3's common prefixes: "directories").
	Delimiter string
	// Limit bounds Objects plus Prefixes (<= 0: no bound).
	Limit int
}

// Page is one page of a listing.
type Page struct {
	Objects  []origin.Object
	Prefixes []string
	// NextMarker continues the listing; empty on the last page.
	NextMarker string
}

// ListPage lists with prefix, marker and delimiter. Keys that Dora could
// not address (written by other tools: "a//b", "x/", ...) are left out.
// Each object's etag and type need a HEAD (S3's listing carries neither);
// they run concurrently, at most listConcurrency at once.
func (s *Store) ListPage(ctx context.Context, bucket string, opts ListOptions) (Page, error) {
	keys, page, err := s.listKeys(ctx, bucket, opts)
	if err != nil {
		return Page{}, err
	}
	return s.headAll(ctx, bucket, keys, page)
}

// Keys returns the keys of bucket that start with prefix, sorted, from the
// listing alone (no HEAD per object): the fast path of the admin's list
// API (admin/rs), which needs metadata only for the keys of one page.
func (s *Store) Keys(ctx context.Context, bucket, prefix string) ([]string, error) {
	keys, _, err := s.listKeys(ctx, bucket, ListOptions{Prefix: prefix})
	if err != nil {
		return nil, err
	}
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.key
	}
	return out, nil
}

// listedKey is one object of a listing: its Dora key and size.
type listedKey struct {
	key  string
	size int64
}

// listKeys runs ListObjectsV2 pages for opts: the addressable keys in
// order, and a Page holding the common prefixes and NextMarker.
func (s *Store) listKeys(ctx context.Context, bucket string, opts ListOptions) ([]listedKey, Page, error) {
	if err := dora.ValidateBucketName(bucket); err != nil {
		return nil, Page{}, fmt.Errorf("list: bucket: %v: %w", err, origin.ErrBadKey)
	}
	base := s.objectKey(bucket, "")
	in := &awss3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(base + opts.Prefix)}
	if opts.Marker != "" {
		in.StartAfter = aws.String(base + opts.Marker)
	}
	if opts.Delimiter != "" {
		in.Delimiter = aws.String(opts.Delimiter)
	}
	var (
		keys  []listedKey
		page  Page
		last  string
		more  bool
		token *string
	)
	full := func() bool { return opts.Limit > 0 && len(keys)+len(page.Prefixes) >= opts.Limit }
	// asked reports whether an S3 key (or common prefix) of an answer is
	// one the listing asked for: a store ignoring the prefix or the
	// marker must not list another Dora bucket's keys as this one's, nor
	// the keys of a previous page again.
	asked := func(raw string) bool {
		return strings.HasPrefix(raw, aws.ToString(in.Prefix)) && (in.StartAfter == nil || raw > *in.StartAfter)
	}
	for {
		in.ContinuationToken = token
		if opts.Limit > 0 {
			in.MaxKeys = aws.Int32(int32(min(opts.Limit-len(keys)-len(page.Prefixes), 1000)))
		}
		var out *awss3.ListObjectsV2Output
		err := s.bounded(ctx, func(ctx context.Context) error {
			var err error
			out, err = s.c.ListObjectsV2(ctx, in)
			return err
		})
		if err != nil {
			return nil, Page{}, fmt.Errorf("list %s: %w", bucket, err)
		}
		// Merge objects and common prefixes in key order, as S3 does
		// when counting MaxKeys.
		objs, cps := out.Contents, out.CommonPrefixes
		for (len(objs) > 0 || len(cps) > 0) && !full() {
			if len(cps) == 0 || (len(objs) > 0 && aws.ToString(objs[0].Key) < aws.ToString(cps[0].Prefix)) {
				o := objs[0]
				objs = objs[1:]
				if !asked(aws.ToString(o.Key)) {
					continue
				}
				k := strings.TrimPrefix(aws.ToString(o.Key), base)
				last = k
				if dora.ValidateKey(k) == nil {
					keys = append(keys, listedKey{k, aws.ToInt64(o.Size)})
				}
				continue
			}
			raw := aws.ToString(cps[0].Prefix)
			cps = cps[1:]
			if !asked(raw) {
				continue
			}
			p := strings.TrimPrefix(raw, base)
			last = p
			page.Prefixes = append(page.Prefixes, p)
		}
		more = len(objs) > 0 || len(cps) > 0 || aws.ToBool(out.IsTruncated)
		if full() || !aws.ToBool(out.IsTruncated) {
			break
		}
		// A truncated page without a new token would be asked for
		// again and again, forever.
		next := aws.ToString(out.NextContinuationToken)
		if next == "" || next == aws.ToString(token) {
			return nil, Page{}, fmt.Errorf("list %s: %s answered a truncated listing page without a new continuation token", bucket, s.where())
		}
		token = &next
	}
	if more && full() {
		page.NextMarker = last
	}
	return keys, page, nil
}

// headAll fills page.Objects with a HEAD of each key (etag and type, which
// S3's listing does not carry), at most listConcurrency at once; keys
// deleted meanwhile are left out.
func (s *Store) headAll(ctx context.Context, bucket string, keys []listedKey, page Page) (Page, error) {
	page.Objects = make([]origin.Object, len(keys))
	found := make([]bool, len(keys))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ferr error
		sem  = make(chan struct{}, listConcurrency)
	)
	for i, e := range keys {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			obj, err := s.head(ctx, bucket, e.key)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				if obj.Size < 0 { // the HEAD told none; the listing did
					obj.Size = e.size
				}
				page.Objects[i], found[i] = obj, true
			case errors.Is(err, origin.ErrNotFound): // deleted meanwhile
			case ferr == nil:
				ferr = err
			}
		}()
	}
	wg.Wait()
	if ferr != nil {
		return Page{}, fmt.Errorf("list %s: %w", bucket, ferr)
	}
	objs := page.Objects[:0]
	for i, o := range page.Objects {
		if found[i] {
			objs = append(objs, o)
		}
	}
	page.Objects = objs
	return page, nil
}
