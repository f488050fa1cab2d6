// Command shopload runs scripted customers against a shop on this machine
// (browse, add to cart, check out, place the order) and prints a live line
// every interval: requests per second, success rate, p99 latency over the
// last 10 seconds, orders; with -json, one JSON object per interval
// instead (see [sample]). It stops after -duration, or on SIGINT/SIGTERM,
// and prints a summary. The lab (make demo) runs it for its load command.
//
//	go run ./cmd/shopload -url http://127.0.0.1:8080 -customers 8 -rate 40
//
// It only loads loopback addresses.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"hakit.dev/examples/shop/customer"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "shopload:", err)
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("shopload", flag.ContinueOnError)
	var cfg customer.Config
	fs.StringVar(&cfg.BaseURL, "url", "", "the shop's URL (loopback only), e.g. HAProxy's")
	fs.IntVar(&cfg.Customers, "customers", 8, "customers shopping at once (at most 200)")
	fs.IntVar(&cfg.Rate, "rate", 40, "requests per second of the whole load (at most 2000)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Minute, "stop after this long (at most 1h)")
	interval := fs.Duration("interval", 2*time.Second, "how often to print the live line")
	asJSON := fs.Bool("json", false, "print each interval as one JSON object on a line instead of the live line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *interval <= 0 {
		return fmt.Errorf("-interval %s: want more than 0", *interval)
	}
	l, err := customer.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "load: %d customers at up to %d requests/s against %s for at most %s\n", cfg.Customers, cfg.Rate, cfg.BaseURL, cfg.Duration)
	t := time.NewTicker(*interval)
	defer t.Stop()
	last, lastAt := l.Stats(), time.Now()
	for {
		select {
		case <-t.C:
			s, now := l.Stats(), time.Now()
			if *asJSON {
				b, _ := json.Marshal(newSample(s.Sub(last), s, now.Sub(lastAt), now))
				fmt.Fprintf(out, "%s\n", b)
			} else {
				fmt.Fprintln(out, liveLine(s.Sub(last), s, now.Sub(lastAt)))
			}
			last, lastAt = s, now
			continue
		case <-ctx.Done():
		case <-l.Done():
		}
		break
	}
	s := l.Stop()
	fmt.Fprintf(out, "load: stopped: %s\n", s)
	return nil
}

// liveLine is one line of the live view: what the last interval saw, and
// the orders so far.
func liveLine(d, total customer.Stats, took time.Duration) string {
	rps := 0.0
	if took > 0 {
		rps = float64(d.Requests) / took.Seconds()
	}
	return fmt.Sprintf("load: %5.1f req/s  %6.2f%% ok  p99 %-6s  %d orders (%d sold out, %d failed requests)",
		rps, d.SuccessPct(), total.P99.Round(time.Millisecond), total.Orders, total.SoldOut, total.Failed)
}

// sample is one interval of the load as -json prints it: the interval's
// requests, failures, rate and success, the latency percentiles over the
// load's sliding window, and the totals so far.
type sample struct {
	Time      time.Time `json:"time"`
	Seconds   float64   `json:"seconds"` // the interval's length
	Requests  int       `json:"requests"`
	Failed    int       `json:"failed"`
	RPS       float64   `json:"rps"`
	OKPct     float64   `json:"ok_pct"`
	P50Ms     float64   `json:"p50_ms"`
	P99Ms     float64   `json:"p99_ms"`
	Orders    int       `json:"orders"`     // so far
	SoldOut   int       `json:"sold_out"`   // so far
	AllFailed int       `json:"all_failed"` // failed requests so far
}

func newSample(d, total customer.Stats, took time.Duration, now time.Time) sample {
	s := sample{Time: now.UTC(), Seconds: took.Seconds(), Requests: d.Requests, Failed: d.Failed,
		OKPct: d.SuccessPct(), P50Ms: ms(total.P50), P99Ms: ms(total.P99),
		Orders: total.Orders, SoldOut: total.SoldOut, AllFailed: total.Failed}
	if took > 0 {
		s.RPS = float64(d.Requests) / took.Seconds()
	}
	return s
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
