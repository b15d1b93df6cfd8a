package pfop

import (
	"context"
	"errors"
	"time"
)

// Message is one claimed job of a queue.
type Message struct {
	// ID is the queue's delivery id (boltq: a sequence; redisq: a stream
	// entry id). Ack, Release and Touch take the Message back.
	ID       string
	JobID    string
	Pipeline string
	Idle     bool // a type=1 job
	// Consumer is who the message was handed to (by Claim or Reclaim):
	// Release acts only while that consumer still holds it.
	Consumer string
}

// ErrLost is returned by Touch and Release (and may be by Ack) when the
// message is no longer claimed by this consumer: Reclaim gave it to
// another one, or it is no longer in flight.
var ErrLost = errors.New("pfop queue: message no longer claimed by this consumer")

// ErrQueueClosed is returned by every call on a closed queue.
var ErrQueueClosed = errors.New("pfop queue: closed")

// Queue carries job ids per named pipeline. A claimed message is "in
// flight" until it is acknowledged or released; each pipeline has at most
// limit messages in flight, counted across every consumer (the limit is
// passed by the claimer, so all workers must agree on it). An idle (type=1)
// job is handed out only when its pipeline has nothing in flight and no
// normal job waiting. Implementations: boltq, redisq; both pass queuetest.
type Queue interface {
	// Enqueue appends a job to a pipeline (created on first use).
	Enqueue(ctx context.Context, pipeline, jobID string, idle bool) error
	// Claim hands the oldest waiting job of pipeline to consumer; ok is
	// false when none may be claimed now (none waiting, limit reached,
	// or only idle jobs while the pipeline is busy). It does not wait.
	Claim(ctx context.Context, pipeline, consumer string, limit int) (m Message, ok bool, err error)
	// Ack removes a finished message.
	Ack(ctx context.Context, m Message) error
	// Release hands a claimed message back unfinished (a worker shutting
	// down): it waits again and may be claimed by anyone. When m.Consumer
	// no longer holds it (another consumer reclaimed it, or it is no
	// longer in flight) Release leaves it be and returns ErrLost: the
	// holder runs it, and handing it back would run it twice.
	Release(ctx context.Context, m Message) error
	// Touch renews consumer's claim (a heartbeat), so that Reclaim leaves
	// the message alone; ErrLost when another consumer has it now.
	Touch(ctx context.Context, m Message, consumer string) error
	// Reclaim gives consumer up to max in-flight messages of pipeline
	// that their holder has not touched for minIdle (the holder died),
	// oldest first; none when max <= 0. A consumer asks for no more than
	// it can start (and so heartbeat) at once: a message it took but left
	// waiting would be reclaimed again by another and run twice.
	Reclaim(ctx context.Context, pipeline, consumer string, minIdle time.Duration, max int) ([]Message, error)
	// Pipelines lists every pipeline that has had a job.
	Pipelines(ctx context.Context) ([]string, error)
	// JobIDs lists the job id of every message pipeline holds, waiting
	// or in flight (a job may appear twice). The worker's recovery uses
	// it to find jobs the store says are unfinished but no queue holds.
	JobIDs(ctx context.Context, pipeline string) ([]string, error)
}
