// Package redisconn turns the Redis settings the platform's Redis-backed
// stores share (a URL or an address, and timeouts) into go-redis client
// options, so the pfop queue (admin/pfop/redisq) and the load store
// (autoscaler/load/redis) read them the same way.
package redisconn

import (
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// ErrNoAddress is returned by Options when neither URL nor Addr is set.
var ErrNoAddress = errors.New("no URL or address")

// Config is where a Redis server is and how long each network step may take.
type Config struct {
	// URL is a redis:// or rediss:// URL; it overrides Addr, Password and DB.
	URL      string
	Addr     string
	Password string
	DB       int
	// DialTimeout, ReadTimeout and WriteTimeout bound each network step;
	// a zero or negative one takes Options' default.
	DialTimeout, ReadTimeout, WriteTimeout time.Duration
}

// Options returns client options for c: from the URL when set, else from
// the address; each timeout c leaves unset is the URL's (dial_timeout,
// read_timeout, write_timeout) when positive, else defaultTimeout (no
// timeout at all is never taken: every wait is bounded); ctx deadlines
// bound commands and the client sends no CLIENT SETINFO. A bad URL is an
// error starting "url: ", a missing address ErrNoAddress; callers wrap
// both in their own invalid-configuration error.
func Options(c Config, defaultTimeout time.Duration) (*goredis.Options, error) {
	var opts *goredis.Options
	switch {
	case c.URL != "":
		o, err := goredis.ParseURL(c.URL)
		if err != nil {
			return nil, fmt.Errorf("url: %w", err)
		}
		opts = o
	case c.Addr != "":
		opts = &goredis.Options{Addr: c.Addr, Password: c.Password, DB: c.DB}
	default:
		return nil, ErrNoAddress
	}
	if opts.DB < 0 {
		// go-redis never selects a negative database: it would use 0.
		if c.URL != "" {
			return nil, fmt.Errorf("url: database %d is negative", opts.DB)
		}
		return nil, fmt.Errorf("database %d is negative", opts.DB)
	}
	opts.DialTimeout = orDefault(c.DialTimeout, orDefault(opts.DialTimeout, defaultTimeout))
	opts.ReadTimeout = orDefault(c.ReadTimeout, orDefault(opts.ReadTimeout, defaultTimeout))
	opts.WriteTimeout = orDefault(c.WriteTimeout, orDefault(opts.WriteTimeout, defaultTimeout))
	opts.ContextTimeoutEnabled = true
	opts.DisableIdentity = true // no CLIENT SETINFO round trips
	return opts, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
