package browser

import (
	"net/url"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestConsoleRouterScheme: the processing URLs the bucket page shows and
// loads take the scheme of the session's routerURL (the admin's
// configured router URL). With an https router they were still http://,
// which a console served over https may not load (mixed content). The
// dev platform's router is plain HTTP, so the case sets the signed-in
// session's routerURL as an https deployment's admin would send it.
func TestConsoleRouterScheme(t *testing.T) {
	ctx := newTab(t)
	signIn(t, ctx)
	eval[chromedp.Void](t, ctx, `state.session.routerURL = "https://router.example.com:8443"; location.hash = "#/bucket/photos"`)
	do(t, ctx, "run a processing URL", chromedp.WaitVisible(chromedp.CSS("#fop-key")),
		chromedp.SetValue(chromedp.CSS("#fop-key"), "a b.txt"), chromedp.SetValue(chromedp.CSS("#fop"), "qhash/md5"), chromedp.Click(chromedp.CSS("#fop-run")))
	waitFor(t, ctx, "the processing URL", `document.querySelector('#fop-url').textContent !== ''`)
	shown := eval[string](t, ctx, `document.querySelector('#fop-url').textContent`)
	u, err := url.Parse(shown)
	if err != nil || u.Scheme != "https" || u.Host != "photos.localhost:8443" || u.EscapedPath() != "/a%20b.txt" || u.RawQuery != "qhash/md5" {
		t.Errorf("the processing URL shown is %q; want https://photos.localhost:8443/a%%20b.txt?qhash/md5", shown)
	}
	if link := eval[string](t, ctx, `document.querySelector('#fop-open').href`); link != shown {
		t.Errorf("the link to open it is %q; want %q", link, shown)
	}
	if src := eval[string](t, ctx, `document.querySelector('#fop-result').src`); src != shown {
		t.Errorf("the result frame loads %q; want %q", src, shown)
	}
	if served := eval[string](t, ctx, `[...document.querySelectorAll('code')].map(c => c.textContent).find(s => s.endsWith('<key>')) || ''`); served != "https://photos.localhost:8443/<key>" {
		t.Errorf("the page says the bucket is served at %q; want https://photos.localhost:8443/<key>", served)
	}
}
