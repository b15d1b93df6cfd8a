package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/viper"

	"github.com/doraproject/dora"
	"github.com/doraproject/dora/cli/platform"
	"github.com/doraproject/dora/internal/accountstest"
	"github.com/doraproject/dora/internal/store"
	"github.com/doraproject/dora/internal/store/bolt"
	"github.com/doraproject/dora/router"
	"github.com/doraproject/dora/router/origin"
	localorigin "github.com/doraproject/dora/router/origin/local"
)

// TestRouterHoldFlags: --hold-timeout and --max-held reach platform's
// RouterConfig (0 hold meaning "no hold"), and bad values are refused.
func TestRouterHoldFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		hold    time.Duration
		maxHeld int
		err     string
	}{
		{name: "defaults", hold: router.DefaultHoldTimeout, maxHeld: router.DefaultMaxHeld},
		{name: "set", args: []string{"--hold-timeout", "45s", "--max-held", "7"}, hold: 45 * time.Second, maxHeld: 7},
		{name: "no hold", args: []string{"--hold-timeout", "0"}, hold: -1, maxHeld: router.DefaultMaxHeld},
		{name: "negative hold", args: []string{"--hold-timeout", "-1s"}, err: "--hold-timeout -1s must not be negative"},
		{name: "zero max held", args: []string{"--max-held", "0"}, err: "--max-held 0 must be at least 1"},
		{name: "negative max held", args: []string{"--max-held", "-3"}, err: "--max-held -3 must be at least 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, ok := parseRouterFlags(t, tc.args, tc.err)
			if !ok {
				return
			}
			if cfg.HoldTimeout != tc.hold || cfg.MaxHeld != tc.maxHeld {
				t.Fatalf("HoldTimeout %v MaxHeld %d, want %v %d", cfg.HoldTimeout, cfg.MaxHeld, tc.hold, tc.maxHeld)
			}
		})
	}
}

// parseRouterFlags parses args as `dorad router` flags into the role's
// config. With wantErr set the config must be refused with an error
// containing it (ok is false then); without, it must be accepted.
func parseRouterFlags(t *testing.T, args []string, wantErr string) (cfg platform.RouterConfig, ok bool) {
	t.Helper()
	v := viper.New()
	cmd := newRouterCommand(v)
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	if err := loadConfig(v, cmd); err != nil {
		t.Fatal(err)
	}
	cfg, err := routerConfig(v)
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("error %v, want %q", err, wantErr)
		}
		return cfg, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return cfg, true
}

// seedHoldStore writes a bucket "photos" with object in.txt and a ufop
// "slow" with an active release and a deployment scaled to zero (RUNNING,
// no instance), so that ?slow/1 is held: without a deployment the router
// answers at once that none will start.
func seedHoldStore(t *testing.T, dir string) (storeURL, objectsURL string) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(dir, "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	acct := accountstest.Alice
	put := func(key string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Put(ctx, key, b); err != nil {
			t.Fatal(err)
		}
	}
	accountstest.Seed(t, st, dora.Bucket{Name: "photos", Owner: acct.ID})
	put(store.ReleaseKey("slow", "v1"), dora.Release{Ufop: "slow", Version: "v1", Image: "slow.v1", Protocol: dora.ProtocolDora})
	put(store.UfopKey("slow"), dora.Ufop{Name: "slow", Owner: acct.ID, Mode: dora.ModePrivate, ActiveVersion: "v1"})
	put(store.DeploymentKey("slow", "deploy-slow"), dora.Deployment{ID: "deploy-slow", Ufop: "slow", Version: "v1",
		Region: dora.DefaultRegion, Max: 1, Status: dora.DeployRunning, Message: "scaled to zero"})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	objs, err := localorigin.New(filepath.Join(dir, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := objs.Put(ctx, "photos", "in.txt", strings.NewReader("hi\n"), origin.PutOptions{MimeType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	return "bolt://" + filepath.Join(dir, "meta.db"), "file://" + filepath.Join(dir, "objects")
}

// holdGet asks the router for ?slow/1 of photos/in.txt.
func holdGet(ctx context.Context, routerURL string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, routerURL+"/in.txt?slow/1", nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = "photos.localhost"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.Header.Get("Retry-After") == "" && resp.StatusCode == http.StatusServiceUnavailable {
		return resp.StatusCode, string(b), fmt.Errorf("503 without Retry-After: %s", b)
	}
	return resp.StatusCode, string(b), err
}

// TestRouterCommandHolds runs `dorad router` on a store where a ufop has no
// instance: the request is held for --hold-timeout (the 503 names the
// bound), --hold-timeout 0 answers at once, and with --max-held 1 of two
// concurrent requests one waits and the other is refused for the bound.
func TestRouterCommandHolds(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{name: "held for the timeout", args: []string{"--hold-timeout", "700ms"}, want: "no healthy instance of slow v1 in z0 within 700ms"},
		{name: "no hold", args: []string{"--hold-timeout", "0"}, want: "no healthy instance of slow v1 in z0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storeURL, objectsURL := seedHoldStore(t, t.TempDir())
			r := startDorad(t, append([]string{"router", "--listen", "127.0.0.1:0", "--store", storeURL, "--objects", objectsURL}, tc.args...)...)
			url := r.waitURL(t)
			waitOK(t, url+"/healthz")
			code, body, err := holdGet(context.Background(), url)
			if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, tc.want) {
				t.Fatalf("?slow/1 = %d %q %v, want 503 with %q", code, body, err, tc.want)
			}
			if tc.name == "no hold" && strings.Contains(body, "within") {
				t.Fatalf("no-hold 503 says it waited: %q", body)
			}
		})
	}

	t.Run("max held", func(t *testing.T) {
		storeURL, objectsURL := seedHoldStore(t, t.TempDir())
		r := startDorad(t, "router", "--listen", "127.0.0.1:0", "--store", storeURL, "--objects", objectsURL,
			"--hold-timeout", "2m", "--max-held", "1")
		url := r.waitURL(t)
		waitOK(t, url+"/healthz")
		// Two requests at once: the first to arrive is held (until
		// cancelled below), the second is refused for the bound.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		type answer struct {
			code int
			body string
			err  error
		}
		answers := make(chan answer, 2)
		for range 2 {
			go func() {
				code, body, err := holdGet(ctx, url)
				answers <- answer{code, body, err}
			}()
		}
		select {
		case a := <-answers:
			if a.err != nil || a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, "1 requests already wait for one") {
				t.Fatalf("second request = %d %q %v, want 503 for the bound", a.code, a.body, a.err)
			}
		case <-time.After(time.Minute):
			t.Fatal("neither request was refused for --max-held 1")
		}
		cancel()
		<-answers // the held one, cancelled
	})
}
