package rs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/router/origin"
)

// Expiry is what the lifecycle (ObjectMeta.DeleteAfterDays) says of an
// object at a given time (Decide).
type Expiry int

// Decide's verdicts.
const (
	// NoLifecycle: the record sets no deleteAfterDays.
	NoLifecycle Expiry = iota
	// NotDue: the object's expiration is still ahead.
	NotDue
	// Overwritten: the object is not the one the lifecycle was set on
	// (other content since, or, for a record without an etag, put after
	// the record was written); it is kept.
	Overwritten
	// Due: the expiration has passed; the object is to be deleted.
	Due
)

func (x Expiry) String() string {
	switch x {
	case NoLifecycle:
		return "no lifecycle"
	case NotDue:
		return "not due"
	case Overwritten:
		return "overwritten"
	case Due:
		return "due"
	}
	return fmt.Sprintf("Expiry(%d)", int(x))
}

const day = 24 * time.Hour

// Expiration is when obj falls due under m, as stat reports it: its put
// time plus m.DeleteAfterDays days. ok is false without a lifecycle, and
// when m records another etag than obj's (the object was overwritten
// since the lifecycle was set).
func Expiration(m ObjectMeta, obj origin.Object) (exp time.Time, ok bool) {
	if m.DeleteAfterDays <= 0 || (m.ETag != "" && m.ETag != obj.ETag) {
		return time.Time{}, false
	}
	return obj.Modified.Add(time.Duration(m.DeleteAfterDays) * day), true
}

// Decide is the lifecycle's verdict on obj at now (pure). A record
// without an etag (written before it was kept) describes obj only if obj
// was put no later than the record was set: an object overwritten since
// is never deleted because of it. A later clock on the object store than
// on the admin errs on the side of keeping the object.
func Decide(m ObjectMeta, obj origin.Object, now time.Time) Expiry {
	if m.DeleteAfterDays <= 0 {
		return NoLifecycle
	}
	exp, ok := Expiration(m, obj)
	if !ok || (m.ETag == "" && obj.Modified.After(m.Set)) {
		return Overwritten
	}
	if now.Before(exp) {
		return NotDue
	}
	return Due
}

// DefaultExpiryLimit is the most ObjectMeta records one Expirer.Sweep
// examines (an object stat each); the next sweep goes on from there.
const DefaultExpiryLimit = 10000

// Expirer deletes the objects whose lifecycle has fallen due (Decide),
// object and record, as rs delete does. Run its sweeps on one process at
// a time (the admin's leader): two would only do the work twice.
type Expirer struct {
	Store   store.Store
	Objects Objects
	Logger  *slog.Logger
	// Limit bounds the records a Sweep examines; DefaultExpiryLimit when 0.
	Limit int
	// TempAge is how long a temporary under UploadTempPrefix must have
	// been there before a Sweep removes it (DecideTemp); DefaultTempAge
	// when 0.
	TempAge time.Duration
	// TempLimit bounds the temporaries a Sweep looks at; DefaultTempLimit
	// when 0.
	TempLimit int
	// OnTempRemoved, when set, is called after each temporary a Sweep
	// removes (a metric counter).
	OnTempRemoved func(bucket, key string)

	mu sync.Mutex // one Sweep at a time; guards next, tempNext and temps
	// next is where the previous sweep stopped (bucket, then the key
	// after which to go on); zero: from the start. tempNext is the same
	// for the temporaries.
	next, tempNext cursor
	// temps remembers when the temporaries were first listed.
	temps tempTracker
}

// cursor is where a sweep goes on: a bucket, then the key after which.
type cursor struct{ bucket, key string }

// SweepResult says what a Sweep did.
type SweepResult struct {
	Examined int // records whose object was looked at
	Expired  int // objects deleted
	// TempsExamined: temporaries (UploadTempPrefix) looked at, old
	// enough to be candidates; TempsRemoved: those deleted.
	TempsExamined, TempsRemoved int
	// More: the sweep stopped at its Limit or TempLimit (or an error)
	// before the end of the records or of the temporaries; the next one
	// goes on from there.
	More bool
}

// Sweep goes through the ObjectMeta records of every bucket, in key order
// from where the previous sweep stopped, and deletes each object Decide
// finds Due at now, then its record (only if unchanged since it was read).
// It stops after Limit records, when ctx ends, or at the first error of
// the store or the object store (returned; the next sweep retries from
// that record). onExpired, when set, is called after each deletion.
//
// Then, whatever became of the records, it removes the temporaries under
// UploadTempPrefix that writes cut short (a crash between storing one and
// deleting it) left behind: those DecideTemp finds left over at now,
// at most TempLimit looked at, from where the previous sweep stopped.
// A temporary's first sighting is remembered by this Expirer: one that
// has just taken over the sweeps waits TempAge before removing any.
func (x *Expirer) Sweep(ctx context.Context, now time.Time, onExpired func(bucket, key string)) (SweepResult, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var res SweepResult
	if x.Store == nil || x.Objects == nil {
		return res, errors.New("rs: Expirer needs Store and Objects")
	}
	log := x.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kvs, err := x.Store.List(ctx, store.PrefixBuckets)
	if err != nil {
		res.More = true
		return res, fmt.Errorf("list buckets: %w", err)
	}
	var buckets []string
	for _, kv := range kvs {
		if b := store.Name(store.PrefixBuckets, kv.Key); b != "" {
			buckets = append(buckets, b)
		}
	}
	errRecords := x.sweepRecords(ctx, log, buckets, now, onExpired, &res)
	if ctx.Err() != nil {
		return res, errRecords
	}
	errTemps := x.sweepTemps(ctx, log, buckets, now, &res)
	if errTemps != nil {
		errTemps = fmt.Errorf("upload temporaries: %w", errTemps)
	}
	return res, errors.Join(errRecords, errTemps)
}

// sweepRecords is Sweep's part for the lifecycle: the ObjectMeta records
// of buckets (in order) from x.next on.
func (x *Expirer) sweepRecords(ctx context.Context, log *slog.Logger, buckets []string, now time.Time, onExpired func(bucket, key string), res *SweepResult) error {
	limit := x.Limit
	if limit <= 0 {
		limit = DefaultExpiryLimit
	}
	from := x.next
	for _, bucket := range buckets {
		if bucket < from.bucket {
			continue
		}
		after := ""
		if bucket == from.bucket {
			after = from.key
		}
		if err := ctx.Err(); err != nil {
			res.More = true
			return err
		}
		recs, err := x.Store.List(ctx, store.ObjectMetaKey(bucket, ""))
		if err != nil {
			x.next.bucket, x.next.key = bucket, after
			res.More = true
			return fmt.Errorf("list %s: %w", store.ObjectMetaKey(bucket, ""), err)
		}
		for _, kv := range recs {
			key := store.Name(store.ObjectMetaKey(bucket, ""), kv.Key)
			if key == "" || (after != "" && key <= after) {
				continue
			}
			if res.Examined == limit || ctx.Err() != nil {
				x.next.bucket, x.next.key = bucket, after
				res.More = true
				return ctx.Err()
			}
			res.Examined++
			expired, err := x.expire(ctx, log, bucket, key, kv, now)
			if err != nil {
				x.next.bucket, x.next.key = bucket, after
				res.More = true
				return fmt.Errorf("%s/%s: %w", bucket, key, err)
			}
			if expired {
				res.Expired++
				if onExpired != nil {
					onExpired(bucket, key)
				}
			}
			after = key
		}
	}
	x.next.bucket, x.next.key = "", ""
	return nil
}

// expire deletes the object of one record when it is due.
func (x *Expirer) expire(ctx context.Context, log *slog.Logger, bucket, key string, kv store.KV, now time.Time) (bool, error) {
	var m ObjectMeta
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		log.Warn("rs: expiry: unreadable object metadata, skipped", "bucket", bucket, "key", key, "err", err)
		return false, nil
	}
	if m.DeleteAfterDays <= 0 {
		return false, nil
	}
	obj, err := x.Objects.Stat(ctx, bucket, key)
	if errors.Is(err, origin.ErrNotFound) {
		return false, nil // deleted otherwise; a later upload replaces the record
	}
	if errors.Is(err, origin.ErrBadKey) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if Decide(m, obj, now) != Due {
		return false, nil
	}
	// The record may have changed since the listing (an upload, a new
	// deleteAfterDays): decide on the current one.
	cur, err := x.Store.Get(ctx, kv.Key)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if cur.Version != kv.Version {
		var m2 ObjectMeta
		if json.Unmarshal(cur.Value, &m2) != nil || Decide(m2, obj, now) != Due {
			return false, nil
		}
	}
	err = deleteObject(ctx, x.Store, x.Objects, log, bucket, key, cur.Version)
	if errors.Is(err, origin.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	log.Info("rs: expired", "bucket", bucket, "key", key, "etag", obj.ETag, "deleteAfterDays", m.DeleteAfterDays)
	return true, nil
}
