package platform

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	localruntime "github.com/doraproject/dora/admin/runtime/local"
	nomadruntime "github.com/doraproject/dora/admin/runtime/nomad"
	loadmemory "github.com/doraproject/dora/autoscaler/load/memory"
	loadredis "github.com/doraproject/dora/autoscaler/load/redis"
	"github.com/doraproject/dora/internal/store/bolt"
	"github.com/doraproject/dora/internal/store/consulkv"
	storememory "github.com/doraproject/dora/internal/store/memory"
	poolconsul "github.com/doraproject/dora/pool/consul"
	poolmemory "github.com/doraproject/dora/pool/memory"
)

// badURLCase is a URL an opener must refuse with ErrBadURL and a message
// containing want.
type badURLCase struct {
	url  string
	want string
}

func checkBad(t *testing.T, name string, open func(string) error, cases []badURLCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(name+"/"+c.url, func(t *testing.T) {
			err := open(c.url)
			if !errors.Is(err, ErrBadURL) {
				t.Fatalf("%s(%q) = %v, want ErrBadURL", name, c.url, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%s(%q) = %q, want it to mention %q", name, c.url, err, c.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("%s(%q) leaks the password: %q", name, c.url, err)
			}
		})
	}
}

func TestOpenStoreBadURLs(t *testing.T) {
	checkBad(t, "OpenStore", func(u string) error {
		st, err := OpenStore(context.Background(), u)
		if err == nil {
			st.Close()
		}
		return err
	}, []badURLCase{
		{"", "empty (use bolt:// or memory:// or consul://)"},
		{"memory://x", "memory:// takes nothing after the scheme"},
		{"./meta.db", "no scheme"},
		{"etcd://127.0.0.1:2379", `unknown scheme "etcd" (use bolt:// or memory:// or consul://)`},
		{"bolt://", "missing path (e.g. bolt://./.dora/meta.db)"},
		{"bolt://./x.db?mode=ro", "takes no query"},
		{"consul://", "missing host"},
		{"consul:///dora", "missing host"},
		{"consul://127.0.0.1:8500/dora?token=x", `unknown query parameter "token" (accepted: dc)`},
		{"consul://user:s3cret@127.0.0.1:8500/dora", "credentials in the URL are not supported"},
		{"consul://127.0.0.1:8500/a//b", "empty segment"},
		{"consul://127.0.0.1:8500/dora#x", "unexpected fragment"},
		{"consul://127.0.0.1:bad/dora", "invalid port"},
		{"consul://" + strings.Repeat("a", maxURLBytes), "longer than"},
	})
}

func TestOpenStoreGood(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "meta.db")
	st, err := OpenStore(ctx, "bolt://"+path)
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := st.(*bolt.Store); !ok || b.Path() != path {
		t.Fatalf("bolt store = %T %v", st, st)
	}
	if _, err := st.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	st.Close()

	mem, err := OpenStore(ctx, "MEMORY://")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := mem.(*storememory.Store); !ok {
		t.Fatalf("memory:// store = %T", mem)
	}
	if _, err := mem.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if kv, err := mem.Get(ctx, "k"); err != nil || string(kv.Value) != "v" {
		t.Fatalf("memory:// store Get = %v, %v", kv, err)
	}
	mem.Close()

	for _, c := range []struct{ url, prefix string }{
		{"consul://127.0.0.1:8500/dora", "dora/"},
		{"consul://127.0.0.1:8500", consulkv.DefaultPrefix},
		{"CONSUL://localhost/team/dora/?dc=dc2", "team/dora/"},
		{"consul://[::1]:8501/x", "x/"},
	} {
		st, err := OpenStore(ctx, c.url)
		if err != nil {
			t.Fatalf("OpenStore(%q) = %v", c.url, err)
		}
		ck, ok := st.(*consulkv.Store)
		if !ok || ck.Prefix() != c.prefix {
			t.Fatalf("OpenStore(%q) = %T prefix %q, want consulkv prefix %q", c.url, st, ck.Prefix(), c.prefix)
		}
		st.Close()
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := OpenStore(cctx, "bolt://"+path); !errors.Is(err, context.Canceled) {
		t.Fatalf("OpenStore with a cancelled context = %v", err)
	}
}

func TestOpenLoad(t *testing.T) {
	checkBad(t, "OpenLoad", func(u string) error {
		st, err := OpenLoad(u)
		if err == nil {
			CloseLoad(st)
		}
		return err
	}, []badURLCase{
		{"", "empty (use memory:// or redis:// or rediss://)"},
		{"127.0.0.1:6379", "no scheme"},
		{"memcached://127.0.0.1", `unknown scheme "memcached"`},
		{"memory://x", "memory:// takes nothing"},
		{"redis://", "missing host"},
		{"redis://:s3cret@127.0.0.1:6379/zero", "invalid database number"},
		{"redis://127.0.0.1:6379/0?bogus=1", "bogus"},
	})
	for _, c := range []struct {
		url   string
		redis bool
	}{
		{"memory://", false},
		{"redis://127.0.0.1:6379/0", true},
		{"redis://:pw@127.0.0.1:1", true},
		{"rediss://redis.example:6380", true},
	} {
		st, err := OpenLoad(c.url)
		if err != nil {
			t.Fatalf("OpenLoad(%q) = %v", c.url, err)
		}
		switch st.(type) {
		case *loadredis.Store:
			if !c.redis {
				t.Fatalf("OpenLoad(%q) = redis", c.url)
			}
		case *loadmemory.Store:
			if c.redis {
				t.Fatalf("OpenLoad(%q) = memory", c.url)
			}
		default:
			t.Fatalf("OpenLoad(%q) = %T", c.url, st)
		}
		if err := CloseLoad(st); err != nil {
			t.Fatalf("CloseLoad(%q) = %v", c.url, err)
		}
	}
}

func TestOpenQueue(t *testing.T) {
	checkBad(t, "OpenQueue", func(u string) error {
		_, c, err := OpenQueue(u)
		if err == nil {
			c.Close()
		}
		return err
	}, []badURLCase{
		{"", "empty (use bolt:// or redis:// or rediss://)"},
		{"./pfop.db", "no scheme"},
		{"127.0.0.1:6379", "no scheme"},
		{"amqp://127.0.0.1", `unknown scheme "amqp" (use bolt:// or redis:// or rediss://)`},
		{"memory://", `unknown scheme "memory"`},
		{"bolt://", "missing path (e.g. bolt://./.dora/pfop.db)"},
		{"bolt://./q.db?sync=1", "takes no query"},
		{"bolt://./q.db#x", "takes no query or fragment"},
		{"redis://", "missing host"},
		{"redis:///0", "missing host"},
		{"rediss://", "missing host"},
		{"redis://:s3cret@127.0.0.1:6379/zero", "invalid database number"},
		{"redis://:s3cret@127.0.0.1:6379/0?bogus=1", "unexpected option: bogus"},
		{"redis://127.0.0.1:6379/0#frag", "unexpected fragment"},
		{"redis://" + strings.Repeat("a", maxURLBytes), "longer than"},
	})

	dir := t.TempDir()
	for _, c := range []struct {
		url  string
		want string // the queue's type
	}{
		{"bolt://" + filepath.Join(dir, "sub", "pfop.db"), "*boltq.Queue"},
		{"BOLT://" + filepath.Join(dir, "other.db"), "*boltq.Queue"},
		{"redis://127.0.0.1:6379/0", "*redisq.Queue"},
		{"redis://:pw@127.0.0.1:1", "*redisq.Queue"},
		{"rediss://redis.example:6380/2", "*redisq.Queue"},
	} {
		q, closer, err := OpenQueue(c.url)
		if err != nil {
			t.Fatalf("OpenQueue(%q) = %v", c.url, err)
		}
		if got := reflect.TypeOf(q).String(); got != c.want {
			t.Fatalf("OpenQueue(%q) = %s, want %s", c.url, got, c.want)
		}
		if err := closer.Close(); err != nil {
			t.Fatalf("close %q: %v", c.url, err)
		}
	}

	// A bolt queue is durable: a job queued before a close is claimed
	// after a reopen.
	path := "bolt://" + filepath.Join(dir, "durable.db")
	q, closer, err := OpenQueue(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := q.Enqueue(ctx, "0.default", "z0.000000000000000000000001", false); err != nil {
		t.Fatal(err)
	}
	closer.Close()
	q, closer, err = OpenQueue(path)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	m, ok, err := q.Claim(ctx, "0.default", "w", 1)
	if err != nil || !ok || m.JobID != "z0.000000000000000000000001" {
		t.Fatalf("claim after reopen = %+v %v %v", m, ok, err)
	}
}

func TestNewDiscovery(t *testing.T) {
	checkBad(t, "NewDiscovery", func(u string) error {
		_, err := NewDiscovery(u, DiscoveryOptions{})
		return err
	}, []badURLCase{
		{"", "empty (use memory:// or consul://)"},
		{"zookeeper://h:2181", `unknown scheme "zookeeper"`},
		{"memory://foo", "memory:// takes nothing"},
		{"consul://", "missing host"},
		{"consul://127.0.0.1:8500/dora", "takes no path"},
		{"consul://127.0.0.1:8500?wait=1s", `unknown query parameter "wait"`},
	})
	d, err := NewDiscovery("memory://", DiscoveryOptions{})
	if _, ok := d.(*poolmemory.Discovery); err != nil || !ok {
		t.Fatalf("memory:// = %T, %v", d, err)
	}
	d, err = NewDiscovery("consul://127.0.0.1:8500/?dc=dc1", DiscoveryOptions{})
	if _, ok := d.(*poolconsul.Discovery); err != nil || !ok {
		t.Fatalf("consul:// = %T, %v", d, err)
	}
}

func TestOpenObjects(t *testing.T) {
	checkBad(t, "OpenObjects", func(u string) error {
		_, err := OpenObjects(t.Context(), u, nil)
		return err
	}, []badURLCase{
		{"", "empty (use file:// or s3://)"},
		{"gs://bucket", `unknown scheme "gs"`},
		{"s3://ab?endpoint=http://127.0.0.1:1", "3 to 63 characters"},
		{"s3://bucket?endpoint=http://127.0.0.1:1&bogus=1", `unknown query parameter "bogus"`},
		{"s3://AK:s3cret@bucket?endpoint=http://127.0.0.1:1", "credentials in the URL"},
		{"file://", "missing path"},
		{"file://./x?y", "takes no query"},
	})
	dir := filepath.Join(t.TempDir(), "objects")
	if _, err := OpenObjects(t.Context(), "file://"+dir, nil); err != nil {
		t.Fatal(err)
	}
}

func TestConsulClient(t *testing.T) {
	if _, err := ConsulClient("consul://127.0.0.1:8500?dc=x"); err != nil {
		t.Fatal(err)
	}
	if _, err := ConsulClient("http://127.0.0.1:8500"); !errors.Is(err, ErrBadURL) {
		t.Fatalf("http:// = %v", err)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"redis://:s3cret@h:1/0":                          "redis://:xxxxx@h:1/0",
		"redis://u:s3cret@h:1/0":                         "redis://u:xxxxx@h:1/0",
		"bolt://./x.db":                                  "bolt://./x.db",
		"redis://u:s3cret@h:bad":                         "(URL with credentials, redacted)",
		"consul://h:99999?dc=a&token=s3cret":             "consul://h:99999?dc=a&token=xxxxx",
		"redis://h:1/0?password=s3cret&read_timeout=1s":  "redis://h:1/0?password=xxxxx&read_timeout=1s",
		"s3://b?endpoint=http://h:1&secret_key=s3cret#f": "s3://b?endpoint=http://h:1&secret_key=xxxxx#f",
		"redis://u:pw@h:1/0?AUTH=s3cret":                 "redis://u:xxxxx@h:1/0?AUTH=xxxxx",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOpenRuntime(t *testing.T) {
	checkBad(t, "OpenRuntime", func(u string) error {
		rt, err := OpenRuntime(u, RuntimeOptions{DataDir: t.TempDir()})
		if c, ok := rt.(interface{ Close() error }); ok && err == nil {
			c.Close()
		}
		return err
	}, []badURLCase{
		{"", "empty (use local:// or nomad://)"},
		{"docker://", `unknown scheme "docker"`},
		{"local://x?y=1", "takes no query"},
		{"nomad://", "missing host"},
		{"nomad://127.0.0.1:4646/v1", "takes no path"},
		{"nomad://127.0.0.1:4646?driver=docker", `driver "docker" must be raw_exec or exec`},
		{"nomad://127.0.0.1:4646?token=x", `unknown query parameter "token" (accepted: driver, network)`},
		{"nomad://127.0.0.1:4646?network=macvlan", `network "macvlan" must be host or bridge`},
		{"nomad://u:s3cret@127.0.0.1:4646", "credentials in the URL are not supported"},
	})
	rt, err := OpenRuntime("nomad://127.0.0.1:4646?driver=exec&network=bridge", RuntimeOptions{Regions: []RegionSpec{{Name: "z0", NomadRegion: "global"}}})
	if _, ok := rt.(*nomadruntime.Runtime); err != nil || !ok {
		t.Fatalf("nomad:// = %T, %v", rt, err)
	}
	if got := rt.(*nomadruntime.Runtime).Client().Address(); got != "http://127.0.0.1:4646" {
		t.Fatalf("nomad address %q", got)
	}
	dir := t.TempDir()
	rt, err = OpenRuntime("local://"+dir, RuntimeOptions{})
	lr, ok := rt.(*localruntime.Runtime)
	if err != nil || !ok {
		t.Fatalf("local:// = %T, %v", rt, err)
	}
	lr.Close()
}

func TestParseRegions(t *testing.T) {
	for _, c := range []struct {
		in      []string
		want    []RegionSpec
		wantErr string
	}{
		{in: []string{"z0"}, want: []RegionSpec{{Name: "z0"}}},
		{in: []string{"z0=global", "z1=asia/sh1+sh2", "z2=eu/*"}, want: []RegionSpec{
			{Name: "z0", NomadRegion: "global"},
			{Name: "z1", NomadRegion: "asia", Datacenters: []string{"sh1", "sh2"}},
			{Name: "z2", NomadRegion: "eu", Datacenters: []string{"*"}},
		}},
		{in: []string{""}, wantErr: "name must be"},
		{in: []string{"=global"}, wantErr: "name must be"},
		{in: []string{"z0="}, wantErr: "empty Nomad region"},
		{in: []string{"z0=glo bal"}, wantErr: `Nomad region "glo bal"`},
		{in: []string{"z0=global/"}, wantErr: `datacenter ""`},
		{in: []string{"z0", "z0"}, wantErr: "given twice"},
	} {
		got, err := ParseRegions(c.in)
		if c.wantErr != "" {
			if !errors.Is(err, ErrBadRegion) || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("ParseRegions(%q) = %v, want ErrBadRegion with %q", c.in, err, c.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseRegions(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

// TestBackendURLPortRange: a port outside 1..65535 is refused at start
// with the URL named, by every opener of a host:port URL, rather than
// accepted and failing every request later with a dial error.
func TestBackendURLPortRange(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		open func(string) error
		url  string
	}{
		{"OpenStore", func(u string) error { _, err := OpenStore(ctx, u); return err }, "consul://127.0.0.1:85000/dora"},
		{"OpenStore", func(u string) error { _, err := OpenStore(ctx, u); return err }, "consul://127.0.0.1:0/dora"},
		{"NewDiscovery", func(u string) error { _, err := NewDiscovery(u, DiscoveryOptions{}); return err }, "consul://127.0.0.1:85000"},
		{"ConsulClient", func(u string) error { _, err := ConsulClient(u); return err }, "consul://127.0.0.1:85000"},
		{"OpenRuntime", func(u string) error { _, err := OpenRuntime(u, RuntimeOptions{}); return err }, "nomad://127.0.0.1:464600"},
		{"OpenLoad", func(u string) error {
			st, err := OpenLoad(u)
			if err == nil {
				CloseLoad(st)
			}
			return err
		}, "redis://:s3cret@127.0.0.1:637900/0"},
		{"OpenQueue", func(u string) error {
			_, c, err := OpenQueue(u)
			if err == nil {
				c.Close()
			}
			return err
		}, "redis://127.0.0.1:99999/0"},
	} {
		checkBad(t, c.name, c.open, []badURLCase{{c.url, "port"}})
	}
}

// TestBackendURLNothingIgnored: a query parameter given twice (only the
// first was read) and a load URL's fragment (dropped) are refused, as the
// queue's fragment already was.
func TestBackendURLNothingIgnored(t *testing.T) {
	ctx := context.Background()
	checkBad(t, "OpenStore", func(u string) error { _, err := OpenStore(ctx, u); return err }, []badURLCase{
		{"consul://127.0.0.1:8500/dora?dc=dc1&dc=dc2", `"dc" given twice`},
	})
	checkBad(t, "OpenRuntime", func(u string) error { _, err := OpenRuntime(u, RuntimeOptions{}); return err }, []badURLCase{
		{"nomad://127.0.0.1:4646?driver=exec&driver=raw_exec", `"driver" given twice`},
	})
	checkBad(t, "OpenLoad", func(u string) error {
		st, err := OpenLoad(u)
		if err == nil {
			CloseLoad(st)
		}
		return err
	}, []badURLCase{
		{"redis://127.0.0.1:6379/0#frag", "unexpected fragment"},
	})
}

// TestConsulStorePrefixDotSegments: a consul:// store prefix with a "." or
// ".." segment was accepted, and on a real agent every Put succeeded while
// every Get of the same key answered "not found" (the HTTP paths are
// cleaned differently): metadata written and lost. It is refused.
func TestConsulStorePrefixDotSegments(t *testing.T) {
	checkBad(t, "OpenStore", func(u string) error {
		st, err := OpenStore(context.Background(), u)
		if err == nil {
			st.Close()
		}
		return err
	}, []badURLCase{
		{"consul://127.0.0.1:8500/..", `"." or ".." segment`},
		{"consul://127.0.0.1:8500/a/../b", `"." or ".." segment`},
		{"consul://127.0.0.1:8500/./dora", `"." or ".." segment`},
		{"consul://127.0.0.1:8500/a/./b", `"." or ".." segment`},
		{"consul://127.0.0.1:8500/%2e%2e/dora", `"." or ".." segment`},
	})
}
