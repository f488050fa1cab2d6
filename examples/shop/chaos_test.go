package main

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"hakit.dev/examples/shop/customer"
	"hakit.dev/examples/shop/customer/lab"
)

// TestChaos runs three shop instances behind HAProxy on Patroni, Redis
// with Sentinels, MinIO and Mailpit, with scripted customers shopping the
// whole time, and breaks one thing after another: a rolling restart, kill
// -9 of an instance, the PostgreSQL leader, the Redis master, MinIO.
// After each: no acknowledged order missing or doubled, no stock
// oversold, one mail per order, no cart lost.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the chaos run takes about 2 minutes")
	}
	l := startLab(t, lab.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	res, err := l.Chaos(ctx, lab.ChaosOptions{
		Load: customer.Config{Customers: 6, Rate: 40, Duration: 3 * time.Minute, MaxRequests: 20_000,
			// A lost cart is logged with what the customer believed and
			// what the shop showed, and when: the test's log has it.
			Logger: slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))},
	})
	for _, s := range res.Steps {
		t.Logf("%s (%s): load %s", s.Step, s.Took.Round(100*time.Millisecond), s.Load)
		if s.Window.Requests > 0 {
			t.Logf("%s failover window: %s", s.Step, s.Window)
		}
		if !s.Report.OK() {
			t.Errorf("after %s: %s", s.Step, s.Report)
		}
		// A lost cart is one the customer held after every change it
		// made succeeded; a customer whose cart change failed (a killed
		// instance's in-flight request) starts over and loses nothing
		// it believed it had.
		if s.Load.CartLost != 0 {
			t.Errorf("after %s: %d carts lost", s.Step, s.Load.CartLost)
		}
		switch s.Step {
		case lab.RollingRestart:
			if s.Load.Failed != 0 {
				t.Errorf("rolling restart: %d of %d customer requests failed: %v", s.Load.Failed, s.Load.Requests, s.Load.Errors)
			}
		case lab.MinIODown:
			m := s.MinIO
			if m == nil {
				t.Errorf("minio-down: nothing checked")
				continue
			}
			t.Logf("minio down: product page %d, image %d (id %d), upload %d; image after restart %d (%s later)", m.ProductPage, m.Image, m.ImageID, m.Upload, m.ImageAfter, m.ImageBack.Round(10*time.Millisecond))
			if m.ProductPage != http.StatusOK {
				t.Errorf("MinIO down: product page answered %d, want 200", m.ProductPage)
			}
			if m.ImageID != 0 && (m.Image == http.StatusOK || m.Image == 0) {
				t.Errorf("MinIO down: image answered %d, want a degraded answer (not 200, not a failed request)", m.Image)
			}
			if m.Upload != http.StatusServiceUnavailable {
				t.Errorf("MinIO down: admin upload answered %d, want 503", m.Upload)
			}
			if m.ImageID != 0 && m.ImageAfter != http.StatusOK {
				t.Errorf("MinIO back: image answered %d, want 200", m.ImageAfter)
			}
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("whole run: %s", res.Load)
	t.Logf("final check: %s", res.Final)
	if !res.Final.OK() {
		t.Errorf("final check: %s", res.Final)
	}
	if res.Final.Acknowledged < len(res.Steps) {
		t.Errorf("only %d orders acknowledged over %d steps: the load did not shop", res.Final.Acknowledged, len(res.Steps))
	}
	if res.Load.SuccessPct() < 90 {
		t.Errorf("only %.1f%% of customer requests succeeded over the run", res.Load.SuccessPct())
	}
}

// testLog writes each line it is given to the test's log.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
