package lab

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"time"

	"hakit.dev/examples/shop/customer"
)

// Step is one way the lab breaks the shop.
type Step string

// The chaos steps, in the order Chaos runs them by default.
const (
	// RollingRestart SIGTERMs and restarts every instance in turn.
	RollingRestart Step = "rolling-restart"
	// KillInstance kill -9s one instance, then starts it again.
	KillInstance Step = "kill-instance"
	// PGFailover kill -9s the Patroni leader's machine; Patroni promotes
	// the replica. The old leader is started again and rejoins.
	PGFailover Step = "pg-failover"
	// RedisFailover kill -9s the Redis master; the Sentinels promote the
	// replica. The old master is started again as a replica.
	RedisFailover Step = "redis-failover"
	// MinIODown kills MinIO, checks the shop degrades as it should
	// (product pages 200, image route not 200, admin upload 503) and
	// starts MinIO again.
	MinIODown Step = "minio-down"
)

// Steps lists every step in its default order.
func Steps() []Step {
	return []Step{RollingRestart, KillInstance, PGFailover, RedisFailover, MinIODown}
}

// ChaosOptions shape a chaos run.
type ChaosOptions struct {
	// Load is the customer load that runs the whole time; BaseURL is set
	// to the lab's. Its Duration must cover the run: Chaos stops it when
	// the steps are done.
	Load customer.Config
	// Steps are run in order. Defaults to Steps().
	Steps []Step
	// Settle is the load seen before the first step and after each.
	// Defaults to 2s.
	Settle time.Duration
	// MailWait bounds each check's wait for the outbox. Defaults to 60s.
	MailWait time.Duration
	// Restock adds this many units to every product with at least 10 in
	// stock before the load, so the run keeps selling; the few scarce
	// products still sell out. Defaults to 300; negative: none.
	Restock int
}

// StepResult is what one step did and what was checked after it.
type StepResult struct {
	Step Step
	Took time.Duration
	// Load is what the customers saw from the step's start until its
	// check (the step, then Settle).
	Load customer.Stats
	// Window is what the customers saw from the kill until the service
	// was back (the new leader or master, plus 2 s): PGFailover and
	// RedisFailover only.
	Window customer.Stats
	// Report is the check after the step: every order so far.
	Report Report
	// MinIO holds the degraded answers seen while MinIO was down
	// (MinIODown only).
	MinIO *MinIOCheck
}

// MinIOCheck is what the shop answered while MinIO was down, and after it
// came back. A status of 0 means the request failed.
type MinIOCheck struct {
	ProductPage int   // GET /products/{id}: want 200
	Image       int   // GET /images/{id}/small: want other than 200 (or 0 without images)
	Upload      int   // POST /admin/products/{id}/image: want 503
	ImageAfter  int   // the image once MinIO is back (asked again for up to 20 s): want 200 (or 0 without images)
	ImageID     int64 // the image asked for, 0 when no product has one
	// ImageBack is how long after MinIO's restart the image was served
	// again (or the 20 s given up after).
	ImageBack time.Duration
}

// ChaosResult is a whole chaos run.
type ChaosResult struct {
	Steps []StepResult
	// Load is the whole run's counters.
	Load customer.Stats
	// Final is the check after the load stopped.
	Final Report
}

// Chaos runs the customer load through HAProxy and the steps one after
// another, checking after each that no acknowledged order is missing or
// doubled, no stock oversold and every order mailed once. It returns what
// it measured up to the first error.
func (l *Lab) Chaos(ctx context.Context, opts ChaosOptions) (res ChaosResult, err error) {
	if len(opts.Steps) == 0 {
		opts.Steps = Steps()
	}
	if opts.Settle == 0 {
		opts.Settle = 2 * time.Second
	}
	if opts.MailWait == 0 {
		opts.MailWait = time.Minute
	}
	for _, s := range opts.Steps {
		if !validStep(s) {
			return res, fmt.Errorf("lab: unknown chaos step %q", s)
		}
	}
	if opts.Restock == 0 {
		opts.Restock = 300
	}
	if opts.Restock > 0 {
		if err := l.restock(ctx, opts.Restock); err != nil {
			return res, err
		}
	}
	stock, err := l.Stock(ctx)
	if err != nil {
		return res, err
	}
	opts.Load.BaseURL = l.URL
	load, err := customer.Start(ctx, opts.Load)
	if err != nil {
		return res, err
	}
	defer func() {
		res.Load = load.Stop()
		if err != nil {
			return
		}
		var ferr error
		res.Final, ferr = l.Verify(ctx, Expect{Orders: load.Orders(), Submitted: load.Submitted(), Stock: stock, MailWait: opts.MailWait, Final: true})
		err = ferr
		l.opts.Logf("lab: final: %s", res.Final)
	}()
	if err := sleep(ctx, opts.Settle); err != nil {
		return res, err
	}
	for _, s := range opts.Steps {
		select {
		case <-load.Done():
			return res, fmt.Errorf("lab: the load ended before step %s: raise Load.Duration", s)
		default:
		}
		t0 := time.Now()
		before := load.Stats()
		sr := StepResult{Step: s}
		l.opts.Logf("lab: step %s", s)
		if err := l.step(ctx, s, load, &sr); err != nil {
			res.Steps = append(res.Steps, sr)
			return res, fmt.Errorf("lab: step %s: %w", s, err)
		}
		if err := sleep(ctx, opts.Settle); err != nil {
			return res, err
		}
		sr.Load = load.Stats().Sub(before)
		sr.Took = time.Since(t0)
		sr.Report, err = l.Verify(ctx, Expect{Orders: load.Orders(), Submitted: load.Submitted(), Stock: stock, MailWait: opts.MailWait})
		res.Steps = append(res.Steps, sr)
		if err != nil {
			return res, err
		}
		l.opts.Logf("lab: after %s (%s): load %s; check: %s", s, sr.Took.Round(100*time.Millisecond), sr.Load, sr.Report)
	}
	return res, nil
}

// restock adds n units to every product with at least 10 in stock.
func (l *Lab) restock(ctx context.Context, n int) error {
	conn, err := l.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE products SET stock = stock + $1 WHERE stock >= 10`, n); err != nil {
		return fmt.Errorf("lab: restock: %w", err)
	}
	return nil
}

func validStep(s Step) bool {
	for _, x := range Steps() {
		if s == x {
			return true
		}
	}
	return false
}

func (l *Lab) step(ctx context.Context, s Step, load *customer.Load, sr *StepResult) error {
	switch s {
	case RollingRestart:
		return l.RollingRestart(ctx)
	case KillInstance:
		// HAProxy marks it down after its checks fail; then it comes back.
		i := len(l.Instances) / 2
		if err := l.KillInstance(ctx, i); err != nil {
			return err
		}
		return l.StartInstance(ctx, i)
	case PGFailover, RedisFailover:
		// The window: from the kill until the new leader or master has
		// served for 2 s, while the old one is still down.
		before := load.Stats()
		window := func() error {
			if err := sleep(ctx, 2*time.Second); err != nil {
				return err
			}
			sr.Window = load.Stats().Sub(before)
			return nil
		}
		failover := l.FailoverRedis
		if s == PGFailover {
			failover = l.FailoverPostgres
		}
		_, err := failover(ctx, window)
		return err
	case MinIODown:
		c, err := l.minioDown(ctx)
		sr.MinIO = &c
		return err
	}
	return fmt.Errorf("unknown step %q", s)
}

// minioDown kills MinIO, asks the shop for a product page, an image and
// an upload, starts MinIO again and asks for the image once more.
func (l *Lab) minioDown(ctx context.Context) (MinIOCheck, error) {
	var c MinIOCheck
	conn, err := l.connect(ctx)
	if err != nil {
		return c, err
	}
	var productID int64
	var imageID *int64
	err = conn.QueryRow(ctx, `SELECT id, image_id FROM products WHERE active ORDER BY image_id IS NULL, id LIMIT 1`).Scan(&productID, &imageID)
	conn.Close(ctx)
	if err != nil {
		return c, fmt.Errorf("pick a product: %w", err)
	}
	if imageID != nil {
		c.ImageID = *imageID
	}
	admin, err := l.adminClient(ctx)
	if err != nil {
		return c, err
	}
	if err := l.MinIO.Kill(); err != nil {
		return c, err
	}
	c.ProductPage = status(ctx, http.DefaultClient, http.MethodGet, l.URL+"/products/"+strconv.FormatInt(productID, 10), nil, "")
	if c.ImageID != 0 {
		c.Image = status(ctx, http.DefaultClient, http.MethodGet, fmt.Sprintf("%s/images/%d/small", l.URL, c.ImageID), nil, "")
	}
	body, ctype, err := pngUpload()
	if err != nil {
		return c, err
	}
	c.Upload = status(ctx, admin, http.MethodPost, fmt.Sprintf("%s/admin/products/%d/image", l.URL, productID), body, ctype)
	if err := l.MinIO.Restart(ctx); err != nil {
		return c, err
	}
	if c.ImageID != 0 {
		// The shop's S3 client may need a moment to reconnect: ask until
		// the image is back or 20 s have passed.
		t0 := time.Now()
		for {
			c.ImageAfter = status(ctx, http.DefaultClient, http.MethodGet, fmt.Sprintf("%s/images/%d/small", l.URL, c.ImageID), nil, "")
			if c.ImageAfter == http.StatusOK || time.Since(t0) > 20*time.Second {
				break
			}
			if err := sleep(ctx, 250*time.Millisecond); err != nil {
				return c, err
			}
		}
		c.ImageBack = time.Since(t0)
	}
	return c, nil
}

// adminClient returns a client logged in as the lab's admin.
func (l *Lab) adminClient(ctx context.Context) (*http.Client, error) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 15 * time.Second}
	form := url.Values{"email": {l.opts.AdminEmail}, "password": {l.opts.AdminPassword}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.URL+"/login", bytes.NewBufferString(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin login: %w", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || bytes.Contains(b, []byte(`data-page="login"`)) {
		return nil, fmt.Errorf("admin login: status %d, page %.200q", resp.StatusCode, b)
	}
	return c, nil
}

// status sends one request and returns its status code, 0 when it failed.
func status(ctx context.Context, c *http.Client, method, u string, body io.Reader, ctype string) int {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return 0
	}
	req.Header.Set("Accept", "text/html")
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// pngUpload is a multipart body with a small PNG in the field "image".
func pngUpload() (io.Reader, string, error) {
	img := image.NewRGBA(image.Rect(0, 0, 32, 32))
	for i := range img.Pix {
		img.Pix[i] = byte(i)
	}
	img.Set(0, 0, color.White)
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	part, err := w.CreateFormFile("image", "lab.png")
	if err != nil {
		return nil, "", err
	}
	if err := png.Encode(part, img); err != nil {
		return nil, "", err
	}
	if err := w.Close(); err != nil {
		return nil, "", err
	}
	return &b, w.FormDataContentType(), nil
}
