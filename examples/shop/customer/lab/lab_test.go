package lab

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"hakit.dev/examples/shop/customer"
)

func TestStartRefusesBadOptions(t *testing.T) {
	cases := map[string]Options{
		"ShopBin is empty": {},
		"want at least 1":  {ShopBin: "/bin/true", Instances: -1},
		"PostgreSQL nodes": {ShopBin: "/bin/true", PGNodes: -2},
	}
	for want, o := range cases {
		if _, err := Start(context.Background(), o); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Start(%+v) = %v; want an error with %q", o, err, want)
		}
	}
}

func TestChaosRefusesUnknownStep(t *testing.T) {
	l := &Lab{}
	_, err := l.Chaos(context.Background(), ChaosOptions{Steps: []Step{RollingRestart, "unplug-the-moon"}})
	if err == nil || !strings.Contains(err.Error(), `unknown chaos step "unplug-the-moon"`) {
		t.Fatalf("Chaos with an unknown step = %v", err)
	}
}

func TestReport(t *testing.T) {
	var r Report
	if !r.OK() {
		t.Error("an empty report is not OK")
	}
	r.Orders, r.Acknowledged = 10, 9
	if !r.OK() {
		t.Error("orders and acknowledgements are not findings")
	}
	for i := range 30 {
		r.problem("finding %d", i)
	}
	r.DuplicateMails = 1
	if r.OK() || len(r.Problems) != 20 || !strings.Contains(r.String(), "1 duplicate mails") || !strings.Contains(r.String(), "finding 19") {
		t.Errorf("report with a duplicate mail: OK %v, %d problems, %s", r.OK(), len(r.Problems), r)
	}
}

func TestSameLines(t *testing.T) {
	believed := []customer.Line{{ProductID: 1, Qty: 2}, {ProductID: 5, Qty: 1}}
	if !sameLines(believed, map[int64]int{1: 2, 5: 1}) {
		t.Error("equal lines differ")
	}
	for _, got := range []map[int64]int{{1: 2}, {1: 2, 5: 2}, {1: 2, 5: 1, 7: 1}, {}} {
		if sameLines(believed, got) {
			t.Errorf("%v counts as the same as %v", got, believed)
		}
	}
}

func TestProductPages(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%10 == 0 {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		if !strings.HasPrefix(r.URL.Path, "/products/") {
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	for _, rate := range []int{0, 200} {
		res, err := ProductPages(ctx, srv.URL, []int64{1, 2, 3}, 4, rate, 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests == 0 || res.Failed == 0 || res.Failed > res.Requests/5 || res.RPS <= 0 || res.P99 < res.P50 {
			t.Errorf("rate %d: %s", rate, res)
		}
	}
	if _, err := ProductPages(ctx, srv.URL, nil, 4, 0, time.Second); err == nil {
		t.Error("no ids: no error")
	}
	if _, err := ProductPages(ctx, srv.URL, []int64{1}, 0, 0, time.Second); err == nil {
		t.Error("0 workers: no error")
	}
	if _, err := ProductPages(ctx, srv.URL, []int64{1}, 1, 0, time.Hour); err == nil {
		t.Error("an hour: no error")
	}
}
