package browser

import (
	"context"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// blockURLs makes the tab's requests to URLs matching the patterns
// (URLPattern syntax) fail as a network error does; none unblocks.
func blockURLs(t *testing.T, ctx context.Context, patterns ...string) {
	t.Helper()
	ps := []*network.BlockPattern{}
	for _, p := range patterns {
		ps = append(ps, &network.BlockPattern{URLPattern: p, Block: true})
	}
	err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, network.SetBlockedURLs, network.SetBlockedURLsParams{URLPatterns: ps})
		return err
	}))
	if err != nil {
		t.Fatalf("block %q: %v", patterns, err)
	}
}

// TestConsoleSignInNetworkError: a sign-in whose request fails on the
// network (the admin down, a proxy gone) says so under the form; it
// showed nothing (an unhandled rejection) and left the form as it was.
func TestConsoleSignInNetworkError(t *testing.T) {
	ctx := newTab(t)
	blockURLs(t, ctx, "*://*:*/console/login")
	do(t, ctx, "sign in", chromedp.Navigate(dev.AdminURL+"/console/"), chromedp.WaitVisible(chromedp.CSS("#ak")),
		chromedp.SendKeys(chromedp.CSS("#ak"), rootAK), chromedp.SendKeys(chromedp.CSS("#sk"), rootSK), chromedp.Click(chromedp.CSS("#signin")))
	waitFor(t, ctx, "the sign-in's network error", `document.querySelector('#login-error').textContent.includes('cannot reach')`)
	if eval[bool](t, ctx, `document.querySelector('#login').hidden`) {
		t.Error("the sign-in form is hidden after a failed sign-in")
	}
	// The error goes when a sign-in gets through.
	blockURLs(t, ctx)
	do(t, ctx, "sign in again", chromedp.Click(chromedp.CSS("#signin")), chromedp.WaitVisible(chromedp.CSS("#bucket-name")))
	if msg := eval[string](t, ctx, `document.querySelector('#login-error').textContent`); msg != "" {
		t.Errorf("after signing in, the sign-in error still says %q", msg)
	}
}

// TestConsoleRegionsError: the ufop page whose /v1/regions request fails
// shows the error in its error line and the rest of the page; the
// failure escaped the page (an unhandled rejection), which showed no
// error and stopped before loading the ufop's details.
func TestConsoleRegionsError(t *testing.T) {
	ctx := newTab(t)
	signIn(t, ctx)
	eval[chromedp.Void](t, ctx, `api("POST", "/v1/ufops", {name: "regionsfail", mode: "private", desc: ""})`)
	blockURLs(t, ctx, "*://*:*/v1/regions")
	eval[chromedp.Void](t, ctx, `location.hash = "#/ufop/regionsfail"`)
	waitFor(t, ctx, "the regions' error", `[...document.querySelectorAll('#view .error')].some(e => e.textContent.includes('regions'))`)
	waitFor(t, ctx, "the ufop's details", `document.querySelector('#ufop-info').textContent.includes('Mode private')`)
}

// TestConsoleBadAddress: a console address that is not valid
// percent-encoding (#/bucket/%E0%A4%A, a truncated link) shows an error
// page; decodeURIComponent threw in the hashchange handler and the page
// stayed as it was.
func TestConsoleBadAddress(t *testing.T) {
	ctx := newTab(t)
	signIn(t, ctx)
	eval[chromedp.Void](t, ctx, `location.hash = "#/bucket/%E0%A4%A"`)
	waitFor(t, ctx, "the bad address's error", `[...document.querySelectorAll('#view .error')].some(e => e.textContent.includes('#/bucket/%E0%A4%A'))`)
	if eval[bool](t, ctx, `document.querySelector('#bucket-name') !== null`) {
		t.Error("the buckets page is still shown")
	}
	// A good address after it opens its page.
	eval[chromedp.Void](t, ctx, `location.hash = "#/ufops"`)
	waitFor(t, ctx, "the ufops page", `document.querySelector('#ufop-name') !== null`)
}

// TestConsoleSignOutNetworkError: a sign-out whose request fails (the
// admin unreachable, or its store: the session may still be alive
// elsewhere) shows the sign-in screen with a warning saying so; it showed
// the sign-in screen as if all went well.
func TestConsoleSignOutNetworkError(t *testing.T) {
	ctx := newTab(t)
	signIn(t, ctx)
	blockURLs(t, ctx, "*://*:*/console/logout")
	do(t, ctx, "sign out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#ak")))
	waitFor(t, ctx, "the sign-out's warning", `document.querySelector('#login-error').textContent.includes('could not end the session')`)
	blockURLs(t, ctx)
}
