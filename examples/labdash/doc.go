// Package labdash holds the browser test of the lab's dashboard (make
// demo, cmd/halab): it runs the lab with the shop and the SSO provider,
// drives the dashboard in Chromium with chromedp through a PostgreSQL
// failover and a rolling restart of each app, and saves screenshots. It
// is a module of its own so that chromedp stays out of hakit's
// dependencies. It runs in make test:
//
//	go test -count=1 -v .                      # the test; screenshots in its artifact directory
//	go test -count=1 -v -artifacts .           # keeps them (go help testflag)
//	HALAB_SCREENSHOT=1 go test -count=1 -v .   # also writes docs/images/lab-dashboard.png
package labdash
