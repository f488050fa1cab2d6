package health_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"hakit.dev/health"
)

func Example() {
	checker := health.New(health.Options{Logger: quiet()})
	checker.Add(health.Check{
		Name: "postgres",
		Func: func(ctx context.Context) error { return nil }, // e.g. pool.Ping(ctx)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go checker.Run(ctx)

	mux := http.NewServeMux()
	mux.Handle("GET /livez", checker.Livez())
	mux.Handle("GET /readyz", checker.Readyz())

	probe := func() {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		fmt.Print(rec.Code, " ", rec.Body.String())
	}
	probe()            // migrations, warm-up…
	checker.SetReady() // …done
	probe()
	checker.SetDraining() // SIGTERM: the load balancer takes us out
	probe()
	// Output:
	// 503 starting
	// 200 ok
	// 503 draining
}
