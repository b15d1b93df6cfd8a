// Package browser drives the web console in a real headless Chromium
// (Debian's chromium, through chromedp) against one embedded platform
// (`dorad dev`) shared by the package's tests. It is a package of its own so
// that `go test ./...` runs it in parallel with cli/e2e instead of after it.
package browser

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

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
	return m.Run()
}
