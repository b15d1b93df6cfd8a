package rs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/router/origin"
)

// UploadTempPrefix is the key namespace reserved for the temporaries of
// writes in progress (dora.UploadTempPrefix, which the router refuses
// too): an upload that names no key (admin/pfop: keyless and saveKey
// uploads) and a fetch to a bare bucket store the file there under a
// random name (TempKey), then copy it to its key and delete it. Keys there
// are left out of listings, refused by every rs operation and upload, and
// those a crash left behind are removed by Expirer (DecideTemp).
const UploadTempPrefix = dora.UploadTempPrefix

// ReservedKey reports whether key is UploadTempPrefix's directory or lies
// under it: a key no user may read, write, list or delete.
func ReservedKey(key string) bool { return dora.ReservedKey(key) }

// TempKey returns a new key under UploadTempPrefix: 96 random bits, so
// that no two writes share one and nobody can guess one.
func TempKey() string {
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	return UploadTempPrefix + hex.EncodeToString(rnd[:])
}

// tempKeyLen is the length of a key TempKey makes: the prefix and 24 hex
// digits.
const tempKeyLen = len(UploadTempPrefix) + 24

// IsTempKey reports whether key has the shape of a key TempKey makes: the
// only keys under UploadTempPrefix the sweep removes (a key of another
// shape there was written by an older version that let users write there:
// hidden, never swept; it goes with its bucket).
func IsTempKey(key string) bool {
	if len(key) != tempKeyLen || !strings.HasPrefix(key, UploadTempPrefix) {
		return false
	}
	for _, c := range key[len(UploadTempPrefix):] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// VisibleObjects is l.List without the temporaries (ReservedKey): at
// most limit (<= 0: all) of the objects of bucket under prefix, sorted by
// key, none of them under UploadTempPrefix. It asks l again for more,
// four times as many each time (at least as many more as it left out),
// until it has limit or l has no more: the temporaries, which sort
// together, never shorten a page, and however many there are, few
// listings pass them.
func VisibleObjects(ctx context.Context, l origin.Lister, bucket, prefix string, limit int) ([]origin.Object, error) {
	want := limit
	for {
		objs, err := l.List(ctx, bucket, prefix, want)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", bucket, err)
		}
		visible := make([]origin.Object, 0, len(objs))
		for _, o := range objs {
			if !ReservedKey(o.Key) {
				visible = append(visible, o)
			}
		}
		if limit <= 0 || len(visible) >= limit || len(objs) < want {
			if limit > 0 && len(visible) > limit {
				visible = visible[:limit]
			}
			return visible, nil
		}
		want = max(4*want, limit+len(objs)-len(visible))
	}
}

// RemoveTemps deletes every key of bucket under UploadTempPrefix (and the
// key of its directory's name: every ReservedKey), whatever its age or
// shape, and returns how many it deleted: for a bucket being deleted,
// whose temporaries no upload will move any more.
func RemoveTemps(ctx context.Context, objs Objects, bucket string) (int, error) {
	keys, err := listKeys(ctx, objs, bucket, strings.TrimSuffix(UploadTempPrefix, "/"))
	if err != nil {
		return 0, fmt.Errorf("list %s/%s: %w", bucket, UploadTempPrefix, err)
	}
	n := 0
	for _, k := range keys {
		if !ReservedKey(k) {
			continue
		}
		if err := objs.Delete(ctx, bucket, k); err != nil && !errors.Is(err, origin.ErrNotFound) {
			return n, fmt.Errorf("delete %s/%s: %w", bucket, k, err)
		}
		n++
	}
	return n, nil
}

// Defaults of Expirer's sweep of the temporaries.
const (
	// DefaultTempAge is how long a temporary must have been there before
	// Expirer removes it (DecideTemp).
	DefaultTempAge = 24 * time.Hour
	// DefaultTempLimit is the most temporaries one Sweep looks at (a stat,
	// and a delete when it is left over); the next sweep goes on from there.
	DefaultTempLimit = 1000
	// maxTrackedTemps bounds the temporaries whose first sighting Expirer
	// remembers; past it, new ones wait until older ones are removed.
	maxTrackedTemps = 100000
)

// DecideTemp says whether the temporary obj is left over at now (pure):
// true once both its put time (the object store's clock) and firstSeen
// (the sweeper's clock, when a sweep first listed it; zero: not yet) are
// at least age in the past.
//
// A temporary is visible only once its write is complete (origin.Writer);
// from then on the write that made it copies it to its key and deletes it,
// which takes as long as the object store takes to copy the file, never a
// client's pace. Yet the put time alone could be the time the write began
// (S3 dates an object by the start of its upload), which for a large file
// sent slowly can be long before it became visible: counting also from the
// first sighting means a temporary is removed only once it has been
// visible, and so unused, for at least age.
func DecideTemp(obj origin.Object, firstSeen, now time.Time, age time.Duration) bool {
	if firstSeen.IsZero() || now.Sub(firstSeen) < age {
		return false
	}
	return obj.Modified.IsZero() || now.Sub(obj.Modified) >= age
}

// tempTracker remembers when a sweep first listed each temporary, by
// bucket then key.
type tempTracker struct {
	seen map[string]map[string]time.Time
	n    int
}

// observe records the first sighting of each of keys (bucket's current
// temporaries, listed at now) and forgets those of bucket no longer there.
func (t *tempTracker) observe(bucket string, keys []string, now time.Time) {
	if t.seen == nil {
		t.seen = map[string]map[string]time.Time{}
	}
	old := t.seen[bucket]
	cur := make(map[string]time.Time, len(keys))
	for _, k := range keys {
		if first, ok := old[k]; ok {
			cur[k] = first
		}
	}
	t.n += len(cur) - len(old)
	for _, k := range keys {
		if _, ok := cur[k]; !ok && t.n < maxTrackedTemps {
			cur[k] = now
			t.n++
		}
	}
	if len(cur) == 0 {
		delete(t.seen, bucket)
		return
	}
	t.seen[bucket] = cur
}

// forget drops one temporary (removed).
func (t *tempTracker) forget(bucket, key string) {
	if _, ok := t.seen[bucket][key]; ok {
		delete(t.seen[bucket], key)
		t.n--
	}
}

// keep forgets the buckets not in buckets (deleted).
func (t *tempTracker) keep(buckets map[string]bool) {
	for b, m := range t.seen {
		if !buckets[b] {
			t.n -= len(m)
			delete(t.seen, b)
		}
	}
}

// tempKeys lists bucket's temporaries (IsTempKey), sorted.
func tempKeys(ctx context.Context, objs Objects, bucket string) ([]string, error) {
	keys, err := listKeys(ctx, objs, bucket, UploadTempPrefix)
	if err != nil {
		return nil, err
	}
	out := keys[:0]
	for _, k := range keys {
		if IsTempKey(k) {
			out = append(out, k)
		}
	}
	return out, nil
}

// sweepTemps removes the temporaries of buckets (in order) that
// DecideTemp finds left over at now, from where the previous sweep
// stopped, looking at no more than limit of them; res counts them.
func (x *Expirer) sweepTemps(ctx context.Context, log *slog.Logger, buckets []string, now time.Time, res *SweepResult) error {
	age := x.TempAge
	if age <= 0 {
		age = DefaultTempAge
	}
	limit := x.TempLimit
	if limit <= 0 {
		limit = DefaultTempLimit
	}
	from := x.tempNext
	stop := func(bucket, after string, err error) error {
		x.tempNext.bucket, x.tempNext.key = bucket, after
		res.More = true
		return err
	}
	for _, bucket := range buckets {
		if bucket < from.bucket {
			continue
		}
		after := ""
		if bucket == from.bucket {
			after = from.key
		}
		if err := ctx.Err(); err != nil {
			return stop(bucket, after, err)
		}
		keys, err := tempKeys(ctx, x.Objects, bucket)
		if err != nil {
			return stop(bucket, after, fmt.Errorf("list %s/%s: %w", bucket, UploadTempPrefix, err))
		}
		x.temps.observe(bucket, keys, now)
		for _, key := range keys {
			if key <= after {
				continue
			}
			first := x.temps.seen[bucket][key]
			if first.IsZero() || now.Sub(first) < age { // not a candidate yet: no store call
				after = key
				continue
			}
			if res.TempsExamined == limit || ctx.Err() != nil {
				return stop(bucket, after, ctx.Err())
			}
			res.TempsExamined++
			obj, err := x.Objects.Stat(ctx, bucket, key)
			if errors.Is(err, origin.ErrNotFound) {
				x.temps.forget(bucket, key)
				after = key
				continue
			}
			if err != nil {
				return stop(bucket, after, fmt.Errorf("%s/%s: %w", bucket, key, err))
			}
			if DecideTemp(obj, first, now, age) {
				err := x.Objects.Delete(ctx, bucket, key)
				if err != nil && !errors.Is(err, origin.ErrNotFound) {
					return stop(bucket, after, fmt.Errorf("delete %s/%s: %w", bucket, key, err))
				}
				x.temps.forget(bucket, key)
				if err == nil {
					res.TempsRemoved++
					log.Info("rs: removed a left-over upload temporary", "bucket", bucket, "key", key, "size", obj.Size, "put", obj.Modified, "firstSeen", first)
					if x.OnTempRemoved != nil {
						x.OnTempRemoved(bucket, key)
					}
				}
			}
			after = key
		}
	}
	present := make(map[string]bool, len(buckets))
	for _, b := range buckets {
		present[b] = true
	}
	x.temps.keep(present)
	x.tempNext.bucket, x.tempNext.key = "", ""
	return nil
}
