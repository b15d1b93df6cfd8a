package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/valyala/fasthttp"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/fop"
	"github.com/doraproject/dora/router/meta"
	"github.com/doraproject/dora/router/origin"
)

// Result is what Process produced.
type Result struct {
	// Size is the number of bytes of the pipeline's output.
	Size int64
	// MimeType is the output's content type ("" when the last stage named none).
	MimeType string
	// Saved is the stored object when the pipeline ended in saveas; nil otherwise.
	Saved *origin.Object
	// Reqid is the request id the instances received in X-Reqid.
	Reqid string
}

// ProcessError is a failed Process. Step is the 0-based index of the step
// that failed (-1 when the failure is not a step's: a bad fop, a missing
// object or bucket, a saveas target refused); Status is the HTTP status the
// same failure gets on the router's HTTP path; Msg is the message, for a
// ufop step the instance's own.
type ProcessError struct {
	Step   int
	Status int
	Msg    string
	Err    error // the underlying error when there is one (a broken stream)
}

func (e *ProcessError) Error() string {
	if e.Step >= 0 {
		return fmt.Sprintf("step %d: %s", e.Step, e.Msg)
	}
	return e.Msg
}

func (e *ProcessError) Unwrap() error { return e.Err }

func processError(h *httpError) *ProcessError {
	return &ProcessError{Step: h.step, Status: h.status, Msg: h.msg}
}

// Process runs fops on bucket:key through the same engine as the HTTP path
// (planning, ufop calls over one-shot input URLs, built-ins, saveas) and
// writes the output to w. It is for callers that authenticated themselves
// elsewhere (the pfop worker): no download token is needed, and a trailing
// `saveas/<EncodedEntryURI>` needs no sign (one is ignored when present);
// its target bucket must belong to the owner of bucket.
//
// fops is a pipeline as in a processing URL's query: `a/x|b/y[|saveas/<e>]`;
// no `p/1/`, no `e=`/`token=`. An empty fops copies the object. The router
// must be serving (Serve, or Handler behind a listener at PublicAddr), since
// instances read their input from its one-shot URLs. A failure is a
// *ProcessError; a write to w that fails aborts the pipeline (and the save).
// Cancelling ctx aborts it promptly, whatever step it is in: the instances'
// connections are closed (they see their requests cancelled) and the error
// has Status StatusClientClosedRequest (504 when a deadline passed).
func (r *Router) Process(ctx context.Context, bucket, key, fops string, w io.Writer) (Result, error) {
	res := Result{Reqid: r.newReqid()}
	start := r.now()
	req, err := fop.Parse(fops)
	if err != nil {
		return res, &ProcessError{Step: -1, Status: fasthttp.StatusBadRequest, Msg: err.Error(), Err: err}
	}
	if req.Persisted != "" || req.HasParams() {
		return res, &ProcessError{Step: -1, Status: fasthttp.StatusBadRequest, Msg: "p/1/ and parameters (e=, token=, attname=, ...) have no meaning in Process"}
	}
	if herr := checkKey(key); herr != nil {
		return res, processError(herr)
	}
	if dora.ReservedKey(key) { // as a download of it: no object of the bucket's
		return res, processError(errNoSuchObject())
	}
	if r.cache != nil {
		select {
		case <-r.Ready():
		case <-ctx.Done():
			return res, &ProcessError{Step: -1, Status: fasthttp.StatusServiceUnavailable, Msg: "metadata not loaded yet", Err: ctx.Err()}
		}
	}
	snap := r.meta.Snapshot()
	b, ok := snap.Bucket(bucket)
	if !ok {
		return res, &ProcessError{Step: -1, Status: fasthttp.StatusNotFound, Msg: fmt.Sprintf("no bucket %q", bucket)}
	}
	stages, herr := r.plan(snap, b, req.Steps, nil)
	if herr != nil {
		return res, processError(herr)
	}
	if req.SaveAs != nil {
		if herr := r.checkSaveTarget(snap, b, req.SaveAs); herr != nil {
			return res, processError(herr)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, r.cfg.Deadline)
	p := newPipeline(r, pctx, cancel, res.Reqid, b, key)
	cur, tee, herr := r.startPipeline(p, stages, req.SaveAs)
	if herr != nil {
		return res, processError(herr)
	}
	defer p.teardown()
	n, err := io.Copy(w, cur.body)
	cur.body.Close()
	res.Size, res.MimeType = n, cur.mime
	if err == nil && cur.size >= 0 && n != cur.size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && tee != nil && tee.saved == nil {
		err = errors.New("saveas: the output was not saved")
	}
	r.log.Debug("process", "reqid", res.Reqid, "bucket", bucket, "key", key, "pipeline", req.Pipeline(),
		"bytes", n, "duration", r.now().Sub(start), "err", err)
	if err != nil {
		return res, streamFailure(err, len(stages))
	}
	if tee != nil {
		res.Saved = tee.saved
	}
	return res, nil
}

// streamFailure maps an error met while streaming the output to a
// ProcessError, naming the step whose stream broke when known.
func streamFailure(err error, nStages int) *ProcessError {
	pe := &ProcessError{Step: -1, Status: fasthttp.StatusBadGateway, Msg: err.Error(), Err: err}
	var se *streamError
	switch {
	case errors.As(err, &se):
		pe.Step, pe.Msg = se.step, se.err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		pe.Status, pe.Msg = fasthttp.StatusGatewayTimeout, "deadline exceeded"
	case errors.Is(err, context.Canceled):
		pe.Status, pe.Msg = 499, "canceled"
	}
	if pe.Step < 0 && nStages > 0 && !errors.Is(err, context.Canceled) {
		pe.Step = nStages - 1
	}
	return pe
}

// checkSaveTarget checks a Process saveas target: the bucket exists and
// belongs to the source bucket's owner, and a Writer is configured.
func (r *Router) checkSaveTarget(snap *meta.Snapshot, src dora.Bucket, sa *fop.SaveAs) *httpError {
	tb, ok := snap.Bucket(sa.Bucket)
	if !ok {
		return errf(fasthttp.StatusNotFound, "saveas: no bucket %q", sa.Bucket)
	}
	if tb.Owner != src.Owner {
		return errf(fasthttp.StatusForbidden, "saveas: bucket %q does not belong to the owner of %q", sa.Bucket, src.Name)
	}
	if herr := checkSaveKey(sa.Key); herr != nil {
		return herr
	}
	if r.cfg.Writer == nil {
		return errf(fasthttp.StatusNotImplemented, "saveas: no writable origin configured")
	}
	return nil
}

// persistedLookupTimeout bounds the store read of a p/1/ request.
const persistedLookupTimeout = 5 * time.Second

// servePersisted answers `?p/1/<fop>`: the object persistent processing
// saved for fop on bucket:key, found in the store (store.GetResult); 404 when
// there is none (or it lives in a bucket of another owner).
//
// A result saved in a private bucket is served only with a download token
// of that bucket's owner, presented as for any private object: the same
// request URL with `&e=<deadline>&token=<AK>:<sign>` appended, sign over
// `scheme://host/path?p/1/<fop>&e=<deadline>`. When the source bucket is
// private too the token was already checked against the same owner (a
// result never lives in another owner's bucket); when it is public, the
// token is checked here, so that a public object's results saved in a
// private bucket stay private. (An absent token then answers 401 where an
// absent result answers 404.)
func (r *Router) servePersisted(rq *request, snap *meta.Snapshot, b dora.Bucket, key, host, rawPath string, req fop.Request) (bool, *httpError) {
	fopText := req.Persisted
	canon, ok := fop.Canonical(fopText)
	if !ok || canon == "" || r.cfg.Store == nil {
		return false, errf(fasthttp.StatusNotFound, "no persisted result for %q", fopText)
	}
	ctx, cancel := context.WithTimeout(context.Background(), persistedLookupTimeout)
	res, err := store.GetResult(ctx, r.cfg.Store, b.Name, key, canon)
	cancel()
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			r.log.Warn("router: persisted result lookup", "bucket", b.Name, "key", key, "fop", canon, "err", err)
		}
		return false, errf(fasthttp.StatusNotFound, "no persisted result for %q", fopText)
	}
	sb, sk := res.SavedBucket, res.SavedKey
	tb, found := snap.Bucket(sb)
	if !found || tb.Owner != b.Owner {
		return false, errf(fasthttp.StatusNotFound, "no persisted result for %q", fopText)
	}
	if herr := checkKey(sk); herr != nil || dora.ReservedKey(sk) {
		return false, errf(fasthttp.StatusNotFound, "no persisted result for %q", fopText)
	}
	if tb.Private && !b.Private {
		if herr := r.checkDownloadToken(rq.ctx, snap, tb, host, rawPath, req); herr != nil {
			herr.msg = "persisted result in a private bucket: " + herr.msg
			return false, herr
		}
	}
	return r.serveObject(rq, tb, sk)
}
