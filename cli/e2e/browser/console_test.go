package browser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/doraproject/dora/admin/client"
	"github.com/doraproject/dora/cli/platform/platformtest"
)

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

// routerGet fetches a processing URL through the router with the bucket's
// Host header.
func routerGet(ctx context.Context, host, pathQuery string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, dev.RouterURL+pathQuery, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// TestConsoleInBrowser drives the web console in a real headless Chromium
// against the embedded platform: sign in, create a bucket, upload, register
// a ufop, build it from a program package, deploy it, watch the instance
// go RUNNING and healthy and follow its log, run a processing URL, submit
// a pfop job and follow it to success, and see the chart of requests/s
// move. Screenshots of each step are saved and
// logged.
//
// Every wait is on something the page or the platform shows (an element,
// a state, a text), bounded only by the test's own deadline: on a loaded
// machine the build (a Go build as nobody into a fresh cache) alone can
// take minutes, and nothing here asserts how long a step takes.
func TestConsoleInBrowser(t *testing.T) {
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
	if err := client.WriteTarGz(context.Background(), f, filepath.Join(platformtest.RepoRoot(t), "examples", "grepd")); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// The whole test runs under the test binary's deadline (go test
	// -timeout), less a minute to report a failure with its screenshot.
	deadline := time.Now().Add(30 * time.Minute)
	if d, ok := t.Deadline(); ok {
		deadline = d.Add(-time.Minute)
	}
	// bctx is the test's tab; ctx bounds the steps on it.
	bctx := newTab(t)
	ctx, cancel := context.WithDeadline(bctx, deadline)
	defer cancel()

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
	// fail reports a step that did not happen, with a screenshot and the
	// page's text (taken on the browser's own context: ctx may be over).
	fail := func(step string, err error) {
		t.Helper()
		fctx, cancel := context.WithTimeout(bctx, time.Minute)
		defer cancel()
		if buf, serr := chromedp.Run(fctx, chromedp.FullScreenshot(100)); serr == nil {
			p := filepath.Join(shots, "failed-"+strings.ReplaceAll(step, " ", "-")+".png")
			os.WriteFile(p, buf, 0o644)
			t.Logf("screenshot of the failure: %s", p)
		}
		page, _ := chromedp.Run(fctx, chromedp.Evaluate[string](`document.querySelector('main').innerText`))
		t.Fatalf("%s: %v\npage:\n%s", step, err, page)
	}
	// do runs a step's actions; a selector that never shows up fails the
	// step at the test's deadline instead of hanging it.
	do := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			fail(step, err)
		}
	}
	// wait polls a JavaScript condition in the page until it holds.
	wait := func(what, js string) {
		t.Helper()
		start := time.Now()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(time.Until(deadline)), chromedp.WithPollingInterval(250*time.Millisecond))); err != nil {
			fail(what, err)
		}
		t.Logf("%s: after %v", what, time.Since(start).Round(100*time.Millisecond))
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	xp := func(s string) chromedp.Search { return chromedp.Search(s) }

	// Sign in: a wrong secret key is refused, the right one opens the app.
	do("open", chromedp.Navigate(dev.AdminURL+"/console/"), chromedp.WaitVisible(css("#ak")),
		chromedp.SendKeys(css("#ak"), rootAK), chromedp.SendKeys(css("#sk"), "wrong-secret"), chromedp.Click(css("#signin")))
	wait("the refusal of a wrong key", `document.querySelector('#login-error').textContent.includes('secret key')`)
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
	wait("upload progress at 100%", `document.querySelector('#upload-progress').value === 100`)
	do("preview", chromedp.Click(xp(`//button[text()="Preview"]`)))
	wait("the preview", `(document.querySelector('#preview pre') || {textContent: ''}).textContent.includes('hello dora')`)
	shot("uploaded")

	do("register a ufop", chromedp.Click(css(`a[href="#/ufops"]`)), chromedp.WaitVisible(css("#ufop-name")),
		chromedp.SendKeys(css("#ufop-name"), "grepd"), chromedp.Click(css("#ufop-register")),
		chromedp.WaitVisible(xp(`//a[text()="grepd"]`)), chromedp.Click(xp(`//a[text()="grepd"]`)),
		chromedp.WaitVisible(css("#build-file")))
	do("build", chromedp.SetUploadFiles(css("#build-file"), []string{pkg}), chromedp.Click(css("#build")))
	wait("the live build log", `document.querySelector('#build-log').textContent.includes('go build')`)
	wait("build 1 to end", `[...document.querySelectorAll('td span')].some(s => /^(SUCCESS|FAILED)$/.test(s.textContent))`)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelector('#use-build-1') !== null`, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		fail("build 1 to succeed", err)
	}
	shot("built")
	// The builds table is drawn again when the build's log ends and by the
	// page's 2 s refresh while a build was going, so the button can be
	// replaced right after it appears: a click through a node id found
	// before then fails ("Could not find node with given id", seen in CI);
	// the page finds and clicks it in one step.
	do("use build 1", chromedp.Evaluate[chromedp.Void](`document.querySelector('#use-build-1').click()`))
	wait("release v1", `[...document.querySelectorAll('#deploy-version option')].some(o => o.value === 'v1')`)
	do("deploy", chromedp.SetValue(css("#deploy-version"), "v1"), chromedp.Click(css("#deploy")))
	// The instance must be RUNNING and pass its health check: only then
	// does the router send it calls without holding them.
	wait("an instance RUNNING and healthy", `document.querySelector('[data-state="RUNNING"][data-healthy="true"]') !== null`)
	shot("running")
	do("follow the instance's log", chromedp.SetValue(css("#log-stream"), "stderr"), chromedp.Click(xp(`//button[text()="Follow log"]`)))
	wait("the instance's log", `document.querySelector('#instance-log').textContent.includes('listening')`)
	// A follow that fails (here its request) says so in the page's error
	// line; it was dropped silently, leaving the log pane empty.
	blockURLs(t, ctx, "*://*:*/v1/ufops/*/instances/*/logs?*")
	do("follow a log that cannot be read", chromedp.Click(xp(`//button[text()="Follow log"]`)))
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`[...document.querySelectorAll('#view .error')].some(e => e.textContent.includes('instance log'))`, chromedp.WithPollingTimeout(time.Minute))); err != nil {
		fail("the instance log's error", err)
	}
	blockURLs(t, ctx)

	// Run a processing URL from the bucket page; the result shows in the
	// page, in an iframe on the bucket's host on the router.
	do("processing URL", chromedp.Click(css(`a[href="#/buckets"]`)), chromedp.WaitVisible(xp(`//a[text()="photos"]`)),
		chromedp.Click(xp(`//a[text()="photos"]`)), chromedp.WaitVisible(css("#fop")),
		chromedp.SetValue(css("#fop-key"), "hello.txt"), chromedp.SendKeys(css("#fop"), "grepd/dora"))
	shown := runProcessingURL(t, ctx, fail)
	if !strings.Contains(shown, "hello dora") || strings.Contains(shown, "foo bar") {
		t.Fatalf("the processing result shows %q; want the lines with dora only", shown)
	}
	fopURL, err := chromedp.Run(ctx, chromedp.Text(css("#fop-url")))
	if err != nil {
		fail("processing URL", err)
	}
	if u, err := url.Parse(fopURL); err != nil || u.Hostname() != "photos.localhost" || u.RawQuery != "grepd/dora" {
		t.Fatalf("the console's processing URL %q", fopURL)
	}
	shot("processed")

	// Submit a pfop job from the console and follow it to its end.
	do("pfop page", chromedp.Click(css(`a[href="#/pfop"]`)), chromedp.WaitVisible(css("#pfop-bucket")),
		chromedp.SendKeys(css("#pfop-bucket"), "photos"), chromedp.SendKeys(css("#pfop-key"), "hello.txt"),
		chromedp.SendKeys(css("#pfop-fops"), "grepd/dora;qhash/md5"), chromedp.SendKeys(css("#pfop-pipeline"), "console"),
		chromedp.Click(css("#pfop-submit")))
	wait("the pfop job to end", `['0', '3', '4'].includes((document.querySelector('#pfop-job-status') || {dataset: {}}).dataset.code)`)
	job, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#pfop-job').innerText`))
	if err != nil {
		fail("read the pfop job", err)
	}
	if code, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#pfop-job-status').dataset.code`)); code != "0" ||
		!strings.Contains(job, "grepd/dora") || !strings.Contains(job, "qhash/md5") || !strings.Contains(job, "pipeline console") {
		fail("the pfop job", fmt.Errorf("code %s, the page shows:\n%s", code, job))
	}
	shot("pfop")
	// The help names the command as code, not between literal backticks.
	if help, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#pfop-follow-help').innerHTML`)); err != nil ||
		!strings.Contains(help, "<code>qdoractl pfop</code>") || strings.Contains(help, "`") {
		fail("the pfop page's help", fmt.Errorf("%q, %v", help, err))
	}
	// A failed lookup shows its error alone: the previous job's table goes.
	do("pfop lookup of an unknown job", chromedp.SetValue(css("#pfop-id"), "no-such-job"), chromedp.Click(css("#pfop-lookup")))
	wait("the unknown job's error without the previous job",
		`document.querySelector('#pfop-job').childElementCount === 0 && [...document.querySelectorAll('.error[role=alert]')].some(e => e.textContent !== '')`)

	// Some traffic, then the chart of grepd's requests/s must show it.
	for i := 0; i < 20; i++ {
		code, body, err := routerGet(ctx, "photos.localhost", "/hello.txt?grepd/dora")
		if err != nil || code != http.StatusOK || !strings.Contains(body, "hello dora") {
			t.Fatalf("router: %d %q %v", code, body, err)
		}
	}
	do("charts", chromedp.Click(css(`a[href="#/charts"]`)))
	wait("grepd's requests/s chart to move", `[...document.querySelectorAll('[data-ufop="grepd"][data-field="rps"] .now')].some(e => / max ([1-9]|0\.[0-9]*[1-9])/.test(e.textContent))`)
	wait("grepd's ready instances", `[...document.querySelectorAll('[data-ufop="grepd"][data-field="ready"] .now')].some(e => /now [1-9]/.test(e.textContent))`)
	shot("charts")

	// CSRF: a write with the session cookie but without the token is refused.
	status, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch('/v1/buckets', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({name: 'nocsrf'}), credentials: 'same-origin'}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || status != http.StatusForbidden {
		t.Fatalf("a write without the CSRF token: status %d, %v; want 403", status, err)
	}
}

// runProcessingURL clicks Run on the bucket page and returns the text
// the result iframe shows. It waits for the console to say the frame
// loaded, then reads the frame. An answer without the result (the router
// answers 503 when its hold for an instance ends first) is logged and
// run again, as a user would, until the test's deadline.
func runProcessingURL(t *testing.T, ctx context.Context, fail func(string, error)) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		start := time.Now()
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#fop-run"))); err != nil {
			fail("run the processing URL", err)
		}
		js := fmt.Sprintf(`document.querySelector('#fop-status').dataset.state === 'loaded' && document.querySelector('#fop-result').dataset.run === '%d'`, attempt)
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(250*time.Millisecond))); err != nil {
			fail("the processing result to load", err)
		}
		text, err := frameText(ctx, "photos.localhost")
		if err != nil {
			fail("read the processing result", err)
		}
		t.Logf("processing URL, run %d: the frame loaded after %v and shows %q", attempt, time.Since(start).Round(100*time.Millisecond), text)
		if strings.Contains(text, "bye dora") {
			return text
		}
		if ctx.Err() != nil {
			fail("the processing result", fmt.Errorf("last shown %q", text))
		}
	}
}

// frameText reads the body text of the page's iframe on host. A
// cross-site iframe is a target of its own (site isolation); one rendered
// in the page's process is read through the iframe's node. It retries
// until the frame's document is there or ctx ends.
func frameText(ctx context.Context, host string) (string, error) {
	var lastErr error = errors.New("no iframe on " + host)
	for {
		infos, err := chromedp.Targets(ctx)
		if err != nil {
			return "", fmt.Errorf("targets: %w (before: %v)", err, lastErr)
		}
		for _, info := range infos {
			if info.Type != "iframe" || !strings.Contains(info.URL, host) {
				continue
			}
			// Bounded: a target attached before its document is there
			// may never report one, and a query on it waits for ever
			// (the old test's Text(body) hung so until its deadline).
			actx, acancel := context.WithTimeout(ctx, 10*time.Second)
			fctx, cancel := chromedp.NewContext(actx, chromedp.WithTargetID(info.TargetID), chromedp.WithDetachOnCancel())
			text, err := chromedp.Run(fctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ''`))
			cancel()
			acancel()
			if err == nil && text != "" {
				return text, nil
			}
			lastErr = fmt.Errorf("iframe target %s: %q, %v", info.URL, text, err)
		}
		if nodes, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSS("#fop-result"), chromedp.AtLeast(0))); err == nil && len(nodes) > 0 {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			text, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS("body"), chromedp.FromNode(nodes[0])))
			cancel()
			if err == nil && text != "" {
				return text, nil
			}
			lastErr = fmt.Errorf("iframe node: %q, %v", text, err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w: %v", ctx.Err(), lastErr)
		case <-time.After(300 * time.Millisecond):
		}
	}
}
