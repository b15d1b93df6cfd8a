package s3

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	good := []struct {
		raw  string
		want Config
	}{
		{"s3://dora-objects", Config{Bucket: "dora-objects"}},
		{"s3://dora-objects/", Config{Bucket: "dora-objects"}},
		{"s3://dora-objects/prod/eu?region=eu-west-1", Config{Bucket: "dora-objects", Prefix: "prod/eu", Region: "eu-west-1"}},
		{"s3://b01?endpoint=http://127.0.0.1:8333", Config{Bucket: "b01", Endpoint: "http://127.0.0.1:8333", PathStyle: true}},
		{"s3://b01?endpoint=http://localhost:9000/", Config{Bucket: "b01", Endpoint: "http://localhost:9000", PathStyle: true}},
		{"s3://b01?endpoint=http://[::1]:9000", Config{Bucket: "b01", Endpoint: "http://[::1]:9000", PathStyle: true}},
		{"s3://b01?endpoint=https://s3.cn-east-1.qiniucs.com&region=cn-east-1", Config{Bucket: "b01", Endpoint: "https://s3.cn-east-1.qiniucs.com", Region: "cn-east-1"}},
		{"s3://b01?endpoint=https://minio.internal&path-style=true", Config{Bucket: "b01", Endpoint: "https://minio.internal", PathStyle: true}},
		{"s3://b01?endpoint=http://10.0.0.5:7480&path-style=false", Config{Bucket: "b01", Endpoint: "http://10.0.0.5:7480"}},
		{"S3://b01/p?timeout=3s", Config{Bucket: "b01", Prefix: "p", Timeout: 3 * time.Second}},
		{"s3://my.bucket_legacy/a%20b", Config{Bucket: "my.bucket_legacy", Prefix: "a b"}},
	}
	for _, tt := range good {
		got, err := ParseURL(tt.raw)
		if err != nil || got != tt.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tt.raw, got, err, tt.want)
		}
	}
	bad := []struct{ raw, why string }{
		{"", "scheme"},
		{"file:///x", "scheme"},
		{"s3://", "bucket"},
		{"s3://ab", "bucket"},
		{"s3://-abc", "bucket"},
		{"s3://abc-", "bucket"},
		{"s3://a b c", ""},
		{"s3://abc:9000", "bucket"},
		{"s3://AKID:secret@bucket", "credentials"},
		{"s3://bucket?endpoint=http://u:p@host", "credentials"},
		{"s3://bucket?endpoint=ftp://host", "endpoint"},
		{"s3://bucket?endpoint=http://host/path", "endpoint"},
		{"s3://bucket?endpoint=http://host:99999", "endpoint"},
		{"s3://bucket?endpoint=", "endpoint"},
		{"s3://bucket?region=a/b", "region"},
		{"s3://bucket?path-style=maybe", "path-style"},
		{"s3://bucket?timeout=1h", "timeout"},
		{"s3://bucket?timeout=1ms", "timeout"},
		{"s3://bucket?bogus=1", "unknown query parameter"},
		{"s3://bucket?region=a&region=b", "2 times"},
		{"s3://bucket/a//b", "prefix"},
		{"s3://bucket/../x", "prefix"},
		{"s3://bucket/a%00b", "control"},
		{"s3://bucket#frag", "fragment"},
		{"s3:bucket", ""},
		{"s3://" + strings.Repeat("a", 5000), "longer"},
		// Credentials in query parameters are refused as unknown and
		// never echoed.
		{"s3://bucket?endpoint=http://h:1&password=SEKRET", "unknown query parameter"},
		{"s3://bucket?access_key=AKID&sk=SEKRET&sk=SEKRET", ""},
		{"s3://AKID:secret@bucket?token=SEKRET", "credentials"},
		{"s3://bucket/p?region=r&session_token=SEKRET#x", ""},
	}
	for _, tt := range bad {
		_, err := ParseURL(tt.raw)
		if !errors.Is(err, ErrBadURL) || !strings.Contains(err.Error(), tt.why) {
			t.Errorf("ParseURL(%q) = %v; want ErrBadURL mentioning %q", tt.raw, err, tt.why)
		}
		if err != nil && (strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "SEKRET") || strings.Contains(err.Error(), "u:p@")) {
			t.Errorf("ParseURL(%q) leaks a credential: %v", tt.raw, err)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"s3://b01/p?endpoint=http://127.0.0.1:1&region=r&path-style=true", "s3://a:b@c", "s3://bkt/%zz", "s3://bkt?timeout=5s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		cfg, err := ParseURL(raw)
		if err != nil {
			if !errors.Is(err, ErrBadURL) {
				t.Fatalf("ParseURL(%q) error %v does not wrap ErrBadURL", raw, err)
			}
			return
		}
		if validBucket(cfg.Bucket) != nil {
			t.Fatalf("ParseURL(%q) accepted bucket %q", raw, cfg.Bucket)
		}
		if cfg.Prefix != "" && validPrefix(cfg.Prefix) != nil {
			t.Fatalf("ParseURL(%q) accepted prefix %q", raw, cfg.Prefix)
		}
	})
}
