package pfop

import (
	"crypto/sha1"
	"errors"
	"fmt"
	"strings"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/auth"
	"github.com/doraproject/dora/router/fop"
)

// ParseFops splits a job's fops field on ";" and checks each pipeline with
// the router's grammar: steps, an optional trailing saveas (its sign is
// optional: the submitter is authenticated), no p/1/, no download token.
func ParseFops(fops string) ([]string, error) {
	if fops == "" {
		return nil, fmt.Errorf("%w: fops is required", ErrInvalid)
	}
	if len(fops) > MaxFopsBytes {
		return nil, fmt.Errorf("%w: fops is %d bytes, more than %d", ErrInvalid, len(fops), MaxFopsBytes)
	}
	parts := strings.Split(fops, ";")
	if len(parts) > MaxFops {
		return nil, fmt.Errorf("%w: %d fops, more than %d", ErrInvalid, len(parts), MaxFops)
	}
	for i, p := range parts {
		if _, err := parseItem(p); err != nil {
			return nil, fmt.Errorf("%w: fop %d: %w", ErrInvalid, i+1, err)
		}
	}
	return parts, nil
}

// planFops is ParseFops for a job on bucket:key: each pipeline must also
// run as the worker runs it, with the saveas of its result appended
// (planItem), so that a job is refused when submitted rather than failed
// when run.
func planFops(bucket, key, fops string) ([]string, error) {
	cmds, err := ParseFops(fops)
	if err != nil {
		return nil, err
	}
	for i, c := range cmds {
		if _, err := planItem(bucket, key, c); err != nil {
			return nil, fmt.Errorf("%w: fop %d: %w", ErrInvalid, i+1, err)
		}
	}
	return cmds, nil
}

func parseItem(cmd string) (fop.Request, error) {
	if cmd == "" {
		return fop.Request{}, errors.New("empty fop")
	}
	r, err := fop.Parse(cmd)
	if err != nil {
		return r, err
	}
	switch {
	case r.Persisted != "":
		return r, errors.New("p/1/ cannot be persisted")
	case r.HasParams():
		return r, errors.New("parameters (e=, token=, attname=, ...) have no place in a pfop")
	case len(r.Steps) == 0 && r.SaveAs == nil:
		return r, errors.New("empty fop")
	case r.SaveAs == nil && len(r.Steps) >= fop.MaxSteps:
		return r, fmt.Errorf("%d steps: a pfop without saveas takes at most %d, the saveas of its result being a step too", len(r.Steps), fop.MaxSteps-1)
	}
	return r, nil
}

// DefaultResultKey is where a pipeline without saveas saves its result:
// "<key>_<urlsafe base64 of sha1(pipeline)>" in the input's bucket, or
// "pfop/<urlsafe base64 of sha1(key NUL pipeline)>" when that would be
// longer than MaxJobKeyByte.
func DefaultResultKey(key, pipeline string) string {
	h := sha1.Sum([]byte(pipeline))
	k := key + "_" + auth.URLSafeBase64(h[:])
	if len(k) > MaxJobKeyByte {
		h2 := sha1.Sum([]byte(key + "\x00" + pipeline))
		k = "pfop/" + auth.URLSafeBase64(h2[:])
	}
	return k
}

// itemPlan is how one item of a job runs.
type itemPlan struct {
	pipeline          string // canonical, without saveas ("" for a bare saveas: a copy)
	bucket, key       string // where the result goes
	run               string // what Process runs: the pipeline and a saveas
	explicitTarget    bool
	originalHadSaveas bool
}

func planItem(bucket, key, cmd string) (itemPlan, error) {
	r, err := parseItem(cmd)
	if err != nil {
		return itemPlan{}, err
	}
	p := itemPlan{pipeline: r.Pipeline()}
	if r.SaveAs != nil {
		p.bucket, p.key = r.SaveAs.Bucket, r.SaveAs.Key
	} else {
		p.bucket, p.key = bucket, DefaultResultKey(key, p.pipeline)
	}
	if err := dora.CheckUserKey(p.key); err != nil {
		return itemPlan{}, fmt.Errorf("saveas: %w", err)
	}
	sa := "saveas/" + auth.EncodedEntryURI(p.bucket, p.key)
	if p.pipeline == "" {
		p.run = sa
	} else {
		p.run = p.pipeline + "|" + sa
	}
	// The run is a query the router reads: the saveas may take it past
	// fop.MaxQueryBytes (a long pipeline, a long default result key).
	if _, err := fop.Parse(p.run); err != nil {
		return itemPlan{}, fmt.Errorf("with the saveas of its result (bucket %q, a %d-byte key): %w", p.bucket, len(p.key), err)
	}
	return p, nil
}
