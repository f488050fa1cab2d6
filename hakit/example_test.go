package hakit_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"hakit.dev/hakit"
)

func Example() {
	app, err := hakit.New(context.Background(), hakit.Config{
		DrainDelay: 100 * time.Millisecond, // behind a real load balancer: its inter x fall, 5s by default
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		NoSignals:  true, // the example stops through its context
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	app.Router().Get("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from", hakit.ClientIP(r.Context()))
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- app.Serve(ctx, ln) }()

	base := "http://" + ln.Addr().String()
	for app.Health().State().String() != "ready" {
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Get(base + "/hello")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(string(body))

	stop() // as SIGTERM does: /readyz turns 503, then the server drains
	fmt.Println("drained:", <-done == nil)
	// Output:
	// hello from 127.0.0.1
	// drained: true
}
