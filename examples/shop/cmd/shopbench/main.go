// Command shopbench measures the shop in the lab and prints METRIC lines:
// a chaos run (rolling restart, kill -9 of an instance, PostgreSQL leader
// and Redis master failovers, MinIO down) under a scripted-customer load,
// then product pages through HAProxy with three instances. The root
// module's benchmark runner (go run ./bench shop) runs it and passes its
// METRIC lines through, since the root module cannot import the shop's.
//
//	cd examples/shop && go run ./cmd/shopbench
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"hakit.dev/examples/shop/customer"
	"hakit.dev/examples/shop/customer/lab"
	"hakit.dev/hatest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir := flag.String("shop", ".", "the shop module's directory (its main package is built)")
	verbose := flag.Bool("v", false, "show the lab's progress and the instances' output")
	pageRate := flag.Int("page-rate", 100, "requests per second of the fixed-rate product-page run")
	flag.Parse()
	if err := run(ctx, *dir, *pageRate, *verbose, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "shopbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir string, pageRate int, verbose bool, out io.Writer) error {
	if pageRate < 1 || pageRate > 2000 {
		return fmt.Errorf("-page-rate %d: want 1 to 2000", pageRate)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	tmp, err := os.MkdirTemp("", "shopbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin, err := hatest.BuildApp(ctx, dir, tmp)
	if err != nil {
		return err
	}
	opts := lab.Options{ShopBin: bin}
	if verbose {
		logger := log.New(os.Stderr, "", log.Ltime)
		opts.Logf = logger.Printf
		opts.Output = os.Stderr
	}
	l, err := lab.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer l.Close()

	res, err := l.Chaos(ctx, lab.ChaosOptions{
		Load: customer.Config{Customers: 8, Rate: 60, Duration: 5 * time.Minute, MaxRequests: 100_000},
	})
	if err != nil {
		return err
	}
	ids, err := l.ProductIDs(ctx)
	if err != nil {
		return err
	}
	// Throughput: 16 clients as fast as the shop answers; latency at a
	// fixed rate well below it.
	through, err := lab.ProductPages(ctx, l.URL, ids, 16, 0, 10*time.Second)
	if err != nil {
		return err
	}
	fixed, err := lab.ProductPages(ctx, l.URL, ids, 64, pageRate, 10*time.Second)
	if err != nil {
		return err
	}

	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "step\ttook\tcustomer requests\tfailed\torders\tcheck")
	var rolling, failover *lab.StepResult
	for i, s := range res.Steps {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", s.Step, s.Took.Round(100*time.Millisecond), s.Load.Requests, s.Load.Failed, s.Load.Orders, okText(s.Report.OK()))
		switch s.Step {
		case lab.RollingRestart:
			rolling = &res.Steps[i]
		case lab.PGFailover:
			failover = &res.Steps[i]
		}
	}
	fmt.Fprintf(tw, "whole run\t\t%d\t%d\t%d\t%s\n", res.Load.Requests, res.Load.Failed, res.Load.Orders, okText(res.Final.OK()))
	fmt.Fprintf(tw, "product pages, 16 clients\t%s\t%d\t%d\t\t%.0f/s, p99 %s\n", through.Took.Round(100*time.Millisecond), through.Requests, through.Failed, through.RPS, through.P99.Round(100*time.Microsecond))
	fmt.Fprintf(tw, "product pages, %d/s\t%s\t%d\t%d\t\tp50 %s, p99 %s\n", pageRate, fixed.Took.Round(100*time.Millisecond), fixed.Requests, fixed.Failed, fixed.P50.Round(100*time.Microsecond), fixed.P99.Round(100*time.Microsecond))
	tw.Flush()
	for _, s := range res.Steps {
		if s.Load.Failed > 0 {
			fmt.Fprintf(out, "%s: %s\n", s.Step, s.Load)
		}
		if s.Window.Requests > 0 {
			fmt.Fprintf(out, "%s, failover window: %s\n", s.Step, s.Window)
		}
	}
	fmt.Fprintf(out, "final check: %s\n", res.Final)

	fmt.Fprintf(out, "METRIC shop_orders_lost=%d\n", res.Final.Lost)
	fmt.Fprintf(out, "METRIC shop_duplicate_orders=%d\n", res.Final.Duplicates)
	fmt.Fprintf(out, "METRIC shop_duplicate_mails=%d\n", res.Final.DuplicateMails)
	fmt.Fprintf(out, "METRIC shop_oversold_units=%d\n", res.Final.Oversold)
	if rolling != nil {
		fmt.Fprintf(out, "METRIC shop_rolling_restart_failed_requests=%d\n", rolling.Load.Failed)
	}
	if failover != nil {
		fmt.Fprintf(out, "METRIC shop_failover_error_pct=%.2f\n", 100-failover.Window.SuccessPct())
	}
	fmt.Fprintf(out, "METRIC shop_product_page_rps=%.0f\n", through.RPS)
	fmt.Fprintf(out, "METRIC shop_product_page_p99_ms=%.1f\n", float64(fixed.P99.Microseconds())/1000)
	return nil
}

func okText(ok bool) string {
	if ok {
		return "ok"
	}
	return "FAILED"
}
