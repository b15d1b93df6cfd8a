// Package boltq is the embedded pfop queue: pfop.Queue on a bbolt file of
// its own, durable across restarts.
//
// Layout: a bucket per pipeline holding three buckets keyed by an 8-byte
// big-endian sequence (so keys sort by arrival): "n" normal jobs waiting,
// "i" idle (type=1) jobs waiting, "f" messages in flight with their
// consumer and last touch. bbolt locks its file for one process, so
// whatever is in flight when Open runs belonged to a process that died:
// Open puts it back in front of its queue, where the next Claim finds it.
package boltq

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/internal/store/bolt"
)

var _ pfop.Queue = (*Queue)(nil)

var (
	bucketPipelines = []byte("pipelines")
	bucketNormal    = []byte("n")
	bucketIdle      = []byte("i")
	bucketFlight    = []byte("f")
)

// LockTimeout is how long Open waits for another process to release the
// file: the same as the bolt store's, both open through bolt.OpenDB.
const LockTimeout = bolt.LockTimeout

// Queue is a pfop.Queue on a bbolt file. Safe for concurrent use.
type Queue struct {
	db  *bbolt.DB
	now func() time.Time

	mu     sync.RWMutex
	closed bool
}

// waiting is a waiting message's value.
type waiting struct {
	Job string `json:"job"`
}

// flight is an in-flight message's value.
type flight struct {
	Job      string `json:"job"`
	Idle     bool   `json:"idle,omitempty"`
	Consumer string `json:"consumer"`
	Touched  int64  `json:"touched"` // unix nanos
}

// Open opens (creating) the queue file at path and hands back every
// message a previous process left in flight.
func Open(path string) (*Queue, error) {
	if path == "" {
		return nil, errors.New("open pfop queue: empty path")
	}
	db, err := bolt.OpenDB(path)
	if err != nil {
		return nil, fmt.Errorf("open pfop queue %s: %w", path, err)
	}
	q := &Queue{db: db, now: time.Now}
	err = db.Update(func(tx *bbolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bucketPipelines)
		if err != nil {
			return err
		}
		return root.ForEachBucket(func(name []byte) error {
			p := root.Bucket(name)
			f := p.Bucket(bucketFlight)
			var keys [][]byte
			var vals []flight
			if err := f.ForEach(func(k, v []byte) error {
				var fl flight
				if err := json.Unmarshal(v, &fl); err != nil {
					return fmt.Errorf("in-flight message %x: %w", k, err)
				}
				keys = append(keys, append([]byte(nil), k...))
				vals = append(vals, fl)
				return nil
			}); err != nil {
				return err
			}
			for i, k := range keys {
				if err := putBack(p, k, vals[i]); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open pfop queue %s: recover in-flight messages: %w", path, err)
	}
	return q, nil
}

// SetClock replaces the clock used for Touch and Reclaim (tests).
func (q *Queue) SetClock(now func() time.Time) { q.now = now }

// Close releases the file. Messages in flight stay recorded and come back
// at the next Open.
func (q *Queue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	return q.db.Close()
}

func (q *Queue) update(ctx context.Context, fn func(*bbolt.Tx) error) error {
	return q.txn(ctx, true, fn)
}

func (q *Queue) view(ctx context.Context, fn func(*bbolt.Tx) error) error {
	return q.txn(ctx, false, fn)
}

// txn runs fn in a read-write (writable) or read-only transaction, unless
// ctx is done or the queue closed.
func (q *Queue) txn(ctx context.Context, writable bool, fn func(*bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return pfop.ErrQueueClosed
	}
	if writable {
		return q.db.Update(fn)
	}
	return q.db.View(fn)
}

// putBack returns an in-flight message to the front of its waiting queue.
func putBack(p *bbolt.Bucket, k []byte, fl flight) error {
	dst := p.Bucket(bucketNormal)
	if fl.Idle {
		dst = p.Bucket(bucketIdle)
	}
	b, err := json.Marshal(waiting{Job: fl.Job})
	if err != nil {
		return err
	}
	if err := dst.Put(k, b); err != nil {
		return err
	}
	return p.Bucket(bucketFlight).Delete(k)
}

func pipelineBucket(tx *bbolt.Tx, name string) *bbolt.Bucket {
	return tx.Bucket(bucketPipelines).Bucket([]byte(name))
}

// Enqueue implements pfop.Queue.
func (q *Queue) Enqueue(ctx context.Context, pipeline, jobID string, idle bool) error {
	if err := pfop.ValidatePipeline(pipeline); err != nil {
		return err
	}
	if jobID == "" {
		return fmt.Errorf("%w: empty job id", pfop.ErrInvalid)
	}
	err := q.update(ctx, func(tx *bbolt.Tx) error {
		p, err := tx.Bucket(bucketPipelines).CreateBucketIfNotExists([]byte(pipeline))
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketNormal, bucketIdle, bucketFlight} {
			if _, err := p.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		seq, err := p.NextSequence()
		if err != nil {
			return err
		}
		b, err := json.Marshal(waiting{Job: jobID})
		if err != nil {
			return err
		}
		dst := p.Bucket(bucketNormal)
		if idle {
			dst = p.Bucket(bucketIdle)
		}
		return dst.Put(seqKey(seq), b)
	})
	if err != nil {
		return fmt.Errorf("pfop queue: enqueue %s on %s: %w", jobID, pipeline, err)
	}
	return nil
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

func msgID(k []byte) string { return hex.EncodeToString(k) }

func keyOf(m pfop.Message) ([]byte, error) {
	k, err := hex.DecodeString(m.ID)
	if err != nil || len(k) != 8 {
		return nil, fmt.Errorf("%w: message id %q", pfop.ErrInvalid, m.ID)
	}
	return k, nil
}

// Claim implements pfop.Queue.
func (q *Queue) Claim(ctx context.Context, pipeline, consumer string, limit int) (pfop.Message, bool, error) {
	var m pfop.Message
	var ok bool
	err := q.update(ctx, func(tx *bbolt.Tx) error {
		p := pipelineBucket(tx, pipeline)
		if p == nil {
			return nil
		}
		f := p.Bucket(bucketFlight)
		inFlight := 0
		c := f.Cursor()
		for k, _ := c.First(); k != nil && inFlight < limit; k, _ = c.Next() {
			inFlight++
		}
		if inFlight >= limit {
			return nil
		}
		src, idle := p.Bucket(bucketNormal), false
		k, v := src.Cursor().First()
		if k == nil && inFlight == 0 {
			src, idle = p.Bucket(bucketIdle), true
			k, v = src.Cursor().First()
		}
		if k == nil {
			return nil
		}
		var w waiting
		if err := json.Unmarshal(v, &w); err != nil {
			return fmt.Errorf("message %x: %w", k, err)
		}
		k = append([]byte(nil), k...)
		b, err := json.Marshal(flight{Job: w.Job, Idle: idle, Consumer: consumer, Touched: q.now().UnixNano()})
		if err != nil {
			return err
		}
		if err := f.Put(k, b); err != nil {
			return err
		}
		if err := src.Delete(k); err != nil {
			return err
		}
		m, ok = pfop.Message{ID: msgID(k), JobID: w.Job, Pipeline: pipeline, Idle: idle, Consumer: consumer}, true
		return nil
	})
	if err != nil {
		return pfop.Message{}, false, fmt.Errorf("pfop queue: claim on %s: %w", pipeline, err)
	}
	return m, ok, nil
}

// inFlight runs fn on m's in-flight record (nil when it is not in flight).
func (q *Queue) inFlight(ctx context.Context, m pfop.Message, fn func(p *bbolt.Bucket, k []byte, fl *flight) error) error {
	k, err := keyOf(m)
	if err != nil {
		return err
	}
	return q.update(ctx, func(tx *bbolt.Tx) error {
		p := pipelineBucket(tx, m.Pipeline)
		if p == nil {
			return fn(nil, k, nil)
		}
		v := p.Bucket(bucketFlight).Get(k)
		if v == nil {
			return fn(p, k, nil)
		}
		var fl flight
		if err := json.Unmarshal(v, &fl); err != nil {
			return fmt.Errorf("message %x: %w", k, err)
		}
		return fn(p, k, &fl)
	})
}

// Ack implements pfop.Queue. Acknowledging a message no longer in flight
// is not an error.
func (q *Queue) Ack(ctx context.Context, m pfop.Message) error {
	err := q.inFlight(ctx, m, func(p *bbolt.Bucket, k []byte, fl *flight) error {
		if fl == nil {
			return nil
		}
		return p.Bucket(bucketFlight).Delete(k)
	})
	if err != nil {
		return fmt.Errorf("pfop queue: ack %s: %w", m.ID, err)
	}
	return nil
}

// Release implements pfop.Queue: the message goes back to the front,
// unless m.Consumer no longer holds it (ErrLost).
func (q *Queue) Release(ctx context.Context, m pfop.Message) error {
	err := q.inFlight(ctx, m, func(p *bbolt.Bucket, k []byte, fl *flight) error {
		if fl == nil || fl.Consumer != m.Consumer {
			return pfop.ErrLost
		}
		return putBack(p, k, *fl)
	})
	if err != nil {
		return fmt.Errorf("pfop queue: release %s: %w", m.ID, err)
	}
	return nil
}

// Touch implements pfop.Queue.
func (q *Queue) Touch(ctx context.Context, m pfop.Message, consumer string) error {
	err := q.inFlight(ctx, m, func(p *bbolt.Bucket, k []byte, fl *flight) error {
		if fl == nil || fl.Consumer != consumer {
			return pfop.ErrLost
		}
		fl.Touched = q.now().UnixNano()
		b, err := json.Marshal(fl)
		if err != nil {
			return err
		}
		return p.Bucket(bucketFlight).Put(k, b)
	})
	if err != nil {
		return fmt.Errorf("pfop queue: touch %s: %w", m.ID, err)
	}
	return nil
}

// Reclaim implements pfop.Queue.
func (q *Queue) Reclaim(ctx context.Context, pipeline, consumer string, minIdle time.Duration, max int) ([]pfop.Message, error) {
	if max <= 0 {
		return nil, nil
	}
	var out []pfop.Message
	now := q.now()
	err := q.update(ctx, func(tx *bbolt.Tx) error {
		p := pipelineBucket(tx, pipeline)
		if p == nil {
			return nil
		}
		f := p.Bucket(bucketFlight)
		type upd struct {
			k []byte
			v []byte
		}
		var ups []upd
		c := f.Cursor()
		for k, v := c.First(); k != nil && len(ups) < max; k, v = c.Next() {
			var fl flight
			if err := json.Unmarshal(v, &fl); err != nil {
				return fmt.Errorf("message %x: %w", k, err)
			}
			if fl.Consumer == consumer || now.Sub(time.Unix(0, fl.Touched)) < minIdle {
				continue
			}
			fl.Consumer, fl.Touched = consumer, now.UnixNano()
			b, err := json.Marshal(fl)
			if err != nil {
				return err
			}
			ups = append(ups, upd{append([]byte(nil), k...), b})
			out = append(out, pfop.Message{ID: msgID(k), JobID: fl.Job, Pipeline: pipeline, Idle: fl.Idle, Consumer: consumer})
		}
		for _, u := range ups {
			if err := f.Put(u.k, u.v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pfop queue: reclaim on %s: %w", pipeline, err)
	}
	return out, nil
}

// Pipelines implements pfop.Queue.
func (q *Queue) Pipelines(ctx context.Context) ([]string, error) {
	var out []string
	err := q.view(ctx, func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketPipelines).ForEachBucket(func(name []byte) error {
			out = append(out, string(name))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("pfop queue: pipelines: %w", err)
	}
	return out, nil
}

// Stats counts a pipeline's messages: waiting (normal and idle) and in
// flight. For tests and metrics.
func (q *Queue) Stats(ctx context.Context, pipeline string) (waitingN, idleN, inFlightN int, err error) {
	err = q.view(ctx, func(tx *bbolt.Tx) error {
		p := pipelineBucket(tx, pipeline)
		if p == nil {
			return nil
		}
		waitingN = p.Bucket(bucketNormal).Stats().KeyN
		idleN = p.Bucket(bucketIdle).Stats().KeyN
		inFlightN = p.Bucket(bucketFlight).Stats().KeyN
		return nil
	})
	return
}

// Depth implements pfop.DepthReader: the jobs of pipeline waiting
// (normal and idle) and in flight.
func (q *Queue) Depth(ctx context.Context, pipeline string) (waiting, inFlight int64, err error) {
	err = q.view(ctx, func(tx *bbolt.Tx) error {
		p := pipelineBucket(tx, pipeline)
		if p == nil {
			return nil
		}
		waiting = int64(p.Bucket(bucketNormal).Stats().KeyN + p.Bucket(bucketIdle).Stats().KeyN)
		inFlight = int64(p.Bucket(bucketFlight).Stats().KeyN)
		return nil
	})
	return waiting, inFlight, err
}

// JobIDs implements pfop.Queue: the jobs waiting (normal and idle) and in
// flight on pipeline.
func (q *Queue) JobIDs(ctx context.Context, pipeline string) ([]string, error) {
	var out []string
	err := q.view(ctx, func(tx *bbolt.Tx) error {
		p := pipelineBucket(tx, pipeline)
		if p == nil {
			return nil
		}
		for _, name := range [][]byte{bucketNormal, bucketIdle} {
			if err := p.Bucket(name).ForEach(func(_, v []byte) error {
				var w waiting
				if err := json.Unmarshal(v, &w); err != nil {
					return fmt.Errorf("decode message: %w", err)
				}
				out = append(out, w.Job)
				return nil
			}); err != nil {
				return err
			}
		}
		return p.Bucket(bucketFlight).ForEach(func(_, v []byte) error {
			var fl flight
			if err := json.Unmarshal(v, &fl); err != nil {
				return fmt.Errorf("decode message: %w", err)
			}
			out = append(out, fl.Job)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("pfop queue: jobs of %s: %w", pipeline, err)
	}
	return out, nil
}
