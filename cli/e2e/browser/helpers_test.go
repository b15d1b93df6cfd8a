package browser

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// stepTimeout bounds a step of a focused case (generous: a loaded
// machine), so that a page that never shows what a case waits for fails
// the case instead of holding the package until its deadline.
const stepTimeout = time.Minute

// do runs actions on the tab ctx, bounded by stepTimeout.
func do(t *testing.T, ctx context.Context, step string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v\npage:\n%s", step, err, pageText(ctx))
	}
}

// pageText is the text of the console's main element, for a failure.
func pageText(ctx context.Context) string {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	page, _ := chromedp.Run(pctx, chromedp.Evaluate[string](`document.querySelector('main') ? document.querySelector('main').innerText : ''`))
	return page
}

// signIn opens the console on the tab ctx and signs in as root.
func signIn(t *testing.T, ctx context.Context) {
	t.Helper()
	do(t, ctx, "sign in", chromedp.Navigate(dev.AdminURL+"/console/"), chromedp.WaitVisible(chromedp.CSS("#ak")),
		chromedp.SendKeys(chromedp.CSS("#ak"), rootAK), chromedp.SendKeys(chromedp.CSS("#sk"), rootSK), chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#bucket-name")))
}

// waitFor polls a JavaScript condition in the page until it holds, for
// at most stepTimeout.
func waitFor(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(stepTimeout), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		t.Fatalf("%s: %v\npage:\n%s", what, err, pageText(ctx))
	}
}

// eval runs a JavaScript expression in the page, awaiting a promise.
func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}
