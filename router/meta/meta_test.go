package meta

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	dora "github.com/doraproject/dora"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/memory"
)

func TestHostName(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"photos.localhost:8080", "photos.localhost"},
		{"Photos.LocalHost.", "photos.localhost"},
		{"[::1]:8080", "::1"},
		{"[::1", ""},
		{"", ""},
		{"cdn.example.com", "cdn.example.com"},
	} {
		if got := HostName(c.in); got != c.want {
			t.Errorf("HostName(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestBucketForHost(t *testing.T) {
	s := NewSnapshot(Data{
		Buckets: []dora.Bucket{{Name: "photos", Domains: []string{"img.example.com"}}, {Name: "docs"}},
		Domains: map[string]string{"files.example.org": "docs"},
	})
	for _, c := range []struct {
		host, want string
		ok         bool
	}{
		{"photos.localhost:8080", "photos", true},
		{"PHOTOS.localhost", "photos", true},
		{"img.example.com:80", "photos", true},
		{"files.example.org", "docs", true},
		{"nope.localhost", "", false},
		{"a.photos.localhost", "", false},
		{"localhost", "", false},
		{".localhost", "", false},
		{"photos.example.com", "", false},
	} {
		b, ok := s.BucketForHost(c.host, "localhost")
		if ok != c.ok || b.Name != c.want {
			t.Errorf("BucketForHost(%q) = %q,%v want %q,%v", c.host, b.Name, ok, c.want, c.ok)
		}
	}
}

func put(t *testing.T, st store.Store, key string, v any) {
	t.Helper()
	var b []byte
	if s, ok := v.(string); ok {
		b = []byte(s)
	} else {
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Put(context.Background(), key, b); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls the cache until cond holds or the deadline passes.
func waitFor(t *testing.T, c *Cache, what string, cond func(*Snapshot) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond(c.Snapshot()) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCacheFollowsStore(t *testing.T) {
	st := memory.New()
	put(t, st, store.AccountKey("1"), dora.Account{ID: "1", AccessKey: "ak1", SecretKey: "sk1"})
	put(t, st, store.AccessKeyKey("ak1"), "1")
	put(t, st, store.BucketKey("photos"), dora.Bucket{Name: "photos", Owner: "1"})
	put(t, st, store.UfopKey("bad"), "{not json")
	c := NewCache(st, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case <-c.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("cache never ready")
	}
	s := c.Snapshot()
	if _, ok := s.Bucket("photos"); !ok {
		t.Fatal("bucket missing")
	}
	if sk, err := s.SecretKey(ctx, "ak1"); err != nil || sk != "sk1" {
		t.Fatalf("SecretKey = %q, %v", sk, err)
	}
	if c.DecodeErrors() == 0 {
		t.Error("bad value not counted")
	}

	put(t, st, store.DomainKey("cdn.example.com"), "photos")
	put(t, st, store.UfopKey("grepd"), dora.Ufop{Name: "grepd", Owner: "1", ActiveVersion: "v1"})
	put(t, st, store.ReleaseKey("grepd", "v1"), dora.Release{Ufop: "grepd", Version: "v1", Protocol: dora.ProtocolUfop})
	waitFor(t, c, "domain, ufop and release", func(s *Snapshot) bool {
		_, okb := s.BucketForHost("cdn.example.com", "localhost")
		_, oku := s.Ufop("grepd")
		r, okr := s.Release("grepd", "v1")
		return okb && oku && okr && r.Protocol == dora.ProtocolUfop
	})

	put(t, st, store.AccountKey("1"), dora.Account{ID: "1", AccessKey: "ak1", SecretKey: "sk1", Disabled: true})
	waitFor(t, c, "disabled account", func(s *Snapshot) bool {
		_, err := s.AccountByAK("ak1")
		return errors.Is(err, ErrDisabled)
	})
	if err := st.Delete(ctx, store.AccessKeyKey("ak1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, "removed ak", func(s *Snapshot) bool {
		_, err := s.AccountByAK("ak1")
		return errors.Is(err, ErrUnknownAK)
	})
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// TestChangedOnPublish: the channel Changed returns is closed once a newer
// snapshot is published, and that snapshot is the one Snapshot returns
// then.
func TestChangedOnPublish(t *testing.T) {
	st := memory.New()
	c := NewCache(st, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	select {
	case <-c.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("cache never ready")
	}
	ch := c.Changed()
	select {
	case <-ch:
		t.Fatal("closed before any change")
	default:
	}
	put(t, st, store.BucketKey("photos"), dora.Bucket{Name: "photos", Owner: "1"})
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("not closed after a change")
	}
	if _, ok := c.Snapshot().Bucket("photos"); !ok {
		t.Fatal("closed before the new snapshot was published")
	}
}

// TestDeploymentFailed: a version is failed in a region only when every
// one of its live deployments there FAILED; a replaced one does not count.
func TestDeploymentFailed(t *testing.T) {
	s := NewSnapshot(Data{Deployments: []dora.Deployment{
		{ID: "a", Ufop: "u", Version: "v1", Region: "z0", Status: dora.DeployFailed, Message: "image has no entrypoint"},
		{ID: "b", Ufop: "u", Version: "v1", Region: "z1", Status: dora.DeployFailed, Message: "x"},
		{ID: "c", Ufop: "u", Version: "v1", Region: "z1", Status: dora.DeployRunning},
		{ID: "d", Ufop: "u", Version: "v2", Region: "z0", Status: dora.DeployReplaced},
		{ID: "e", Ufop: "u", Version: "v2", Region: "z0", Status: dora.DeployFailed, Message: "y"},
	}})
	if msg, ok := s.DeploymentFailed("u", "v1", "z0"); !ok || msg != "image has no entrypoint" {
		t.Errorf("v1 z0: %q %v", msg, ok)
	}
	if _, ok := s.DeploymentFailed("u", "v1", "z1"); ok {
		t.Error("v1 z1 has a running deployment")
	}
	if msg, ok := s.DeploymentFailed("u", "v2", "z0"); !ok || msg != "y" {
		t.Errorf("v2 z0: %q %v", msg, ok)
	}
	if _, ok := s.DeploymentFailed("u", "v3", "z0"); ok {
		t.Error("v3 has no deployment")
	}
}

// TestDeployments: a version's deployments in a region sum up to the state
// that says most: live over stopped over failed over none (REPLACED ones
// do not count), with the message of the first one of that state.
func TestDeployments(t *testing.T) {
	s := NewSnapshot(Data{Deployments: []dora.Deployment{
		{ID: "a", Ufop: "u", Version: "v1", Region: "z0", Status: dora.DeployStopped, Message: "all instances stopped"},
		{ID: "b", Ufop: "u", Version: "v1", Region: "z0", Status: dora.DeployFailed, Message: "x"},
		{ID: "c", Ufop: "u", Version: "v1", Region: "z1", Status: dora.DeployStopped},
		{ID: "d", Ufop: "u", Version: "v1", Region: "z1", Status: dora.DeployRunning, Message: "scaled to zero"},
		{ID: "e", Ufop: "u", Version: "v2", Region: "z0", Status: dora.DeployReplaced},
		{ID: "f", Ufop: "u", Version: "v3", Region: "z0", Status: dora.DeployPending},
	}})
	for _, c := range []struct {
		version, region string
		state           DeploymentState
		msg             string
	}{
		{"v1", "z0", DeploymentsStopped, "all instances stopped"},
		{"v1", "z1", DeploymentsLive, "scaled to zero"},
		{"v2", "z0", NoDeployment, ""},
		{"v3", "z0", DeploymentsLive, ""},
		{"v4", "z0", NoDeployment, ""},
	} {
		if st, msg := s.Deployments("u", c.version, c.region); st != c.state || msg != c.msg {
			t.Errorf("%s %s: %d %q, want %d %q", c.version, c.region, st, msg, c.state, c.msg)
		}
	}
}

// TestReadDeployments: ReadDeployments says what the store holds when
// called, even before the watch brings it (the cache does not run here),
// and concurrent calls all get an answer.
func TestReadDeployments(t *testing.T) {
	st := memory.New()
	c := NewCache(st, nil)
	ctx := t.Context()
	if s, _, err := c.ReadDeployments(ctx, "u", "v1", "z0"); err != nil || s != NoDeployment {
		t.Fatalf("empty store: %d %v", s, err)
	}
	b, _ := json.Marshal(dora.Deployment{ID: "d1", Ufop: "u", Version: "v1", Region: "z0", Status: dora.DeployStopped, Message: "job stopped"})
	if _, err := st.Put(ctx, store.DeploymentKey("u", "d1"), b); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 20)
	for range cap(errs) {
		go func() {
			s, msg, err := c.ReadDeployments(ctx, "u", "v1", "z0")
			if err == nil && (s != DeploymentsStopped || msg != "job stopped") {
				err = errors.New("wrong state")
			}
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if s, _ := c.Snapshot().Deployments("u", "v1", "z0"); s != NoDeployment {
		t.Fatal("the read changed the snapshot")
	}
}
