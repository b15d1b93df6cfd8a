// Package redis is the production load store: load.Store on Redis (go-redis
// v9), shared by every router (writers) and autoscaler (reader).
//
// Layout: one hash per load key and second,
//
//	<prefix>{<ufop>|<version>|<region>}:<unix second>  →  c (concurrency), n (completed), w (waiting)
//
// with the three names query-escaped so that no separator can be forged,
// and the load key in a hash tag so that all seconds of one deployment live
// in one Redis Cluster slot. Several routers add into the same hash
// (HINCRBYFLOAT / HINCRBY), which is how "samples of the same second add
// up". Each hash expires (PEXPIREAT) at its second plus the retention, so
// Redis reclaims old data by itself.
//
// Record sends all its increments and expiries in one pipelined round trip;
// Averages reads every second of the longer window with HMGET in one
// pipelined round trip, then computes the figures exactly as
// autoscaler/load/memory documents (memory.Compute), so both backends agree
// to the letter (the contract suite autoscaler/load/loadtest checks both).
//
// Failure behaviour: the client uses short dial/read/write timeouts
// (Config, default 500 ms) and no retries, so a Record while Redis is down
// or unreachable returns an error after at most about one timeout instead of
// hanging. The caller — the router's once-a-second flush loop — drops those
// samples and counts the drop; it never queues them, since load figures are
// only useful fresh. Averages fails the same way and the autoscaler skips
// that evaluation.
package redis

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/doraproject/dora/autoscaler/load"
	"github.com/doraproject/dora/autoscaler/load/memory"
	"github.com/doraproject/dora/internal/redisconn"
)

// Defaults of Config.
const (
	DefaultPrefix    = "dora:load:"
	DefaultRetention = 10 * time.Minute
	DefaultTimeout   = 500 * time.Millisecond
)

// ErrInvalid is wrapped by errors about bad configuration; bad samples and
// windows wrap memory.ErrInvalid.
var ErrInvalid = errors.New("redis load store: invalid configuration")

var _ load.Store = (*Store)(nil)

// Config configures a Store. Server.URL or Server.Addr is required.
type Config struct {
	// Server is where Redis is (a redis:// or rediss:// URL, or an
	// address with password and DB) and how long each network step may
	// take; a timeout left unset is DefaultTimeout. It is the same
	// setting the pfop queue reads, so both parse it alike.
	Server redisconn.Config
	// Prefix of every key. Default DefaultPrefix.
	Prefix string
	// Retention is how long each second is kept. Default DefaultRetention.
	Retention time.Duration
}

// Store is a load.Store on Redis. Safe for concurrent use.
type Store struct {
	client    *goredis.Client
	prefix    string
	retention time.Duration
}

// New returns a Store. It does not contact Redis: the server may come up
// later, and Record fails until it does.
func New(cfg Config) (*Store, error) {
	opts, err := redisconn.Options(cfg.Server, DefaultTimeout)
	if err != nil {
		return nil, fmt.Errorf("redis load store: %w: %w", ErrInvalid, err)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Retention < time.Second {
		return nil, fmt.Errorf("redis load store: %w: retention %v below one second", ErrInvalid, cfg.Retention)
	}
	opts.PoolTimeout = opts.ReadTimeout + opts.DialTimeout
	opts.MaxRetries = -1   // fail fast: the caller drops and counts
	opts.DialerRetries = 1 // one dial per attempt
	return &Store{client: goredis.NewClient(opts), prefix: cfg.Prefix, retention: cfg.Retention}, nil
}

// Close closes the connection pool.
func (s *Store) Close() error {
	if err := s.client.Close(); err != nil {
		return fmt.Errorf("close redis load store: %w", err)
	}
	return nil
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping redis: %w", err)
	}
	return nil
}

// hashKey returns the Redis key of one load key and second.
func (s *Store) hashKey(k load.Key, sec int64) string {
	return s.prefix + "{" + url.QueryEscape(k.Ufop) + "|" + url.QueryEscape(k.Version) + "|" +
		url.QueryEscape(k.Region) + "}:" + strconv.FormatInt(sec, 10)
}

type secKey struct {
	key load.Key
	sec int64
}

// Record adds the samples in one pipelined round trip. Samples already
// past retention are dropped. An error means nothing or only part of the
// batch may have been counted; callers drop the batch.
func (s *Store) Record(ctx context.Context, samples []load.Sample) error {
	for i, smp := range samples {
		if err := memory.ValidateSample(smp); err != nil {
			return fmt.Errorf("record sample %d: %w", i, err)
		}
	}
	// Merge samples of the same second first: fewer commands.
	sums := make(map[secKey]*load.Sample, len(samples))
	var order []secKey
	now := time.Now()
	for _, smp := range samples {
		sk := secKey{smp.Key, smp.Time.Unix()}
		if !time.Unix(sk.sec, 0).Add(s.retention).After(now) {
			continue
		}
		acc := sums[sk]
		if acc == nil {
			acc = &load.Sample{}
			sums[sk] = acc
			order = append(order, sk)
		}
		acc.Concurrency += smp.Concurrency
		acc.Completed += smp.Completed
		acc.Waiting += smp.Waiting
	}
	if len(order) == 0 {
		return nil
	}
	pipe := s.client.Pipeline()
	for _, sk := range order {
		acc := sums[sk]
		k := s.hashKey(sk.key, sk.sec)
		pipe.HIncrByFloat(ctx, k, "c", acc.Concurrency)
		pipe.HIncrBy(ctx, k, "n", acc.Completed)
		pipe.HIncrBy(ctx, k, "w", acc.Waiting)
		pipe.PExpireAt(ctx, k, time.Unix(sk.sec, 0).Add(s.retention))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("record %d samples in redis: %w", len(samples), err)
	}
	return nil
}

// Averages reads the seconds of both windows in one pipelined round trip
// and computes the figures as memory.Compute defines them.
func (s *Store) Averages(ctx context.Context, key load.Key, now time.Time, stable, panic time.Duration) (load.Averages, error) {
	ns, err := memory.WindowSeconds("stable", stable)
	if err != nil {
		return load.Averages{}, fmt.Errorf("averages of %s: %w", key.Ufop, err)
	}
	np, err := memory.WindowSeconds("panic", panic)
	if err != nil {
		return load.Averages{}, fmt.Errorf("averages of %s: %w", key.Ufop, err)
	}
	end := now.Unix()
	n := max(ns, np)
	pipe := s.client.Pipeline()
	cmds := make([]*goredis.SliceCmd, n+1) // index i: second end-i
	for i := int64(1); i <= n; i++ {
		cmds[i] = pipe.HMGet(ctx, s.hashKey(key, end-i), "c", "w")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
		return load.Averages{}, fmt.Errorf("averages of %s from redis: %w", key.Ufop, err)
	}
	var parseErr error
	a := memory.Compute(end, ns, np, func(sec int64) (float64, int64, bool) {
		if !time.Unix(sec, 0).Add(s.retention).After(now) {
			return 0, 0, false
		}
		vals, err := cmds[end-sec].Result()
		if err != nil || len(vals) != 2 || vals[0] == nil {
			return 0, 0, false
		}
		c, err1 := strconv.ParseFloat(fmt.Sprint(vals[0]), 64)
		var w int64
		var err2 error
		if vals[1] != nil {
			w, err2 = strconv.ParseInt(fmt.Sprint(vals[1]), 10, 64)
		}
		if err := errors.Join(err1, err2); err != nil && parseErr == nil {
			parseErr = fmt.Errorf("second %d: %w", sec, err)
		}
		return c, w, true
	})
	if parseErr != nil {
		return load.Averages{}, fmt.Errorf("averages of %s: corrupt data in redis: %w", key.Ufop, parseErr)
	}
	return a, nil
}
