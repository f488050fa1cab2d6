// Package labdash holds the browser test of the lab's dashboard (make
// demo, cmd/halab): it runs the lab with the shop, drives the dashboard
// in Chromium with chromedp, and saves the README's screenshot. It is a
// module of its own so that chromedp stays out of hakit's dependencies.
//
// The test needs a few minutes (the shop's build and the lab's start), so
// it runs only when asked:
//
//	HALAB_E2E=1 go test -count=1 -v .          # the test
//	HALAB_SCREENSHOT=1 go test -count=1 -v .   # the test, saving docs/images/lab-dashboard.png
package labdash
