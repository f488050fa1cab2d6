// Command shopload runs scripted customers against a shop on this machine
// (browse, add to cart, check out, place the order) and prints a live line
// every interval: requests per second, success rate, p99 latency over the
// last 10 seconds, orders. It stops after -duration, or on SIGINT/SIGTERM,
// and prints a summary. The lab (make demo) runs it for its load command.
//
//	go run ./cmd/shopload -url http://127.0.0.1:8080 -customers 8 -rate 40
//
// It only loads loopback addresses.
package main

import (
	"context"
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
			fmt.Fprintln(out, liveLine(s.Sub(last), s, now.Sub(lastAt)))
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
