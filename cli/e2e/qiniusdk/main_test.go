// Package qiniusdk drives the embedded platform (`dorad dev`) with Qiniu's own
// Go SDK (github.com/qiniu/go-sdk/v7 at v7.27.0), the way a user brings an
// existing program: pointed at it through a custom storage.Region (most
// tests) or through the uc host alone, trusting the region query for every
// other host (TestTrustedRegionQuery): form and resumable uploads,
// BucketManager, fetch, download URLs through the router, BucketManager.Get
// and persistent processing. Every test checks what comes back: the bytes
// read through the router, stat fields, list contents.
package qiniusdk

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	qauth "github.com/qiniu/go-sdk/v7/auth"
	"github.com/qiniu/go-sdk/v7/client"
	"github.com/qiniu/go-sdk/v7/storage"
	"github.com/qiniu/go-sdk/v7/storagev2/uplog"

	doraclient "github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/cli/platform"
)

const (
	rootAK = "sdkRootAccessKey00000000000001"
	rootSK = "sdkRootSecretKey000000000000000000000001"

	pubBucket   = "sdkpub"   // public
	privBucket  = "sdkpriv"  // private
	otherBucket = "sdkother" // public, the target of cross-bucket copies

	foreignBucket = "sdkforeign" // another account's
)

// env is the one platform of this package and the SDK's view of it.
var env struct {
	dev        *platform.Dev
	adminHost  string // host:port of the admin API (up, rs, rsf, api, uc)
	routerHost string // host:port of the router (downloads)
	mac        *qauth.Credentials
	cfg        storage.Config
	hc         *http.Client // reaches <bucket>.localhost:<port> at the router
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "dora-qiniusdk-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The run-as user (nobody, as root) must reach the data directory.
	os.Chmod(dir, 0o711)
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("E2E_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	dev, err := platform.StartDev(context.Background(), platform.DevConfig{
		DataDir:            filepath.Join(dir, "data"),
		AdminAddr:          "127.0.0.1:0",
		RouterAddr:         "127.0.0.1:0",
		RootAK:             rootAK,
		RootSK:             rootSK,
		Logger:             logger,
		GoCache:            filepath.Join(dir, "go-build"),
		ContainerRuntime:   "none",
		AllowPrivateMirror: true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start dorad dev:", err)
		return 1
	}
	defer dev.Close()
	if err := setup(dev, dir); err != nil {
		fmt.Fprintln(os.Stderr, "setup:", err)
		return 1
	}
	return m.Run()
}

// setup makes an ordinary account with three buckets and points the SDK at
// the platform with that account's keys.
func setup(dev *platform.Dev, cacheDir string) error {
	ctx := context.Background()
	root := doraclient.New(dev.AdminURL, rootAK, rootSK)
	acct, err := root.CreateAccount(ctx, "sdkuser", 0)
	if err != nil {
		return err
	}
	user := doraclient.New(dev.AdminURL, acct.AccessKey, acct.SecretKey)
	for _, b := range []doraclient.BucketSpec{{Name: pubBucket}, {Name: privBucket, Private: true}, {Name: otherBucket}} {
		if _, err := user.CreateBucket(ctx, b); err != nil {
			return fmt.Errorf("bucket %s: %w", b.Name, err)
		}
	}
	// Someone else's bucket, which the SDK's account may not touch.
	other, err := root.CreateAccount(ctx, "sdkother", 0)
	if err != nil {
		return err
	}
	if _, err := doraclient.New(dev.AdminURL, other.AccessKey, other.SecretKey).CreateBucket(ctx, doraclient.BucketSpec{Name: foreignBucket}); err != nil {
		return fmt.Errorf("bucket %s: %w", foreignBucket, err)
	}
	env.dev = dev
	env.adminHost = hostOf(dev.AdminURL)
	env.routerHost = hostOf(dev.RouterURL)
	env.mac = qauth.New(acct.AccessKey, acct.SecretKey)
	region := &storage.Region{
		SrcUpHosts: []string{env.adminHost},
		CdnUpHosts: []string{env.adminHost},
		RsHost:     env.adminHost,
		RsfHost:    env.adminHost,
		ApiHost:    env.adminHost,
		IovipHost:  env.adminHost,
	}
	// v7.11 read Zone (Region is its newer name) and sent Batch to
	// CentralRsHost; Buckets goes to the uc host.
	env.cfg = storage.Config{Zone: region, Region: region, UseHTTPS: false, CentralRsHost: env.adminHost}
	storage.SetUcHost(env.adminHost, false)
	// Later SDKs log each upload request and send the logs to Qiniu's own
	// uplog server: not here (and their log hooks race with the request).
	uplog.DisableUplog()
	// The region query's cache file, under this run's directory.
	storage.SetRegionCachePath(filepath.Join(cacheDir, "query.cache.json"))
	routerAddr := env.routerHost
	env.hc = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, routerAddr)
		},
	}}
	// The SDK's own client (client.DefaultClient; its downloads always use
	// it) reaches <bucket>.localhost, the router's bucket domains that the
	// region query names as io_src, at the loopback address, as curl and
	// many systems' resolvers do (Go's does not).
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = dialLocalhost
	client.DefaultClient.Client = &http.Client{Transport: tr}
	// The SDK's caches of region queries (storagev2), under this run's
	// directory; the run-as user (nobody, as root) may use it too.
	tmp := filepath.Join(cacheDir, "tmp")
	if err := os.Mkdir(tmp, 0o1777); err != nil {
		return err
	}
	os.Chmod(tmp, 0o1777)
	os.Setenv("TMPDIR", tmp)
	return nil
}

// dialLocalhost dials localhost and *.localhost at 127.0.0.1 and every
// other address as it is.
func dialLocalhost(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	if host, port, err := net.SplitHostPort(addr); err == nil && (host == "localhost" || strings.HasSuffix(host, ".localhost")) {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	return d.DialContext(ctx, network, addr)
}

func hostOf(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		panic(err)
	}
	return p.Host
}

// domain is the bucket's download domain at the router, as the SDK's
// MakePublicURL and MakePrivateURL take it.
func domain(bucket string) string {
	_, port, _ := net.SplitHostPort(env.routerHost)
	return "http://" + bucket + ".localhost:" + port
}

// download GETs a URL made by the SDK through the router.
func download(t *testing.T, u string) (int, []byte, http.Header) {
	t.Helper()
	resp, err := env.hc.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", u, err)
	}
	return resp.StatusCode, b, resp.Header
}

// mustRead reads bucket/key through the router (public buckets) and
// fails unless it holds want.
func mustRead(t *testing.T, bucket, key string, want []byte) {
	t.Helper()
	u := storage.MakePublicURL(domain(bucket), key)
	if bucket == privBucket {
		u = storage.MakePrivateURL(env.mac, domain(bucket), key, time.Now().Add(time.Hour).Unix())
	}
	code, got, _ := download(t, u)
	if code != http.StatusOK || !bytes.Equal(got, want) {
		t.Fatalf("GET %s: %d, %d bytes (%.60q), want 200 and %d bytes (%.60q)", u, code, len(got), got, len(want), want)
	}
}

// upToken signs a put policy with the account's keys.
func upToken(p storage.PutPolicy) string {
	return p.UploadToken(env.mac)
}

// codeOf is the HTTP status of an SDK error (0 when it carries none).
func codeOf(err error) int {
	var ei *client.ErrorInfo
	if errors.As(err, &ei) {
		return ei.Code
	}
	return 0
}

// etag is Qiniu's etag of data: 4 MiB blocks, sha1.
func etag(data []byte) string {
	const block = 4 << 20
	if len(data) <= block {
		sum := sha1.Sum(data)
		return base64.URLEncoding.EncodeToString(append([]byte{0x16}, sum[:]...))
	}
	all := sha1.New()
	for off := 0; off < len(data); off += block {
		end := min(off+block, len(data))
		sum := sha1.Sum(data[off:end])
		all.Write(sum[:])
	}
	return base64.URLEncoding.EncodeToString(append([]byte{0x96}, all.Sum(nil)...))
}

// content is n deterministic, incompressible-looking bytes.
func content(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}
