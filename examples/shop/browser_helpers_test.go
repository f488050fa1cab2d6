package main

// Helpers of the browser test: one headless Chromium (Debian's) for the
// test binary, a tab per customer in a browser context of its own (its own
// cookies), steps with deadlines, and full-page screenshots — for the
// README when SHOP_SCREENSHOTS=1, and of every open tab when a test fails.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

const (
	// chromiumPath is Debian's Chromium (the chromium package).
	chromiumPath = "/usr/bin/chromium"
	// stepTimeout bounds each browser step (a navigation, a click and the
	// page it leads to).
	stepTimeout = 60 * time.Second
	// screenshotDir is where SHOP_SCREENSHOTS=1 saves the README's
	// screenshots, relative to the package.
	screenshotDir = "docs/screenshots"
)

// chromium is a headless Chromium started for a test; it stops when the
// test ends.
type chromium struct {
	ctx context.Context // the browser's chromedp context
}

// startChromium starts Chromium with the flags a closed network and a root
// user need (chromedp adds --no-sandbox as root).
func startChromium(t *testing.T) *chromium {
	t.Helper()
	path := chromiumPath
	if _, err := os.Stat(path); err != nil {
		p, lerr := exec.LookPath("chromium")
		if lerr != nil {
			t.Fatalf("Chromium is missing (%v): apt-get install -y chromium (make deps)", err)
		}
		path = p
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 800),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("lang", "en-US"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	// The first Do starts the browser, which lives as long as the context
	// of that Do: the test's, not one with a deadline.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return &chromium{ctx: bctx}
}

// tab is a customer's tab: a browser context of its own, so its own
// cookies and session.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string // the shop's URL
}

// newTab opens a tab in a fresh browser context with a 1280×800 viewport.
// It closes when the test ends; if the test failed, its page is saved as a
// screenshot first and the path logged.
func (c *chromium) newTab(t *testing.T, base, name string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(c.ctx, chromedp.WithNewBrowserContext())
	tb := &tab{t: t, ctx: ctx, base: base}
	t.Cleanup(cancel)
	t.Cleanup(func() { // runs before cancel
		if t.Failed() {
			tb.saveFailure(name)
		}
	})
	// As for the browser, the tab lives as long as its first Do's context.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatalf("new tab: %v", err)
	}
	return tb
}

// do runs steps within stepTimeout and fails the test if they fail.
func (tb *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.t.Fatalf("%s: %v (page %s)", what, err, tb.where())
	}
}

// value runs an action that returns a value, within stepTimeout.
func value[T any](tb *tab, what string, a chromedp.Action[T]) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		tb.t.Fatalf("%s: %v (page %s)", what, err, tb.where())
	}
	return v
}

// eval evaluates a JavaScript expression (awaiting a promise) and returns
// its value.
func evalJS[T any](tb *tab, what, js string) T {
	tb.t.Helper()
	return value(tb, what, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// waitJS waits until a JavaScript expression is true, within stepTimeout.
// It asks again when an evaluation fails, as it does while the page
// changes under it.
func (tb *tab) waitJS(what, js string) {
	tb.t.Helper()
	deadline := time.Now().Add(stepTimeout)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(tb.ctx, 5*time.Second)
		var ok bool
		ok, err = chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		cancel()
		if err == nil && ok {
			return
		}
		time.Sleep(50 * time.Millisecond) // polling the page, not synchronisation
	}
	tb.t.Fatalf("%s: not after %v (last error %v, page %s)", what, stepTimeout, err, tb.where())
}

// where is the tab's location, for failure messages.
func (tb *tab) where() string {
	ctx, cancel := context.WithTimeout(tb.ctx, 5*time.Second)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "unknown"
	}
	return loc
}

// open navigates to path and waits for the page named page.
func (tb *tab) open(path, page string) {
	tb.t.Helper()
	tb.do("open "+path, chromedp.Navigate(tb.base+path), waitPage(page))
}

// waitPage waits until the body's data-page is page.
func waitPage(page string) chromedp.Action[chromedp.Void] {
	return chromedp.WaitReady(chromedp.CSS(`body[data-page="` + page + `"]`))
}

// page is the current page's data-page.
func (tb *tab) page() string {
	tb.t.Helper()
	return evalJS[string](tb, "data-page", `document.body ? (document.body.dataset.page || "") : ""`)
}

// text is the visible text of the first node matching sel.
func (tb *tab) text(sel string) string {
	tb.t.Helper()
	return strings.Join(strings.Fields(value(tb, "text of "+sel, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))), " ")
}

// imagesLoaded makes every image of the page load now (not lazily when
// scrolled to) and waits until all have; it returns how many there are.
// An image that fails to load never gets a natural width, so the wait ends
// in a failure naming it.
func (tb *tab) imagesLoaded() int {
	tb.t.Helper()
	tb.do("load images", chromedp.Evaluate[chromedp.Void](`document.querySelectorAll('img[loading="lazy"]').forEach(i => i.loading = "eager")`))
	ctx, cancel := context.WithTimeout(tb.ctx, stepTimeout)
	defer cancel()
	// The count plus one, so that a page without images is truthy too.
	n, err := chromedp.Run(ctx, chromedp.Poll[int](
		`(() => { const imgs = [...document.images]; return imgs.every(i => i.complete && i.naturalWidth > 0) && imgs.length + 1 })()`,
		chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		broken := evalJS[[]string](tb, "broken images", `[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)`)
		tb.t.Fatalf("images of %s not loaded: %v (not loaded: %v)", tb.where(), err, broken)
	}
	return n - 1
}

// screenshot saves a full-page screenshot as name.png in the README's
// directory when SHOP_SCREENSHOTS=1; otherwise it does nothing.
func (tb *tab) screenshot(name string) {
	tb.t.Helper()
	if os.Getenv("SHOP_SCREENSHOTS") != "1" {
		return
	}
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		tb.t.Fatal(err)
	}
	tb.imagesLoaded()
	png := value(tb, "screenshot "+name, chromedp.FullScreenshot(100))
	path := filepath.Join(screenshotDir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
	tb.t.Logf("screenshot %s (%d KB)", path, len(png)/1024)
}

// saveFailure saves a full-page screenshot and the HTML of the tab's page
// in failureDir and logs where.
func (tb *tab) saveFailure(name string) {
	dir, err := failureDir(tb.t)
	if err != nil {
		tb.t.Logf("no directory for the failure screenshot: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Logf("failure screenshot of %s: %v", name, err)
		return
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.t.Logf("failure screenshot: %v", err)
		return
	}
	if html, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`)); err == nil {
		_ = os.WriteFile(filepath.Join(dir, name+".html"), []byte(html), 0o644)
	}
	tb.t.Logf("the %s tab at %s when the test failed: %s (and .html)", name, tb.where(), path)
}

// failureDir is the test's artifact directory with go test -artifacts,
// otherwise a directory under the system temp directory that the test
// leaves behind, so the screenshots outlive the run.
func failureDir(t *testing.T) (string, error) {
	if f := flag.Lookup("test.artifacts"); f != nil && f.Value.String() == "true" {
		return t.ArtifactDir(), nil
	}
	return os.MkdirTemp("", fmt.Sprintf("shop-%s-*", strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())))
}
