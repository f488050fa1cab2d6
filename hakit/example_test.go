package hakit_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/go-chi/chi/v5"

	"hakit.dev/hakit"
)

func Example() {
	app, err := hakit.New(context.Background(), hakit.Config{
		DrainDelay: 100 * time.Millisecond, // behind a real load balancer: its time to mark an instance down, 5s by default
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

// Routes that need another timeout or body limit than the app's say so
// with route middleware; other routes pay nothing for it.
func ExampleTimeout() {
	stack, err := hakit.Stack(hakit.StackConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		RequestTimeout: 30 * time.Second, MaxBodyBytes: 1 << 20})
	if err != nil {
		fmt.Println(err)
		return
	}
	show := func(w http.ResponseWriter, r *http.Request) {
		if d, ok := r.Context().Deadline(); ok {
			fmt.Println(r.URL.Path, "deadline in", time.Until(d).Round(time.Second))
		} else {
			fmt.Println(r.URL.Path, "no deadline")
		}
	}
	r := chi.NewRouter()
	r.Get("/page", show)
	r.With(hakit.Timeout(5*time.Minute)).Get("/report", show)
	// An upload: no deadline (the uploads package bounds it by its
	// progress) and a larger body limit.
	r.With(hakit.Timeout(-1), hakit.BodyLimit(5<<30)).Post("/upload", show)
	h := stack(r)
	for _, req := range []*http.Request{
		httptest.NewRequest("GET", "/page", nil),
		httptest.NewRequest("GET", "/report", nil),
		httptest.NewRequest("POST", "/upload", nil),
	} {
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	// Output:
	// /page deadline in 30s
	// /report deadline in 5m0s
	// /upload no deadline
}
