// Command bench runs hakit's benchmarks against real services and prints
// their results as METRIC name=value lines (for ../shared/targets/check and
// CI logs) after a human-readable table.
//
//	go run ./bench SUITE [SUITE…]
//	go run ./bench -list
//
// Each suite runs hakit and, where there is one, the baseline it must beat
// side by side in the same run, so the two numbers come from the same
// machine under the same load.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
)

// suite is one benchmark suite.
type suite struct {
	about string
	run   func(ctx context.Context, r *report) error
}

// report collects a suite's results.
type report struct {
	rows    [][]string // human-readable table
	metrics []string   // METRIC lines, in order
}

// row adds a line to the human-readable table.
func (r *report) row(cells ...string) { r.rows = append(r.rows, cells) }

// metric records a METRIC line. Values are formatted with %v, so pass
// numbers already rounded as they should be shown.
func (r *report) metric(name string, value any) {
	r.metrics = append(r.metrics, fmt.Sprintf("METRIC %s=%v", name, value))
}

func (r *report) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, row := range r.rows {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
	for _, m := range r.metrics {
		fmt.Fprintln(w, m)
	}
}

func main() {
	if os.Getenv(envUploadsChild) == "1" {
		err := uploadsChild() // serves until the suite kills it
		fmt.Fprintln(os.Stderr, "bench: upload server:", err)
		os.Exit(1)
	}
	if kind := os.Getenv(envHTTPServer); kind != "" {
		err := httpServerChild(kind) // serves until its standard input closes
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: http server:", err)
			os.Exit(1)
		}
		return
	}
	suites := map[string]suite{
		"harness":  {about: "start-up and failover times of the hatest services", run: harness},
		"dbrouter": {about: "dbrouter read overhead, failover write gap and losses, read-your-writes", run: dbrouterSuite},
		"http":     {about: "rolling restart behind HAProxy, middleware overhead, /readyz latency", run: httpSuite},
		"session":  {about: "lost updates vs plain scs, cost per request, logins across a Sentinel failover", run: sessionSuite},
		"jobs":     {about: "outbox across a relay kill and a Redis failover, latency, throughput, periodic duplicates", run: jobsSuite},
		"uploads":  {about: "1 GiB through the upload handler: peak RSS and speed against the SDK; orphan parts after aborts", run: uploadsSuite},
		"app":      {about: "a whole page (session, replica read with read-your-writes, template) on hakit.App vs chi + scs + pgxpool by hand", run: appSuite},
		"scale":    {about: "past one machine: Redis Cluster sessions and outbox across a master's loss, failovers behind PgBouncer and Patroni's HAProxy, instances per primary, Redis bytes per session", run: scaleSuite},
		"schema":   {about: "rolling deploy v1 → v2 with a schema change on 1 M rows under load: failed requests, longest write stall, safe vs naive", run: schemaSuite},
		"shop":     {about: "the shop example: chaos run under a customer load (lost/duplicate orders and mails, oversold units, failed requests), product pages", run: shopSuite},
		"sso":      {about: "the SSO example: chaos run under a login load (lost accounts, failed logins), code replay race, token endpoint p99, logins/s with production argon2id", run: ssoSuite},
	}
	list := flag.Bool("list", false, "list the suites and exit")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go run ./bench [-list] SUITE [SUITE…]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	names := slices.Sorted(maps.Keys(suites))
	if *list {
		for _, n := range names {
			fmt.Printf("%-10s %s\n", n, suites[n].about)
		}
		return
	}
	if flag.NArg() == 0 {
		flag.Usage()
		fmt.Fprintf(os.Stderr, "suites: %s\n", strings.Join(names, ", "))
		os.Exit(2)
	}
	for _, name := range flag.Args() {
		if _, ok := suites[name]; !ok {
			fmt.Fprintf(os.Stderr, "bench: unknown suite %q (suites: %s)\n", name, strings.Join(names, ", "))
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	failed := false
	for _, name := range flag.Args() {
		fmt.Printf("== suite %s: %s\n", name, suites[name].about)
		r := &report{}
		err := suites[name].run(ctx, r)
		r.print(os.Stdout)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: suite %s: %v\n", name, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}
