// Package redisq is the production pfop queue: pfop.Queue on Redis Streams
// (go-redis v9) with one consumer group, shared by every worker.
//
// Layout, per pipeline (the name in a hash tag, so that a pipeline's keys
// share one Redis Cluster slot and its scripts stay atomic):
//
//	<prefix>{<pipeline>}:n   stream of normal jobs   (field job=<id>)
//	<prefix>{<pipeline>}:i   stream of idle (type=1) jobs
//	<prefix>pipelines        set of pipeline names
//
// A claimed message is in the group's pending entries list (PEL) until
// acknowledged; the in-flight count of a pipeline is the PEL size of its
// two streams, so the per-pipeline limit holds across every worker: Claim
// is a Lua script that counts, then XREADGROUPs, atomically. A worker
// renews its claims with Touch (XCLAIM of its own entry, resetting the
// idle time); Reclaim is XAUTOCLAIM of entries idle longer than minIdle,
// which is how a live worker takes over the jobs of a dead one. Ack is
// XACK+XDEL; Release, if the releasing consumer still holds the entry,
// acknowledges it and re-adds the job at the stream's end.
//
// The client retries a command whose connection broke after it was sent
// (the reply lost to a reset or a Redis that died right after answering),
// so every script must be safe to run twice. Ack, Release and Touch are by
// their nature; Enqueue and Claim carry a token of the call and record,
// for a minute, under <prefix>{<pipeline>}:r:<token>, that it ran (and
// what Claim handed out): a second run answers as the first did instead of
// adding the job twice or claiming a second entry the caller never hears of.
package redisq

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/doraproject/dora/admin/pfop"
	"github.com/doraproject/dora/internal/redisconn"
)

var _ pfop.Queue = (*Queue)(nil)

// Defaults of Config.
const (
	DefaultPrefix  = "dora:pfop:"
	DefaultTimeout = 2 * time.Second
	// Group is the consumer group every worker joins.
	Group = "workers"
	// reclaimBatch is the XAUTOCLAIM COUNT.
	reclaimBatch = 100
	// doneTTL is how long the record that an Enqueue or a Claim ran is
	// kept: far longer than the client's retries of one call take.
	doneTTL = time.Minute
)

// ErrInvalid is wrapped by configuration errors.
var ErrInvalid = errors.New("redis pfop queue: invalid configuration")

// Config configures a Queue. Server.URL or Server.Addr is required.
type Config struct {
	// Server is where Redis is (a redis:// or rediss:// URL, or an
	// address with password and DB) and how long each network step may
	// take; a timeout left unset is DefaultTimeout. It is the same
	// setting the autoscaler's load store reads, so both parse it alike.
	Server redisconn.Config
	// Prefix of every key; default DefaultPrefix.
	Prefix string
}

// Queue is a pfop.Queue on Redis Streams. Safe for concurrent use.
type Queue struct {
	client *goredis.Client
	prefix string
}

// New returns a Queue. It does not contact Redis.
func New(cfg Config) (*Queue, error) {
	opts, err := redisconn.Options(cfg.Server, DefaultTimeout)
	if err != nil {
		return nil, fmt.Errorf("redis pfop queue: %w: %w", ErrInvalid, err)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	return &Queue{client: goredis.NewClient(opts), prefix: cfg.Prefix}, nil
}

// Close closes the client's connections.
func (q *Queue) Close() error { return q.client.Close() }

func (q *Queue) streams(pipeline string) (normal, idle string) {
	base := q.prefix + "{" + pipeline + "}:"
	return base + "n", base + "i"
}

func (q *Queue) stream(m pfop.Message) string {
	n, i := q.streams(m.Pipeline)
	if m.Idle {
		return i
	}
	return n
}

// doneKey returns a fresh key recording that one call on pipeline ran
// (see the package comment), in the pipeline's slot.
func (q *Queue) doneKey(pipeline string) string {
	return q.prefix + "{" + pipeline + "}:r:" + rand.Text()
}

func mapErr(err error) error {
	if errors.Is(err, goredis.ErrClosed) {
		return fmt.Errorf("%w: %w", pfop.ErrQueueClosed, err)
	}
	return err
}

// enqueueScript creates both streams and the group on first use, then
// adds the job, once per done key. KEYS: normal, idle, target, done;
// ARGV: group, job, done TTL in ms.
var enqueueScript = goredis.NewScript(`
if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[3]) then
  return false -- a retry of a call that ran
end
for i = 1, 2 do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('XGROUP', 'CREATE', KEYS[i], ARGV[1], '0', 'MKSTREAM')
  end
end
return redis.call('XADD', KEYS[3], '*', 'job', ARGV[2])
`)

// Enqueue implements pfop.Queue.
func (q *Queue) Enqueue(ctx context.Context, pipeline, jobID string, idle bool) error {
	if err := pfop.ValidatePipeline(pipeline); err != nil {
		return err
	}
	if jobID == "" {
		return fmt.Errorf("%w: empty job id", pfop.ErrInvalid)
	}
	n, i := q.streams(pipeline)
	target := n
	if idle {
		target = i
	}
	if err := q.client.SAdd(ctx, q.prefix+"pipelines", pipeline).Err(); err != nil {
		return fmt.Errorf("redis pfop queue: enqueue %s on %s: %w", jobID, pipeline, mapErr(err))
	}
	err := enqueueScript.Run(ctx, q.client, []string{n, i, target, q.doneKey(pipeline)}, Group, jobID, doneTTL.Milliseconds()).Err()
	if err != nil && !errors.Is(err, goredis.Nil) {
		return fmt.Errorf("redis pfop queue: enqueue %s on %s: %w", jobID, pipeline, mapErr(err))
	}
	return nil
}

// claimScript counts the pipeline's pending entries and reads one new
// entry when under the limit: a normal one, else an idle one when nothing
// is in flight. What it hands out is kept under the done key, and a
// retry with that key answers the same. KEYS: normal, idle, done;
// ARGV: group, consumer, limit, done TTL in ms.
// Returns false or {kind (1 normal, 2 idle), id, job}.
var claimScript = goredis.NewScript(`
local g, c, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local done = redis.call('HMGET', KEYS[3], 'kind', 'id', 'job')
if done[1] then return {tonumber(done[1]), done[2], done[3]} end
local function handout(kind, e)
  redis.call('HSET', KEYS[3], 'kind', kind, 'id', e[1], 'job', e[2])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
  return {kind, e[1], e[2]}
end
local inflight = 0
for i = 1, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    inflight = inflight + redis.call('XPENDING', KEYS[i], g)[1]
  end
end
if inflight >= limit then return false end
local function take(s)
  if redis.call('EXISTS', s) == 0 then return false end
  local r = redis.call('XREADGROUP', 'GROUP', g, c, 'COUNT', 1, 'STREAMS', s, '>')
  if not r then return false end
  local e = r[1][2][1]
  if not e then return false end
  local job = ''
  for j = 1, #e[2], 2 do
    if e[2][j] == 'job' then job = e[2][j+1] end
  end
  return {e[1], job}
end
local e = take(KEYS[1])
if e then return handout(1, e) end
if inflight == 0 then
  e = take(KEYS[2])
  if e then return handout(2, e) end
end
return false
`)

// Claim implements pfop.Queue.
func (q *Queue) Claim(ctx context.Context, pipeline, consumer string, limit int) (pfop.Message, bool, error) {
	if pfop.ValidatePipeline(pipeline) != nil {
		return pfop.Message{}, false, nil // nothing was ever enqueued there
	}
	n, i := q.streams(pipeline)
	res, err := claimScript.Run(ctx, q.client, []string{n, i, q.doneKey(pipeline)}, Group, consumer, limit, doneTTL.Milliseconds()).Result()
	if errors.Is(err, goredis.Nil) {
		return pfop.Message{}, false, nil
	}
	if err != nil {
		return pfop.Message{}, false, fmt.Errorf("redis pfop queue: claim on %s: %w", pipeline, mapErr(err))
	}
	arr, ok := res.([]any)
	if !ok || len(arr) != 3 {
		return pfop.Message{}, false, fmt.Errorf("redis pfop queue: claim on %s: unexpected reply %v", pipeline, res)
	}
	kind, _ := arr[0].(int64)
	id, _ := arr[1].(string)
	job, _ := arr[2].(string)
	return pfop.Message{ID: id, JobID: job, Pipeline: pipeline, Idle: kind == 2, Consumer: consumer}, true, nil
}

// ackScript: KEYS: stream; ARGV: group, id.
var ackScript = goredis.NewScript(`
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])
`)

// Ack implements pfop.Queue.
func (q *Queue) Ack(ctx context.Context, m pfop.Message) error {
	if err := ackScript.Run(ctx, q.client, []string{q.stream(m)}, Group, m.ID).Err(); err != nil && !errors.Is(err, goredis.Nil) {
		return fmt.Errorf("redis pfop queue: ack %s: %w", m.ID, mapErr(err))
	}
	return nil
}

// releaseScript re-adds the job of an entry pending with the consumer at
// the end and drops the entry; 0 when the consumer holds no such entry
// (also when the stream or the group is gone).
// KEYS: stream; ARGV: group, id, job, consumer.
var releaseScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[4])
if type(p) == 'table' and p.err then
  if string.sub(p.err, 1, 7) == 'NOGROUP' then return 0 end
  return redis.error_reply(p.err)
end
if #p == 0 then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[1], '*', 'job', ARGV[3])
return 1
`)

// Release implements pfop.Queue; the job waits again at the stream's end,
// unless m.Consumer no longer holds the entry (ErrLost). A retry of a
// Release whose reply was lost finds the entry gone and returns ErrLost
// too: the job waits again all the same.
func (q *Queue) Release(ctx context.Context, m pfop.Message) error {
	n, err := releaseScript.Run(ctx, q.client, []string{q.stream(m)}, Group, m.ID, m.JobID, m.Consumer).Int()
	if err != nil {
		return fmt.Errorf("redis pfop queue: release %s: %w", m.ID, mapErr(err))
	}
	if n == 0 {
		return fmt.Errorf("redis pfop queue: release %s: %w", m.ID, pfop.ErrLost)
	}
	return nil
}

// touchScript resets the idle time of an entry the consumer holds; 0
// when it holds none, also when the stream or the group is gone (a Redis
// that restarted without its data: the claim is no more).
// KEYS: stream; ARGV: group, id, consumer.
var touchScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3])
if type(p) == 'table' and p.err then
  if string.sub(p.err, 1, 7) == 'NOGROUP' then return 0 end
  return redis.error_reply(p.err)
end
if #p == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
`)

// Touch implements pfop.Queue.
func (q *Queue) Touch(ctx context.Context, m pfop.Message, consumer string) error {
	n, err := touchScript.Run(ctx, q.client, []string{q.stream(m)}, Group, m.ID, consumer).Int()
	if err != nil {
		return fmt.Errorf("redis pfop queue: touch %s: %w", m.ID, mapErr(err))
	}
	if n == 0 {
		return fmt.Errorf("redis pfop queue: touch %s: %w", m.ID, pfop.ErrLost)
	}
	return nil
}

// Reclaim implements pfop.Queue with XAUTOCLAIM on both streams, normal
// jobs first, up to max entries in all.
func (q *Queue) Reclaim(ctx context.Context, pipeline, consumer string, minIdle time.Duration, max int) ([]pfop.Message, error) {
	if pfop.ValidatePipeline(pipeline) != nil || max <= 0 {
		return nil, nil
	}
	n, i := q.streams(pipeline)
	var out []pfop.Message
	for _, s := range []struct {
		key  string
		idle bool
	}{{n, false}, {i, true}} {
		start := "0-0"
		for len(out) < max {
			msgs, next, err := q.client.XAutoClaim(ctx, &goredis.XAutoClaimArgs{
				Stream: s.key, Group: Group, Consumer: consumer, MinIdle: minIdle, Start: start,
				Count: int64(min(reclaimBatch, max-len(out))),
			}).Result()
			if err != nil {
				if isNoGroup(err) { // nothing was ever enqueued there
					break
				}
				return out, fmt.Errorf("redis pfop queue: reclaim on %s: %w", pipeline, mapErr(err))
			}
			for _, m := range msgs {
				job, _ := m.Values["job"].(string)
				out = append(out, pfop.Message{ID: m.ID, JobID: job, Pipeline: pipeline, Idle: s.idle, Consumer: consumer})
			}
			if next == "0-0" || next == "" {
				break
			}
			start = next
		}
	}
	return out, nil
}

func isNoGroup(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOGROUP")
}

// Pipelines implements pfop.Queue.
func (q *Queue) Pipelines(ctx context.Context) ([]string, error) {
	ps, err := q.client.SMembers(ctx, q.prefix+"pipelines").Result()
	if err != nil {
		return nil, fmt.Errorf("redis pfop queue: pipelines: %w", mapErr(err))
	}
	return ps, nil
}

// Depth implements pfop.DepthReader: entries left in the pipeline's
// streams (acknowledged entries are deleted) minus those pending in the
// group are waiting; the pending ones are in flight.
func (q *Queue) Depth(ctx context.Context, pipeline string) (waiting, inFlight int64, err error) {
	n, i := q.streams(pipeline)
	for _, key := range []string{n, i} {
		l, err := q.client.XLen(ctx, key).Result()
		if err != nil && !errors.Is(err, goredis.Nil) {
			return 0, 0, fmt.Errorf("redis pfop queue: depth of %s: %w", pipeline, mapErr(err))
		}
		var p int64
		if l > 0 {
			ps, err := q.client.XPending(ctx, key, Group).Result()
			if err != nil && !errors.Is(err, goredis.Nil) {
				return 0, 0, fmt.Errorf("redis pfop queue: depth of %s: %w", pipeline, mapErr(err))
			}
			if ps != nil {
				p = ps.Count
			}
		}
		waiting += l - p
		inFlight += p
	}
	return waiting, inFlight, nil
}

// JobIDs implements pfop.Queue: acknowledged entries are deleted, so every
// entry left in the pipeline's two streams is a job waiting or in flight.
func (q *Queue) JobIDs(ctx context.Context, pipeline string) ([]string, error) {
	if pfop.ValidatePipeline(pipeline) != nil {
		return nil, nil
	}
	n, i := q.streams(pipeline)
	var out []string
	for _, key := range []string{n, i} {
		start := "-"
		for {
			msgs, err := q.client.XRangeN(ctx, key, start, "+", reclaimBatch).Result()
			if err != nil && !errors.Is(err, goredis.Nil) {
				return nil, fmt.Errorf("redis pfop queue: jobs of %s: %w", pipeline, mapErr(err))
			}
			for _, m := range msgs {
				job, _ := m.Values["job"].(string)
				out = append(out, job)
			}
			if len(msgs) < reclaimBatch {
				break
			}
			start = "(" + msgs[len(msgs)-1].ID
		}
	}
	return out, nil
}
