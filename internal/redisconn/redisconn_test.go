package redisconn

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestOptions(t *testing.T) {
	tests := []struct {
		name         string
		cfg          Config
		wantAddr     string
		wantDB       int
		wantRead     time.Duration
		wantErr      error
		wantErrStart string
	}{
		{name: "url overrides addr", cfg: Config{URL: "redis://:pw@h1:6380/3", Addr: "h2:6379", DB: 1},
			wantAddr: "h1:6380", wantDB: 3, wantRead: time.Second},
		{name: "addr", cfg: Config{Addr: "h2:6379", DB: 2, ReadTimeout: time.Minute},
			wantAddr: "h2:6379", wantDB: 2, wantRead: time.Minute},
		{name: "url's timeouts kept", cfg: Config{URL: "redis://h1:6380/0?read_timeout=7s&dial_timeout=1s"},
			wantAddr: "h1:6380", wantRead: 7 * time.Second},
		{name: "no timeout in the url is the default", cfg: Config{URL: "redis://h1:6380/0?read_timeout=-1"},
			wantAddr: "h1:6380", wantRead: time.Second},
		{name: "config's timeouts before the url's", cfg: Config{URL: "redis://h1:6380/0?read_timeout=7s", ReadTimeout: time.Minute},
			wantAddr: "h1:6380", wantRead: time.Minute},
		{name: "bad url", cfg: Config{URL: "http://h1"}, wantErrStart: "url: "},
		{name: "negative database in the url", cfg: Config{URL: "redis://h1:6380/-1"}, wantErrStart: "url: "},
		{name: "negative database", cfg: Config{Addr: "h1:6380", DB: -2}, wantErrStart: "database -2 is negative"},
		{name: "nothing", cfg: Config{}, wantErr: ErrNoAddress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := Options(tt.cfg, time.Second)
			switch {
			case tt.wantErr != nil || tt.wantErrStart != "":
				if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) ||
					!strings.HasPrefix(err.Error(), tt.wantErrStart) {
					t.Fatalf("Options(%+v) error = %v, want %v / prefix %q", tt.cfg, err, tt.wantErr, tt.wantErrStart)
				}
				return
			case err != nil:
				t.Fatalf("Options(%+v): %v", tt.cfg, err)
			}
			if o.Addr != tt.wantAddr || o.DB != tt.wantDB || o.ReadTimeout != tt.wantRead ||
				o.DialTimeout != time.Second || !o.ContextTimeoutEnabled || !o.DisableIdentity {
				t.Fatalf("Options(%+v) = addr %q db %d read %v dial %v ctx %v noident %v",
					tt.cfg, o.Addr, o.DB, o.ReadTimeout, o.DialTimeout, o.ContextTimeoutEnabled, o.DisableIdentity)
			}
		})
	}
}
