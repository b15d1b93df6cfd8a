//go:build browser

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/cli/platform"
)

// chromiumPath finds Debian's chromium (scripts/install-deps.sh installs
// it); DORA_CHROMIUM overrides. A missing browser fails the test.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("DORA_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH: run scripts/install-deps.sh (apt-get install chromium) or set DORA_CHROMIUM")
	return ""
}

// artifactDir is where screenshots go: $DORA_ARTIFACTS/console when set
// (CI keeps it), else a directory of the test.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if a := os.Getenv("DORA_ARTIFACTS"); a != "" {
		dir = filepath.Join(a, "console")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestConsoleInBrowser drives the web console in a real headless Chromium
// against an embedded platform: sign in, create a bucket, upload, register
// a ufop, build it from a program package, deploy it, watch the instance
// go RUNNING and follow its log, run a processing URL, and see the chart
// of requests/s move. Screenshots of each step are saved and logged.
func TestConsoleInBrowser(t *testing.T) {
	browser := chromiumPath(t)
	h := newTunedHarness(t, func(c *platform.DevConfig) { c.StatsInterval = time.Second })
	shots := artifactDir(t)
	work := t.TempDir()
	txt := filepath.Join(work, "hello.txt")
	if err := os.WriteFile(txt, []byte("hello dora\nfoo bar\nbye dora\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(work, "grepd.tar.gz")
	f, err := os.Create(pkg)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.WriteTarGz(context.Background(), f, filepath.Join(repoRoot(t), "examples", "grepd")); err != nil {
		t.Fatal(err)
	}
	f.Close()

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(browser),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancelCtx()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()

	// Start the browser and its tab on ctx itself: a step's bounded
	// context must not own (and, ending, close) them.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	n := 0
	shot := func(name string) {
		t.Helper()
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		n++
		p := filepath.Join(shots, fmt.Sprintf("%02d-%s.png", n, name))
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", p)
	}
	fail := func(step string, err error) {
		t.Helper()
		if buf, serr := chromedp.Run(ctx, chromedp.FullScreenshot(100)); serr == nil {
			p := filepath.Join(shots, "failed-"+step+".png")
			os.WriteFile(p, buf, 0o644)
			t.Logf("screenshot of the failure: %s", p)
		}
		page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('main').innerText`))
		t.Fatalf("%s: %v\npage:\n%s", step, err, page)
	}
	// do runs a step's actions, bounded: a selector that never shows up
	// fails the step instead of hanging the test.
	do := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 45*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			fail(step, err)
		}
	}
	// wait polls a JavaScript condition in the page until it holds.
	wait := func(what, js string, d time.Duration) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(d), chromedp.WithPollingInterval(200*time.Millisecond))); err != nil {
			fail(what, err)
		}
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	xp := func(s string) chromedp.Search { return chromedp.Search(s) }

	// Sign in: a wrong secret key is refused, the right one opens the app.
	do("open", chromedp.Navigate(h.dev.AdminURL+"/console/"), chromedp.WaitVisible(css("#ak")),
		chromedp.SendKeys(css("#ak"), rootAK), chromedp.SendKeys(css("#sk"), "wrong-secret"), chromedp.Click(css("#signin")))
	wait("the refusal of a wrong key", `document.querySelector('#login-error').textContent.includes('secret key')`, 10*time.Second)
	do("sign in", chromedp.Evaluate[chromedp.Void](`document.querySelector('#sk').value = ''`), chromedp.SendKeys(css("#sk"), rootSK), chromedp.Click(css("#signin")),
		chromedp.WaitVisible(css("#bucket-name")))
	shot("signed-in")
	// The session cookie is HttpOnly: page scripts cannot read it.
	if cookies, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`)); err != nil || strings.Contains(cookies, "dora_session") {
		t.Fatalf("document.cookie = %q, %v: the session cookie must be HttpOnly", cookies, err)
	}

	do("create a bucket", chromedp.SendKeys(css("#bucket-name"), "photos"), chromedp.Click(css("#bucket-create")),
		chromedp.WaitVisible(xp(`//a[text()="photos"]`)), chromedp.Click(xp(`//a[text()="photos"]`)),
		chromedp.WaitVisible(css("#upload-file")))
	do("upload", chromedp.SetUploadFiles(css("#upload-file"), []string{txt}), chromedp.Click(css("#upload")),
		chromedp.WaitVisible(xp(`//td[text()="hello.txt"]`)))
	wait("upload progress at 100%", `document.querySelector('#upload-progress').value === 100`, 10*time.Second)
	do("preview", chromedp.Click(xp(`//button[text()="Preview"]`)))
	wait("the preview", `(document.querySelector('#preview pre') || {textContent: ''}).textContent.includes('hello dora')`, 10*time.Second)
	shot("uploaded")

	do("register a ufop", chromedp.Click(css(`a[href="#/ufops"]`)), chromedp.WaitVisible(css("#ufop-name")),
		chromedp.SendKeys(css("#ufop-name"), "grepd"), chromedp.Click(css("#ufop-register")),
		chromedp.WaitVisible(xp(`//a[text()="grepd"]`)), chromedp.Click(xp(`//a[text()="grepd"]`)),
		chromedp.WaitVisible(css("#build-file")))
	do("build", chromedp.SetUploadFiles(css("#build-file"), []string{pkg}), chromedp.Click(css("#build")))
	wait("the live build log", `document.querySelector('#build-log').textContent.includes('go build')`, 2*time.Minute)
	wait("build 1 to succeed", `document.querySelector('#use-build-1') !== null`, 10*time.Minute)
	shot("built")
	do("use build 1", chromedp.Click(css("#use-build-1")))
	wait("release v1", `[...document.querySelectorAll('#deploy-version option')].some(o => o.value === 'v1')`, 20*time.Second)
	do("deploy", chromedp.SetValue(css("#deploy-version"), "v1"), chromedp.Click(css("#deploy")))
	wait("an instance RUNNING", `document.querySelector('[data-state="RUNNING"]') !== null`, 2*time.Minute)
	shot("running")
	do("follow the instance's log", chromedp.SetValue(css("#log-stream"), "stderr"), chromedp.Click(xp(`//button[text()="Follow log"]`)))
	wait("the instance's log", `document.querySelector('#instance-log').textContent.includes('listening')`, 20*time.Second)

	// Run a processing URL from the bucket page; the result shows in the
	// page, in an iframe on the bucket's host on the router.
	do("processing URL", chromedp.Click(css(`a[href="#/buckets"]`)), chromedp.WaitVisible(xp(`//a[text()="photos"]`)),
		chromedp.Click(xp(`//a[text()="photos"]`)), chromedp.WaitVisible(css("#fop")),
		chromedp.SetValue(css("#fop-key"), "hello.txt"), chromedp.SendKeys(css("#fop"), "grepd/dora"), chromedp.Click(css("#fop-run")))
	fopURL, err := chromedp.Run(ctx, chromedp.Text(css("#fop-url")))
	if err != nil {
		fail("processing URL", err)
	}
	u, err := url.Parse(fopURL)
	if err != nil || u.Hostname() != "photos.localhost" || u.RawQuery != "grepd/dora" {
		t.Fatalf("the console's processing URL %q", fopURL)
	}
	shown := iframeText(t, ctx, "photos.localhost", "bye dora")
	if !strings.Contains(shown, "hello dora") || strings.Contains(shown, "foo bar") {
		t.Fatalf("the processing result shows %q; want the lines with dora only", shown)
	}
	shot("processed")

	// Some traffic, then the chart of grepd's requests/s must show it.
	for i := 0; i < 20; i++ {
		code, body := h.get("photos.localhost", "/hello.txt?grepd/dora")
		if code != http.StatusOK || !strings.Contains(string(body), "hello dora") {
			t.Fatalf("router: %d %q", code, body)
		}
	}
	do("charts", chromedp.Click(css(`a[href="#/charts"]`)))
	wait("grepd's requests/s chart to move", `[...document.querySelectorAll('[data-ufop="grepd"][data-field="rps"] .now')].some(e => / max ([1-9]|0\.[0-9]*[1-9])/.test(e.textContent))`, 30*time.Second)
	wait("grepd's ready instances", `[...document.querySelectorAll('[data-ufop="grepd"][data-field="ready"] .now')].some(e => /now [1-9]/.test(e.textContent))`, 30*time.Second)
	shot("charts")

	// CSRF: a write with the session cookie but without the token is refused.
	status, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch('/v1/buckets', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({name: 'nocsrf'}), credentials: 'same-origin'}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || status != http.StatusForbidden {
		t.Fatalf("a write without the CSRF token: status %d, %v; want 403", status, err)
	}
}

// iframeText returns the text the page's iframe on host shows once it
// holds want. A cross-site iframe is a target of its own (site isolation);
// one in the page's process is read through the iframe's node.
func iframeText(t *testing.T, ctx context.Context, host, want string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		infos, err := chromedp.Targets(ctx)
		if err != nil {
			t.Fatalf("targets: %v", err)
		}
		for _, info := range infos {
			if info.Type == "iframe" && strings.Contains(info.URL, host) {
				fctx, cancel := chromedp.NewContext(ctx, chromedp.WithTargetID(info.TargetID), chromedp.WithDetachOnCancel())
				text, err := chromedp.Run(fctx, chromedp.Text(chromedp.CSS("body")))
				cancel()
				if err == nil {
					last = text
				}
			}
		}
		if !strings.Contains(last, want) {
			if nodes, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSS("#fop-result"))); err == nil && len(nodes) > 0 {
				if text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body"), chromedp.FromNode(nodes[0]))); err == nil {
					last = text
				}
			}
		}
		if strings.Contains(last, want) {
			return last
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("the iframe on %s never showed %q; last %q", host, want, last)
	return ""
}
