// Package browser drives the web console in a real headless Chromium
// (Debian's chromium, through chromedp) against one embedded platform
// (`dorad dev`) shared by the package's tests; the tests share one browser
// too, each in a browser context of its own (its own cookies). It is a package of its own so
// that `go test ./...` runs it in parallel with cli/e2e instead of after it.
package browser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/doraproject/dora/cli/platform"
)

const (
	rootAK = "browserRootAccessKey00001"
	rootSK = "browserRootSecretKey000000000000000000001"
)

// dev is the platform every test of the package talks to; TestMain starts
// it before the tests and stops it after them.
var dev *platform.Dev

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// The platform's run-as user (nobody, when the tests run as root) must
	// traverse to the data directory and the Go build cache.
	dir, err := os.MkdirTemp("", "dora-browser-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o711); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("E2E_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	dev, err = platform.StartDev(context.Background(), platform.DevConfig{
		DataDir:       filepath.Join(dir, "data"),
		GoCache:       filepath.Join(dir, "go-build"),
		AdminAddr:     "127.0.0.1:0",
		RouterAddr:    "127.0.0.1:0",
		RootAK:        rootAK,
		RootSK:        rootSK,
		Logger:        logger,
		StatsInterval: time.Second,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "start dorad dev: %v\n", err)
		return 1
	}
	defer dev.Close()
	defer stopBrowser()
	return m.Run()
}

// The package's one chromium, started by the first test that asks for a
// tab and stopped after the last test.
var (
	browserOnce   sync.Once
	browserCtx    context.Context
	browserErr    error
	browserCancel = func() {}
)

func stopBrowser() { browserCancel() }

// chromiumPath finds Debian's chromium (scripts/install-deps.sh installs
// it); DORA_CHROMIUM overrides.
func chromiumPath() (string, error) {
	if p := os.Getenv("DORA_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium on PATH: run scripts/install-deps.sh (apt-get install chromium) or set DORA_CHROMIUM")
}

func startBrowser() {
	path, err := chromiumPath()
	if err != nil {
		browserErr = err
		return
	}
	dir, err := os.MkdirTemp("", "dora-chromium-")
	if err != nil {
		browserErr = err
		return
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// A page in a background or occluded window is throttled; on a
		// loaded machine chromium can otherwise delay timers and loads.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(1366, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	logf := func(string, ...any) {}
	if os.Getenv("E2E_LOG") != "" {
		logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	}
	ctx, cancelCtx := chromedp.NewContext(allocCtx, chromedp.WithLogf(logf))
	browserCancel = func() {
		cancelCtx()
		cancelAlloc()
		os.RemoveAll(dir)
	}
	// Start the browser on ctx itself: a bounded context must not own
	// (and, ending, close) it.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		browserErr = fmt.Errorf("start chromium: %w", err)
		return
	}
	browserCtx = ctx
}

// newTab opens a tab of the package's browser in a browser context of its
// own (no cookies of another test), closed when the test ends. A missing
// browser fails the test.
func newTab(t *testing.T) context.Context {
	t.Helper()
	browserOnce.Do(startBrowser)
	if browserErr != nil {
		t.Fatal(browserErr)
	}
	ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	return ctx
}
