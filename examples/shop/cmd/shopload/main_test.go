package main

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"hakit.dev/examples/shop/customer"
)

func TestRunRefusesBadInput(t *testing.T) {
	cases := map[string][]string{
		"not an http(s) URL":            {"-url", "nowhere"},
		"not on loopback":               {"-url", "http://example.com"},
		"-interval 0s":                  {"-url", "http://127.0.0.1:1", "-interval", "0"},
		"Rate 5000":                     {"-url", "http://127.0.0.1:1", "-rate", "5000"},
		"flag provided but not defined": {"-bogus"},
	}
	for want, args := range cases {
		err := run(context.Background(), args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("run(%q) = %v; want an error with %q", args, err, want)
		}
	}
}

func TestLiveLine(t *testing.T) {
	d := customer.Stats{Requests: 100, Failed: 1}
	total := customer.Stats{Requests: 500, Failed: 3, Orders: 12, SoldOut: 2, P99: 45 * time.Millisecond}
	got := liveLine(d, total, 2*time.Second)
	for _, want := range []string{"50.0 req/s", "99.00% ok", "p99 45ms", "12 orders", "2 sold out", "3 failed"} {
		if !strings.Contains(got, want) {
			t.Errorf("live line %q lacks %q", got, want)
		}
	}
}

func TestSampleJSON(t *testing.T) {
	d := customer.Stats{Requests: 100, Failed: 1}
	total := customer.Stats{Requests: 500, Failed: 3, Orders: 12, P50: 4 * time.Millisecond, P99: 45500 * time.Microsecond}
	b, err := json.Marshal(newSample(d, total, 2*time.Second, time.Unix(1, 0)))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"rps": 50, "ok_pct": 99, "p50_ms": 4, "p99_ms": 45.5, "orders": 12, "all_failed": 3, "requests": 100}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v; want %v (%s)", k, got[k], v, b)
		}
	}
}
